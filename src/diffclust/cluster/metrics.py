"""Clustering scores against ground truth: Hungarian ACC, many-to-one ACC, NMI, ARI.

Labels are used only to report; no method in diffclust trains on them. NMI (arithmetic
normalisation) and ARI are the closed forms over the contingency table that scikit-learn
computes (the tests check them against it); they are written out here so that
`diffclust evaluate` scores a CSV without importing scikit-learn (half a second of its time).
The matching behind ACC is scipy's Hungarian solver.
"""

from __future__ import annotations

import numpy as np


def _as_label_arrays(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-d and of equal length, got {y_true.shape} and {y_pred.shape}")
    if y_true.size == 0:
        raise ValueError("Cannot score an empty clustering.")
    return y_true, y_pred


def contingency_table(y_pred, y_true) -> np.ndarray:
    """Counts (clusters x classes): how many items of each class each cluster holds."""
    clusters, cluster_index = np.unique(y_pred, return_inverse=True)
    classes, class_index = np.unique(y_true, return_inverse=True)
    counts = np.bincount(cluster_index.ravel() * len(classes) + class_index.ravel(), minlength=len(clusters) * len(classes))
    return counts.reshape(len(clusters), len(classes))


def _hungarian(counts: np.ndarray) -> float:
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / counts.sum())


def _many_to_one(counts: np.ndarray) -> float:
    return float(counts.max(axis=1).sum() / counts.sum())


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _nmi(counts: np.ndarray) -> float:
    counts = counts.astype(np.float64)
    if counts.shape[0] == counts.shape[1] == 1:
        return 1.0
    total = counts.sum()
    rows, cols = counts.sum(axis=1, keepdims=True), counts.sum(axis=0, keepdims=True)
    nonzero = counts > 0
    mutual = float((counts[nonzero] / total * np.log(counts[nonzero] * total / (rows @ cols)[nonzero])).sum())
    if mutual <= 0:
        return 0.0
    return mutual / max((_entropy(rows.ravel()) + _entropy(cols.ravel())) / 2, np.finfo(np.float64).eps)


def _ari(counts: np.ndarray) -> float:
    counts = counts.astype(np.float64)
    pairs = lambda values: float((values * (values - 1)).sum() / 2)  # noqa: E731 - pairs within each group
    both = pairs(counts)
    cluster_only, class_only = pairs(counts.sum(axis=1)) - both, pairs(counts.sum(axis=0)) - both
    neither = pairs(np.array([counts.sum()])) - both - cluster_only - class_only
    if cluster_only == class_only == 0:  # the same pairs together in both (identical, or both trivial)
        return 1.0
    return 2 * (both * neither - cluster_only * class_only) / ((both + class_only) * (class_only + neither)
                                                                + (both + cluster_only) * (cluster_only + neither))


def _table(y_true, y_pred) -> np.ndarray:
    """The checked labellings' contingency table (clusters x classes)."""
    y_true, y_pred = _as_label_arrays(y_true, y_pred)
    return contingency_table(y_pred, y_true)


def hungarian_accuracy(y_true, y_pred) -> float:
    """ACC under the best one-to-one matching of clusters to classes (scipy's Hungarian solver)."""
    return _hungarian(_table(y_true, y_pred))


def many_to_one_accuracy(y_true, y_pred) -> float:
    """ACC when each cluster is mapped to its majority class (for over-clustering, K > classes)."""
    return _many_to_one(_table(y_true, y_pred))


def normalized_mutual_information(y_true, y_pred) -> float:
    """NMI with the arithmetic mean of the two entropies (scikit-learn's default); 1 when
    neither labelling splits the data, 0 when they share no information."""
    return _nmi(_table(y_true, y_pred))


def adjusted_rand_index(y_true, y_pred) -> float:
    """ARI: agreement on pairs of items, 0 for chance and 1 for identical partitions (from the
    pair confusion counts, as scikit-learn computes it)."""
    return _ari(_table(y_true, y_pred))


def clustering_scores(y_true, y_pred) -> dict[str, float]:
    """All scores at once, as a flat dict (acc, acc_many_to_one, nmi, ari), from one contingency table."""
    counts = _table(y_true, y_pred)
    return {"acc": _hungarian(counts), "acc_many_to_one": _many_to_one(counts), "nmi": _nmi(counts), "ari": _ari(counts)}
