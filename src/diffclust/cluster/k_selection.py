"""Choosing the number of clusters K without labels.

k-means is fitted for every K in a range, on a seeded subsample (and, for wide features, a
PCA to 50 dimensions), and each fit is scored by established internal criteria: silhouette,
Calinski-Harabasz and Davies-Bouldin (scikit-learn), the BIC of a Gaussian mixture started
from the k-means fit, and prediction strength (Tibshirani & Walther 2005), a stability
criterion over two halves of the data. ``umap_silhouette`` is the silhouette of k-means fitted
in a UMAP embedding (cluster.manifold),
where neighbourhoods matter more than global distances. ``knn_modularity`` is the modularity of
the k-means partition on the 10-nearest-neighbour graph (cluster.start_choice): how much more of
the graph's links stay inside clusters than cluster sizes alone would give; unlike silhouette it
does not reward merging groups that lie close together. ``umap_hdbscan`` does not score k-means
fits: it counts the clusters HDBSCAN finds in seeded UMAP embeddings (the median of three), the
established density recipe for data on curved sheets, and prefers the K nearest that count.
Labels are never used.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
from sklearn.mixture import GaussianMixture

from diffclust.choices import K_CRITERIA
from diffclust.cluster.manifold import umap_embedding, umap_rows, umap_settings
from diffclust.cluster.neighbours import nearest_neighbours
from diffclust.cluster.start_choice import knn_modularity
from diffclust.errors import DiffclustError

#: criterion -> True when a higher score is better
CRITERIA = K_CRITERIA
#: the criteria recorded beside the chosen one by default (UMAP costs more)
RECORDED = ("silhouette", "calinski_harabasz", "davies_bouldin", "bic", "prediction_strength", "knn_modularity")
#: neighbours per item of the graph knn_modularity scores on
MODULARITY_NEIGHBOURS = 10
#: prediction strength picks the largest K whose clusters are this reproducible (the paper's 0.8)
STRENGTH_THRESHOLD = 0.8
#: umap_hdbscan: UMAP embeddings whose HDBSCAN cluster counts are taken the median of (one
#: embedding's count moves with its seed)
DENSITY_DRAWS = 3
#: umap_hdbscan: the smallest cluster HDBSCAN keeps, as a share of the items (and at least
#: MIN_DENSITY_CLUSTER items): K = 100, the top of the default range, at equal sizes
DENSITY_CLUSTER_SHARE = 0.01
MIN_DENSITY_CLUSTER = 5
#: the most items choose_k scans by default, a seeded draw of them (why: choose_k)
MAX_SCANNED_ITEMS = 3000
#: what a curve in k_selection.png shows, where its name alone does not say
PLOT_TITLES = {"umap_hdbscan": ": -|K - HDBSCAN's count|"}


def default_k_range(count: int) -> tuple[int, int]:
    """2 to N/5 (five items per cluster on average), at most 100."""
    return 2, max(2, min(100, count // 5))


def parse_k_range(text: str) -> tuple[int, int]:
    """'MIN:MAX' -> (MIN, MAX) with 2 <= MIN <= MAX."""
    try:
        low, high = (int(part) for part in text.split(":"))
    except ValueError:
        raise DiffclustError(f"k_range (--k-range) must be MIN:MAX, e.g. 2:50, got '{text}'.") from None
    if not 2 <= low <= high:
        raise DiffclustError(f"k_range (--k-range) needs 2 <= MIN <= MAX, got {low}:{high}.")
    return low, high


@dataclass
class KSelection:
    """The chosen K, the criterion that chose it, and every criterion's curve over K."""

    k: int
    criterion: str
    candidates: list[int]
    scores: dict[str, list[float]] = field(default_factory=dict)
    items: int = 0
    #: what a criterion found beside its curve, in words for the log (umap_hdbscan's counts)
    notes: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[list]:
        return [[k, *(round(self.scores[name][i], 6) for name in self.scores)] for i, k in enumerate(self.candidates)]

    def pick(self, criterion: str) -> int:
        """The K a criterion would choose (to compare criteria on the same scan)."""
        values = np.asarray(self.scores[criterion], dtype=float)
        if not np.isfinite(values).any():
            raise DiffclustError(
                f"K cannot be chosen by {criterion}: no K in {self.candidates[0]}..{self.candidates[-1]} could be scored on these "
                f"{self.items} items (they are too few, or too alike). Give the number of clusters yourself (--k N).")
        if criterion == "prediction_strength":
            good = [k for k, value in zip(self.candidates, values) if value >= STRENGTH_THRESHOLD]
            return max(good) if good else self.candidates[int(np.nanargmax(values))]
        best = np.nanargmax(values) if CRITERIA[criterion] else np.nanargmin(values)
        return self.candidates[int(best)]


def reduce_dimensions(data: np.ndarray, dimensions: int, seed: int) -> np.ndarray:
    """PCA to at most `dimensions`, and never more than the rows allow (PCA(50) fails on 20 rows)."""
    target = min(dimensions, len(data), data.shape[1])
    if data.shape[1] <= dimensions or target < 2:
        return data
    return PCA(target, random_state=seed).fit_transform(data)


def scanned_items(count: int, max_items: int, seed: int) -> np.ndarray:
    """Which of `count` items choose_k scans: all, or a seeded sorted draw of `max_items`."""
    if count <= max_items:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, max_items, replace=False))


def scanned_rows(data: np.ndarray, max_items: int, seed: int) -> np.ndarray:
    """The rows choose_k scores: the scanned items, PCA-reduced to at most 50 dimensions."""
    items = scanned_items(len(data), max_items, seed)
    return reduce_dimensions(data if len(items) == len(data) else data[items], 50, seed)


def _prediction_strength(data: np.ndarray, k: int, seed: int) -> float:
    """How well clusters fitted on one half predict the co-membership of the other half's clusters."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))
    train, test = data[order[: len(data) // 2]], data[order[len(data) // 2 :]]
    if k > len(test) // 2:
        return float("nan")
    by_train = KMeans(k, n_init=1, random_state=seed).fit(train).predict(test)
    test_labels = KMeans(k, n_init=1, random_state=seed + 1).fit_predict(test)
    strengths = []
    for cluster in range(k):
        members = by_train[test_labels == cluster]
        if len(members) < 2:
            continue
        counts = np.bincount(members)
        strengths.append(float((counts * (counts - 1)).sum() / (len(members) * (len(members) - 1))))
    return min(strengths) if strengths else float("nan")


def _silhouette(data: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """Silhouette on at most 2,000 seeded points (NaN for a single cluster)."""
    if len(np.unique(labels)) < 2:
        return math.nan
    return silhouette_score(data, labels, sample_size=min(2000, len(data)), random_state=seed)


def smallest_density_cluster(count: int) -> int:
    """The fewest items HDBSCAN may call a cluster among `count`: a share of them, at least a few."""
    return max(MIN_DENSITY_CLUSTER, math.ceil(DENSITY_CLUSTER_SHARE * count))


def density_labels(data: np.ndarray, seed: int, embedded: np.ndarray | None = None, settings: dict | None = None) -> np.ndarray:
    """HDBSCAN's cluster of each row (-1: noise) in the seeded UMAP embedding of `data` (or in `embedded`)."""
    if embedded is None:
        embedded = umap_embedding(data, seed, "The umap_hdbscan criterion (--k-criterion)", settings or umap_settings(umap_rows(data)))
    return HDBSCAN(min_cluster_size=smallest_density_cluster(len(data)), copy=True).fit(embedded).labels_


def density_clusters(data: np.ndarray, seed: int, embedded: np.ndarray | None = None, settings: dict | None = None) -> tuple[int, str]:
    """The median number of clusters HDBSCAN finds in DENSITY_DRAWS seeded UMAP embeddings of
    `data` (the first may be given as `embedded`; `settings`, umap_settings of the rows, shares
    one neighbour search among the draws), and those counts in words for the log."""
    smallest = smallest_density_cluster(len(data))
    if len(data) < 2 * smallest:
        return 0, f"{len(data)} items are too few for density clusters of at least {smallest} items"
    settings = settings or umap_settings(umap_rows(data))
    counts, noise = [], []
    for draw in range(DENSITY_DRAWS):
        labels = density_labels(data, seed + draw, embedded if draw == 0 else None, settings)
        counts.append(len(set(labels.tolist()) - {-1}))
        noise.append(float(np.mean(labels == -1)))
    count = int(np.median(counts))
    words = (f"HDBSCAN found {', '.join(map(str, counts))} clusters of at least {smallest} items in {DENSITY_DRAWS} UMAP "
             f"embeddings (median {count}; at most {100 * max(noise):.0f}% of the items left as noise)")
    return count, words


def _criterion(name: str, data: np.ndarray, k: int, fit: KMeans | None, embedded: np.ndarray | None, seed: int,
               neighbours: np.ndarray | None = None, density_count: int | None = None) -> float:
    """One criterion's score of the k-means `fit` with K = `k` on `data` (umap_silhouette: of a
    k-means fitted in the UMAP `embedded` space; knn_modularity: on the `neighbours` table;
    umap_hdbscan: how near K is to the `density_count`, with no fit)."""
    if name == "umap_hdbscan":  # fewer than two density clusters leave no K to prefer
        return -abs(k - density_count) if density_count >= 2 else math.nan
    several = fit is not None and len(np.unique(fit.labels_)) > 1
    if name == "silhouette":
        return _silhouette(data, fit.labels_, seed)
    if name == "calinski_harabasz":
        return calinski_harabasz_score(data, fit.labels_) if several else math.nan
    if name == "davies_bouldin":
        return davies_bouldin_score(data, fit.labels_) if several else math.nan
    if name == "bic":  # a short EM from the k-means fit: an approximation, so its warning is expected
        mixture = GaussianMixture(k, covariance_type="diag", means_init=fit.cluster_centers_, max_iter=20, reg_covar=1e-4,
                                  random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return mixture.fit(data).bic(data)
    if name == "prediction_strength":
        return _prediction_strength(data, k, seed)
    if name == "knn_modularity":
        return knn_modularity(neighbours, fit.labels_)
    return _silhouette(embedded, KMeans(k, n_init=2, random_state=seed).fit_predict(embedded), seed)


def choose_k(features, k_range: tuple[int, int] | None = None, criterion: str = "silhouette", seed: int = 0,
             max_items: int = MAX_SCANNED_ITEMS, criteria: tuple[str, ...] | None = None) -> KSelection:
    """Scan K over `k_range` (default: default_k_range) and choose it by `criterion`.

    `criteria` lists the scores computed for the record (default: RECORDED; the chosen
    criterion is always among them). A seeded subsample of `max_items` rows keeps 10,000 items
    x K = 2..100 under a minute on a laptop CPU. Where umap_hdbscan finds fewer than two density
    clusters, silhouette chooses K instead, and the selection's notes say so.
    """
    if criterion not in CRITERIA:
        raise DiffclustError(f"k criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}.")
    data = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    low, high = k_range or default_k_range(len(data))
    distinct = len(np.unique(data, axis=0)) if len(data) <= 100_000 else len(data)
    high = min(high, len(data) - 1, distinct - 1)  # k-means cannot make more clusters than distinct items
    if high < low:
        raise DiffclustError(f"Cannot choose K in {low}..{high}: only {len(data)} items ({distinct} distinct). "
                             "Give the number of clusters yourself (--k N), or cluster more items.")
    data = scanned_rows(data, max_items, seed)
    wanted = list(dict.fromkeys([criterion, *(criteria or RECORDED)]))
    candidates = list(range(low, high + 1))
    # one neighbour search for every UMAP embedding the criteria make, on the rows UMAP reads
    settings = umap_settings(umap_rows(data)) if {"umap_silhouette", "umap_hdbscan"} & set(wanted) else None
    embedded = umap_embedding(data, seed, "The umap_silhouette criterion (--k-criterion)", settings) if "umap_silhouette" in wanted else None
    neighbours = nearest_neighbours(data, min(MODULARITY_NEIGHBOURS, len(data) - 1), metric="euclidean") if "knn_modularity" in wanted else None
    notes = {}
    density_count = None
    if "umap_hdbscan" in wanted:
        density_count, notes["umap_hdbscan"] = density_clusters(data, seed, embedded, settings)
        if density_count < 2 and criterion == "umap_hdbscan":  # no density structure to count: the k-means criterion decides
            criterion = "silhouette"
            wanted.append(criterion)
            notes["umap_hdbscan"] += "; fewer than two, so silhouette chose K"
    scores: dict[str, list[float]] = {name: [] for name in dict.fromkeys(wanted)}
    fits_kmeans = bool(set(wanted) - {"umap_silhouette", "umap_hdbscan"})
    for k in candidates:
        fit = KMeans(k, n_init=2, random_state=seed).fit(data) if fits_kmeans else None
        for name in scores:
            scores[name].append(float(_criterion(name, data, k, fit, embedded, seed, neighbours, density_count)))
    selection = KSelection(0, criterion, candidates, scores, len(data), notes)
    selection.k = selection.pick(criterion)
    return selection


def write_k_selection(folder: str | Path, selection: KSelection) -> dict[str, Path]:
    """k_selection.csv (K, each criterion) and k_selection.png (each curve, the chosen K marked)."""
    from diffclust.engine.checkpoint import atomic_write, atomic_write_text
    from diffclust.outputs import csv_text

    folder = Path(folder)
    table = atomic_write_text(folder / "k_selection.csv", csv_text(("k", *selection.scores), selection.rows()))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(selection.scores), figsize=(3.2 * len(selection.scores), 2.8), squeeze=False)
    for axis, (name, values) in zip(axes[0], selection.scores.items()):
        axis.plot(selection.candidates, values, marker="o", markersize=2.5, linewidth=1)
        if np.isfinite(np.asarray(values, dtype=float)).any():
            axis.axvline(selection.pick(name), color="grey", linestyle=":", linewidth=1)
        if name == selection.criterion:
            axis.axvline(selection.k, color="red", linewidth=1.5, label=f"chosen K = {selection.k}")
            axis.legend(fontsize=7)
        axis.set_title(name + PLOT_TITLES.get(name, "" if CRITERIA[name] else " (lower is better)"), fontsize=8)
        axis.set_xlabel("K", fontsize=8)
        axis.tick_params(labelsize=7)
    figure.tight_layout()
    plot = atomic_write(folder / "k_selection.png", lambda temp: figure.savefig(temp, format="png", dpi=110))
    plt.close(figure)
    return {"csv": table, "png": plot}
