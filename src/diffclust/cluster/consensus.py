"""A start partition without a tuning knob: the median of several clusterings.

Spectral clustering of the kNN graph follows the data's neighbourhoods better than k-means,
but how well depends on the graph's neighbour count, and nothing label-free says which count
suits a data set. So we cluster with k-means and with spectral clustering at several counts,
and keep the partition that agrees most, by mean NMI, with all the others (the median
partition of the ensemble; Strehl & Ghosh, 2002). A count that splits or merges groups the
others keep apart scores low; no labels are read.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from diffclust.cluster.kmeans import fit_kmeans
from diffclust.cluster.metrics import normalized_mutual_information
from diffclust.cluster.neighbours import approximate_neighbours

logger = logging.getLogger(__name__)

#: the kNN-graph neighbour counts of the spectral candidates (k-means is the other candidate)
NEIGHBOUR_COUNTS = (5, 10, 15, 20, 30, 50)
#: above this many rows the spectral candidates share one approximate neighbour search
#: (pynndescent) and a sparse, multigrid-preconditioned eigen-solver (pyamg): near-linear cost
#: where scikit-learn's exact path grows with the square of the rows, and far worse where groups
#: overlap in few dimensions (ARPACK's shift-invert factorises the graph's Laplacian, whose fill-in
#: explodes there; docs/benchmarks/cludi.md)
MAX_SPECTRAL_ROWS = 10_000
#: the eigen-solver's tolerance on that path
EIGEN_TOLERANCE = 1e-6
#: below this mean NMI of the chosen candidate to the others the start is uncertain (its clusters
#: change with the graph's neighbour count), and a fit warns. It lies between the agreement on
#: real features and separated groups and that on overlapping groups, where the kNN graph
#: misleads and CLUDI scores below k-means (docs/benchmarks/cludi.md). A warning only: no choice
#: depends on it
UNCERTAIN_AGREEMENT = 0.88


@dataclass
class MedianPartition:
    """The chosen partition, its candidate's name, and every candidate's mean agreement (empty
    when k-means was the only candidate)."""

    labels: np.ndarray
    chosen: str
    agreement: dict[str, float]

    @property
    def uncertain(self) -> bool:
        """True when even the chosen candidate agrees little with the others (UNCERTAIN_AGREEMENT)."""
        return bool(self.agreement) and self.agreement[self.chosen] < UNCERTAIN_AGREEMENT


def spectral_partition(features: np.ndarray, n_clusters: int, neighbours: int, seed: int) -> np.ndarray:
    """Spectral clustering of the symmetrised `neighbours`-nearest-neighbour graph; k-means
    where the graph cannot give one (as many clusters as rows, or a decomposition that fails)."""
    from sklearn.cluster import SpectralClustering

    if len(features) <= n_clusters + 1:  # the spectral embedding needs more rows than clusters
        logger.info("%d rows for %d clusters: too few for spectral clustering; using k-means.", len(features), n_clusters)
        return fit_kmeans(features, n_clusters, seed=seed)[1].astype(np.int64)
    try:
        with warnings.catch_warnings():  # a graph in several pieces is expected with many clusters
            warnings.simplefilter("ignore", UserWarning)
            return SpectralClustering(n_clusters, affinity="nearest_neighbors", n_neighbors=min(neighbours, len(features) - 1),
                                      random_state=seed).fit_predict(features).astype(np.int64)
    except (np.linalg.LinAlgError, ValueError) as error:
        logger.info("Spectral clustering at %d neighbours failed (%s); using k-means.", neighbours, error)
        return fit_kmeans(features, n_clusters, seed=seed)[1].astype(np.int64)


def large_spectral_partitions(features: np.ndarray, n_clusters: int, counts: list[int], seed: int) -> dict[str, np.ndarray]:
    """Spectral clustering of the symmetrised kNN graph at each count, for many rows: one
    approximate neighbour search at the largest count serves every graph, and the spectral
    embedding uses a multigrid-preconditioned LOBPCG (pyamg) on the sparse graph."""
    from scipy import sparse
    from sklearn.manifold import spectral_embedding

    try:
        import pyamg  # noqa: F401 - scikit-learn's "amg" solver needs it
        solver = "amg"
    except ImportError:
        logger.warning("pyamg is not installed: the spectral candidates use ARPACK, slow on this many rows (pip install pyamg).")
        solver = "arpack"
    rows = len(features)
    table = approximate_neighbours(np.ascontiguousarray(features, dtype=np.float32), max(counts), seed)
    partitions = {}
    for count in counts:
        graph = sparse.csr_matrix((np.ones(rows * count, dtype=np.float32), (np.repeat(np.arange(rows), count), table[:, :count].ravel())),
                                  shape=(rows, rows))
        with warnings.catch_warnings():  # a graph in several pieces is expected with many clusters
            warnings.simplefilter("ignore", UserWarning)
            # an explicit tolerance: LOBPCG's default grows with the rows (sqrt(eps) x N) and on many rows stops on a
            # loose basis that mixes groups (docs/benchmarks/cludi.md)
            embedding = spectral_embedding(0.5 * (graph + graph.T), n_components=n_clusters, eigen_solver=solver, random_state=seed,
                                           drop_first=False, eigen_tol=EIGEN_TOLERANCE)
        partitions[f"spectral, {count} neighbours"] = fit_kmeans(embedding, n_clusters, seed=seed)[1].astype(np.int64)
    return partitions


def median_partition(candidates: dict[str, np.ndarray]) -> MedianPartition:
    """The candidate whose mean NMI to the other candidates is highest (first one on ties)."""
    if len(candidates) < 2:
        raise ValueError("median_partition needs at least two candidate partitions")
    names = list(candidates)
    agreement = {name: float(np.mean([normalized_mutual_information(candidates[name], candidates[other])
                                      for other in names if other != name])) for name in names}
    chosen = max(names, key=lambda name: agreement[name])
    return MedianPartition(np.asarray(candidates[chosen], dtype=np.int64), chosen, agreement)


def candidate_partitions(features, n_clusters: int, seed: int, neighbour_counts=NEIGHBOUR_COUNTS) -> dict[str, np.ndarray]:
    """k-means, and spectral clustering at each of `neighbour_counts` where there are enough rows."""
    array = features.cpu().numpy() if hasattr(features, "cpu") else np.asarray(features)
    candidates = {"kmeans": fit_kmeans(array, n_clusters, seed=seed)[1].astype(np.int64)}
    if len(array) <= n_clusters + 1:
        return candidates  # too few rows for any spectral candidate
    counts = sorted({min(count, len(array) - 1) for count in neighbour_counts})
    if len(array) > MAX_SPECTRAL_ROWS:
        logger.info("%d rows: the spectral candidates use approximate neighbours and a sparse eigen-solver.", len(array))
        candidates.update(large_spectral_partitions(array, n_clusters, counts, seed))
    else:
        for count in counts:
            candidates[f"spectral, {count} neighbours"] = spectral_partition(array, n_clusters, count, seed)
    return candidates


def consensus_partition(features, n_clusters: int, seed: int, neighbour_counts=NEIGHBOUR_COUNTS) -> MedianPartition:
    """k-means and spectral clustering at each of `neighbour_counts`; their median partition."""
    candidates = candidate_partitions(features, n_clusters, seed, neighbour_counts)
    if len(candidates) == 1:
        return MedianPartition(candidates["kmeans"], "kmeans", {})
    result = median_partition(candidates)
    logger.info("Start partition: %s (mean NMI %.3f to the other %d candidates; %s).", result.chosen, result.agreement[result.chosen],
                len(candidates) - 1, ", ".join(f"{name} {value:.3f}" for name, value in result.agreement.items()))
    if result.uncertain:
        logger.warning("The start's candidate clusterings disagree: the chosen one (%s) agrees with the others at a mean NMI of %.2f "
                       "(under %.2f), so the clusters change with the nearest-neighbour graph's size and are uncertain. Where "
                       "groups overlap, the graph misleads and plain k-means can score higher (docs: benchmarks, CLUDI, 'Where CLUDI is weak').",
                       result.chosen, result.agreement[result.chosen], UNCERTAIN_AGREEMENT)
    return result
