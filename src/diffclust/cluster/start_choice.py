"""Which partition a fit keeps when its training moved far from the partition it started from.

Training is meant to refine a start, not to replace it: when the final clusters agree with the
start on fewer than ``1 - margin`` of the rows (the two partitions matched one to one), the one
whose clusters follow the data's neighbourhoods better is kept. "Better" is the modularity of
the k-nearest-neighbour graph (Newman's, for a directed graph): the share of neighbour links
inside clusters minus the share expected from the clusters' sizes alone. It reads no label,
and the size term keeps it from rewarding one giant cluster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from diffclust.cluster.metrics import hungarian_accuracy

logger = logging.getLogger(__name__)

#: neighbours per row of the graph that judges a start against the trained clusters
CHECK_NEIGHBOURS = 10


def knn_modularity(neighbours: np.ndarray, labels: np.ndarray) -> float:
    """Modularity of the directed kNN graph (row i -> each of its neighbours) under `labels`:
    within-cluster share of the N*k links minus sum over clusters of (its share of the rows'
    out-links) x (its share of the in-links)."""
    neighbours = np.asarray(neighbours)
    labels = np.asarray(labels)
    links = neighbours.size
    within = float((labels[neighbours] == labels[:, None]).sum()) / links
    n_clusters = int(labels.max()) + 1
    out_share = np.bincount(labels, minlength=n_clusters) * neighbours.shape[1] / links
    in_share = np.bincount(labels[neighbours].ravel(), minlength=n_clusters) / links
    return within - float(out_share @ in_share)


@dataclass
class StartChoice:
    """What was kept ("trained" or "start"), how much the two agree, and, when they were
    compared, each one's kNN modularity."""

    kept: str
    agreement: float
    modularity: dict[str, float] | None = None

    def record(self) -> dict:
        """The fields a run's metrics log and run.json carry."""
        row = {"kept_partition": self.kept, "agreement_with_start": round(self.agreement, 4)}
        if self.modularity is not None:
            row.update({f"knn_modularity_{name}": round(value, 4) for name, value in self.modularity.items()})
        return row


def choose_against_start(neighbours: np.ndarray, start: np.ndarray, trained: np.ndarray, margin: float) -> StartChoice:
    """Keep `trained` unless it agrees with `start` on fewer than 1 - `margin` of the rows and
    the start's kNN modularity is higher; the log says which and why."""
    agreement = float(hungarian_accuracy(start, trained))
    if agreement >= 1 - margin:
        logger.info("The final clusters keep %.1f%% of the rows in their start cluster.", 100 * agreement)
        return StartChoice("trained", agreement)
    modularity = {"start": knn_modularity(neighbours, start), "trained": knn_modularity(neighbours, trained)}
    kept, other = ("start", "trained") if modularity["start"] > modularity["trained"] else ("trained", "start")
    logger.warning(
        "Training moved %.1f%% of the rows out of their start cluster (more than the margin of %.0f%%). Kept the %s partition: its "
        "clusters follow the nearest-neighbour graph better (kNN modularity %.3f, against %.3f for the %s one; no label read).",
        100 * (1 - agreement), 100 * margin, kept, modularity[kept], modularity[other], other)
    return StartChoice(kept, agreement, modularity)


def neighbour_share(neighbours: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each row, the share of its nearest neighbours in its own cluster: a confidence for a
    partition that has no probabilities (a kept start)."""
    labels = np.asarray(labels)
    return (labels[np.asarray(neighbours)] == labels[:, None]).mean(axis=1)


def margin_problems(margin) -> list[str]:
    """The settings error of a start margin outside [0, 1] (a list, empty when it is fine)."""
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin <= 1:
        return [f"start_margin (--start-margin) must be a share in [0, 1] (1: always the trained partition), got {margin!r}"]
    return []


def warn_if_start_kept(kept: str | None, agreement: float | None, assigner: str) -> None:
    """Say, when predicting, that new rows are not assigned the way the fitted rows were: the fit
    kept its start partition, which exists only for the rows it was fitted on."""
    if kept == "start":
        logger.warning("This model kept its start partition for the rows it was fitted on (its training moved away from it); "
                       "new rows are assigned by its %s, which agreed with that partition on %.1f%% of those rows.",
                       assigner, 100 * (agreement or 0.0))
