"""k-means in a UMAP embedding: clusters that curve through the feature space, found by their neighbourhoods.

Diffusion features of one class often lie on a thin, bent sheet that a Euclidean k-means cuts
across; UMAP (umap-learn) keeps each point's neighbourhood and packs such sheets into tight
blobs, where k-means then separates them (the N2D recipe: McConville et al., 2019; measured
against k-means in the features in docs/benchmarks/diec.md). The settings are fixed, not tuned
per data set.

Two things keep it fast. umap-learn and pynndescent compile their numba kernels in every new
process (tens of seconds, more for pynndescent's above 4,096 rows);
their kernels are put in numba's disk cache, so only the first process compiles them. And the
neighbours of 4,096 to EXACT_NEIGHBOURS_MAX_ROWS rows come from an exact search (scikit-learn),
as umap-learn's own are below 4,096: at this size it is quicker than compiling pynndescent, and
exact rather than approximate.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from diffclust.cluster.consensus import median_partition
from diffclust.cluster.kmeans import fit_kmeans
from diffclust.cluster.numba_cache import guard_numba_cache
from diffclust.errors import DiffclustError

#: neighbourhoods of 15, packed clusters (min_dist 0, as for clustering rather than display), 10 dimensions
UMAP_SETTINGS = {"n_neighbors": 15, "min_dist": 0.0, "n_components": 10}
#: UMAP computes in float32: beyond this size, squared distances overflow and its graph comes
#: out empty (a crash inside umap-learn), so larger rows are scaled down first (umap_rows)
UMAP_MAX_MAGNITUDE = 2.0**40
#: umap-learn's own neighbour search is exact below 4,096 rows; from there up to this many rows diffclust's
#: is (an N x N distance pass in chunks), above it pynndescent's approximate one
UMAP_EXACT_BELOW = 4096
EXACT_NEIGHBOURS_MAX_ROWS = 30_000
#: UMAP embeddings behind one partition. k-means in a single embedding now and then merges two
#: groups and splits another (docs/benchmarks/diec.md). The median partition of the draws (the
#: one agreeing most, by mean NMI, with the others; no label read) keeps the common answer.
UMAP_PARTITION_DRAWS = 5


def cache_numba_kernels() -> None:
    """Put umap-learn's and pynndescent's numba kernels (those imported so far) in numba's disk
    cache before their first call, as `cache=True` would; kernels already handled or compiled are
    left alone, so calling it again is cheap. A kernel that cannot be cached (pynndescent's
    nn_descent takes a function as an argument) still compiles, as before."""
    import sys

    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in ("umap", "pynndescent"):
            continue
        for kernel in list(vars(module).values()):
            if isinstance(kernel, CPUDispatcher) and isinstance(kernel._cache, NullCache) and not kernel.overloads:
                try:
                    kernel.enable_caching()
                except RuntimeError:  # no writable cache folder (numba says which); compile in memory as before
                    return


def exact_neighbours(array: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances) of each row's `n_neighbors` nearest rows, itself first, as UMAP wants them."""
    from sklearn.neighbors import NearestNeighbors

    distances, indices = NearestNeighbors(n_neighbors=n_neighbors, algorithm="brute").fit(array).kneighbors(array)
    # a row's distance to itself comes out of |x|^2 - 2 x.y + |y|^2 as rounding noise, often a tiny positive
    # number; UMAP would take that as the distance to the nearest neighbour and rebuild the graph around it
    # (which wrecked the partition of features at a small scale)
    distances[indices == np.arange(len(array))[:, None]] = 0.0
    return indices, distances.astype(np.float32)


def umap_rows(data) -> np.ndarray:
    """The rows as float32, as UMAP computes; rows larger than UMAP_MAX_MAGNITUDE are first
    scaled down by a power of two (exactly: the same neighbours, the same embedding)."""
    array = data.detach().cpu().numpy() if hasattr(data, "detach") else np.asarray(data)
    array = array.reshape(len(array), -1)
    largest = float(np.abs(array).max()) if array.size else 0.0
    if math.isfinite(largest) and largest > UMAP_MAX_MAGNITUDE:
        array = array * 2.0 ** -math.ceil(math.log2(largest))
    return array.astype(np.float32)


def umap_settings(array: np.ndarray) -> dict:
    """UMAP_SETTINGS for these rows, with their exact neighbours when diffclust searches them
    (UMAP_EXACT_BELOW to EXACT_NEIGHBOURS_MAX_ROWS rows): several embeddings of the same rows
    can share one search."""
    settings = {**UMAP_SETTINGS, "n_neighbors": min(UMAP_SETTINGS["n_neighbors"], len(array) - 1)}
    if UMAP_EXACT_BELOW <= len(array) <= EXACT_NEIGHBOURS_MAX_ROWS:
        indices, distances = exact_neighbours(array, settings["n_neighbors"])
        settings["precomputed_knn"] = (indices, distances, None)
    return settings


def umap_embedding(data, seed: int, needed_by: str = "this setting", settings: dict | None = None) -> np.ndarray:
    """A seeded UMAP embedding of the rows of `data` (`settings`, by default umap_settings), or
    a clear error without umap-learn. Too few rows for a neighbourhood graph (fewer than
    n_components + 2) come back unchanged: there is nothing to unfold."""
    array = umap_rows(data)
    guard_numba_cache()
    try:
        import umap
    except ImportError:
        raise DiffclustError(f"{needed_by} needs umap-learn, a dependency of diffclust that is missing here: pip install umap-learn.") from None
    if len(array) < UMAP_SETTINGS["n_components"] + 2:
        return array
    cache_numba_kernels()
    settings = settings or umap_settings(array)
    from numba.core.errors import NumbaWarning

    with warnings.catch_warnings():  # a seed turns off UMAP's parallelism, and it says so; no search index, no transform;
        warnings.simplefilter("ignore", UserWarning)  # and numba says that it cannot cache pynndescent's nn_descent
        warnings.simplefilter("ignore", NumbaWarning)
        return umap.UMAP(**settings, random_state=seed).fit_transform(array)


def umap_partition(features, n_clusters: int, seed: int, needed_by: str = "this setting", draws: int = UMAP_PARTITION_DRAWS) -> np.ndarray:
    """Labels (N,) of k-means in seeded UMAP embeddings of `features`: with several `draws`
    (seeds seed, seed + 1, ...; one neighbour search for all), the median partition of them
    (see UMAP_PARTITION_DRAWS)."""
    array = umap_rows(features)
    settings = umap_settings(array)
    candidates = {draw: fit_kmeans(umap_embedding(array, seed + draw, needed_by, settings), n_clusters, seed=seed + draw)[1]
                  for draw in range(max(1, draws))}
    return candidates[0] if len(candidates) == 1 else median_partition(candidates).labels
