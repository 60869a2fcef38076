"""What refining CLUDI's consensus start can add, without the teacher-student (issue 29).

CLUDI's training adds about nothing to its start on in50-vits-dev. This probe asks where a gain
could come from, with cheap label-free refinements of the same start partition:

* self-labelling (as in SCAN; CLUDI's own step, diffclust.cluster.self_labelling): a logistic
  regression trained on the start's *sure* rows, those whose cluster at least half of their 10
  nearest neighbours share, then applied to all; and the same with each cluster's sure rows
  weighing one in all (SCAN's class balance; it also regularises more: a loser on USPS, not adopted);
* self-labelling repeated: each round's partition gives the next round its sure rows (three
  rounds; a loser: it compounds the first round's errors on overlapping groups);
* a size prior on top: the regression's probabilities transported (Sinkhorn) to equal cluster
  sizes, or to the start's sizes;
* a different consensus: spectral clustering of the co-association matrix (the share of the
  start's candidates that put two rows together) instead of the median candidate;
* equal sizes alone: the rows' Gaussian log-likelihood under the start's centroids (pooled
  variance), transported to equal sizes.

Sets: `in50` (1,250 balanced rows, K = 50), `in50-imbalanced` (the same features with class j
cut to 8-25 rows; three seeded draws), `blobs` (imbalanced Gaussian blobs, K = 10, as cludi_quality.py; and blobs of 50 to 1,000 rows),
and `overlapping Gaussians` (20 groups in 64-d that overlap, equal or unequal sizes, three draws each:
a start with merged and split groups, as hard real data gives). Labels only score.

    python benchmarks/cludi_start_refinement.py --in50 ../shared/data/in50-vits-dev \\
        --out benchmarks/results/cludi_quality/start-refinement
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from scipy.special import logsumexp  # noqa: E402
from sklearn.cluster import SpectralClustering  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cludi_quality import load_set  # noqa: E402

from diffclust.cluster.consensus import candidate_partitions, median_partition  # noqa: E402
from diffclust.cluster.metrics import hungarian_accuracy  # noqa: E402
from diffclust.cluster.neighbours import nearest_neighbours  # noqa: E402
from diffclust.cluster.self_labelling import NEIGHBOURS, fit_self_labeller, size_offsets, sure_rows  # noqa: E402

from provenance import save_results  # noqa: E402

#: rounds of the repeated self-labelling
REPEATS = 3

ROWS = ("consensus start", "self-labelling (diffclust.cluster.self_labelling)", "self-labelling, each cluster's sure rows weighing one in all",
        f"self-labelling repeated ({REPEATS} rounds)", "self-labelling + equal sizes", "self-labelling + the start's sizes", "start centroids + equal sizes",
        "co-association consensus (in place of the median)")


def imbalanced_subset(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class j (of K, in label order) keeps round(25 x (0.3 + 0.7 j / (K - 1))) of its rows: 8 to 25."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), int(round(25 * (0.3 + 0.7 * j / (len(classes) - 1)))),
                                              replace=False) for j, c in enumerate(classes)]))
    return features[keep], labels[keep]


def overlapping_gaussians(sizes: str, draw: int, groups: int = 20, dims: int = 64, rows: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """`groups` Gaussian groups whose centres lie 0.22 x N(0, I) apart and whose spreads differ
    (0.7-1.3 x 3 / sqrt(dims) per dimension), so neighbouring groups overlap; `sizes` "equal", or
    "unequal" (0.3-1.7 x the mean size, drawn)."""
    rng = np.random.default_rng(100 + draw)
    counts = np.full(groups, rows // groups) if sizes == "equal" else np.round(rows / groups * rng.uniform(0.3, 1.7, groups)).astype(int)
    labels = np.repeat(np.arange(groups), counts)
    centres = 0.22 * rng.normal(size=(groups, dims))
    spread = rng.uniform(0.7, 1.3, groups) * 3 / np.sqrt(dims)
    return (centres[labels] + rng.normal(size=(len(labels), dims)) * spread[labels, None]).astype(np.float32), labels


def skewed_blobs() -> tuple[np.ndarray, np.ndarray]:
    """Ten Gaussian blobs in 64-d as the `blobs` set, but of 50 to 1,000 rows (geometric steps)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), np.round(np.geomspace(50, 1000, 10)).astype(int))
    return (rng.normal(size=(10, 64))[labels] * 0.6 + rng.normal(size=(len(labels), 64))).astype(np.float32), labels


def cluster_weighted_self_labelling(features: np.ndarray, start: np.ndarray, sure: np.ndarray, seed: int) -> np.ndarray:
    """Self-labelling with each cluster's `sure` rows weighing one in all (1 / their count each),
    so the sure rows' counts set no prior and the fit is regularised per cluster, not per row."""
    from sklearn.linear_model import LogisticRegression

    weights = 1.0 / np.bincount(start[sure])[start[sure]]
    return LogisticRegression(max_iter=1000, random_state=seed).fit(features[sure], start[sure], sample_weight=weights).predict(features)


def repeated_self_labelling(features: np.ndarray, start: np.ndarray, k: int, seed: int, neighbour_table: np.ndarray) -> np.ndarray:
    """REPEATS rounds of self-labelling, each trained on the sure rows of the round before; a
    round the linearity test skips keeps its partition."""
    labels = start
    for _ in range(REPEATS):
        labeller = fit_self_labeller(features, labels, k, seed, neighbour_table)[0]
        labels = labels if labeller is None else labeller.predict(features)[0]
    return labels


def transport(log_probabilities: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """The assignment transported (Sinkhorn) to the clusters' `shares` of the rows."""
    return (log_probabilities - size_offsets(log_probabilities, shares)).argmax(axis=1)


def refinements(features: np.ndarray, k: int, seed: int) -> dict[str, np.ndarray]:
    features = (features - features.mean(axis=0)) / (features - features.mean(axis=0)).std()  # as CLUDI scales them
    candidates = candidate_partitions(features, k, seed)
    start = median_partition(candidates).labels
    joined = np.mean([labels[:, None] == labels[None, :] for labels in candidates.values()], axis=0)  # N x N: small sets only
    co_association = SpectralClustering(k, affinity="precomputed", random_state=seed).fit_predict(joined)
    neighbour_table = nearest_neighbours(features, NEIGHBOURS, metric="euclidean")  # one search for both self-labellings
    labeller = fit_self_labeller(features, start, k, seed, neighbour_table)[0]
    if labeller is None:  # skipped (clusters not linear in the features): the start stands, for both
        log_probabilities, weighted = np.log(np.eye(k)[start] + 1e-9), start
    else:
        log_probabilities = np.log(np.maximum(labeller.probabilities(features), 1e-300))
        weighted = cluster_weighted_self_labelling(features, start, sure_rows(start, neighbour_table), seed)
    equal, start_shares = np.full(k, 1.0 / k), np.bincount(start, minlength=k) / len(start)
    centroids = np.stack([features[start == c].mean(axis=0) for c in range(k)])
    squared = ((features[:, None, :] - centroids[None]) ** 2).sum(axis=2)
    variance = squared[np.arange(len(features)), start].mean() / features.shape[1]  # pooled, per dimension
    similarity = -squared / (2 * variance)  # an isotropic Gaussian's log-likelihood
    repeated = repeated_self_labelling(features, start, k, seed, neighbour_table)
    return dict(zip(ROWS, (start, log_probabilities.argmax(axis=1), weighted, repeated,
                           transport(log_probabilities, equal),
                           transport(log_probabilities, np.maximum(start_shares, 1e-6)),
                           transport(similarity - logsumexp(similarity, axis=1, keepdims=True), equal), co_association)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in50", type=Path, required=True, help="the in50-vits-dev folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--imbalanced-draws", default="0,1,2", help="seeds of the imbalanced subsets of in50 and of the overlapping Gaussians")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    _, in50, in50_labels = load_set(f"in50={args.in50}")
    sets = {"in50 (balanced, 1,250 x 384, K = 50)": (in50, in50_labels),
            **{f"in50-imbalanced, draw {draw} (8-25 rows per class)": imbalanced_subset(in50, in50_labels, draw)
               for draw in map(int, args.imbalanced_draws.split(","))},
            "blobs (imbalanced, 2,000 x 64, K = 10)": load_set("blobs")[1:],
            "blobs of 50 to 1,000 rows (3,405 x 64, K = 10)": skewed_blobs(),
            **{f"overlapping Gaussians, {sizes} sizes, draw {draw} ({'' if sizes == 'equal' else '~'}1,500 x 64, K = 20)": overlapping_gaussians(sizes, draw)
               for sizes in ("equal", "unequal") for draw in map(int, args.imbalanced_draws.split(","))}}
    results = {}
    for name, (features, labels) in sets.items():
        k = len(np.unique(labels))
        runs = [refinements(features, k, seed) for seed in seeds]
        results[name] = {row: [100 * hungarian_accuracy(labels, run[row]) for run in runs] for row in ROWS}
        print(name, {row: [round(v, 2) for v in values] for row, values in results[name].items()}, flush=True)
    lines = ["# Refining CLUDI's consensus start without the teacher-student", "",
             f"`python benchmarks/cludi_start_refinement.py` (seeds {args.seeds}; labels only score). ACC %, mean ± sd "
             "(per seed); the gain is over the consensus start.", "",
             "| refinement | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for row in ROWS:
        cells = []
        for name in sets:
            values, base = results[name][row], np.mean(results[name][ROWS[0]])
            gain = "" if row == ROWS[0] else f"; {np.mean(values) - base:+.2f}"
            cells.append(f"{np.mean(values):.2f} ± {np.std(values):.2f}{gain} ({', '.join(f'{v:.2f}' for v in values)})")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    save_results(args.out, "results", {"seeds": seeds, "results": results})
    save_results(args.out, "results", None, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
