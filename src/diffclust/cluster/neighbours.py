"""Nearest neighbours of each point (cosine, or Euclidean), used by neighbour-consistency losses.

Exact search by chunked matrix products on the features' own device: DiFiC finds every
image's neighbours each epoch, and on a GPU 100,000 points take seconds (the CPU time is
printed by benchmarks/difc_step.py), with no index to build. On a CPU its cost grows with the
square of the rows, so above EXACT_CPU_MAX_ROWS it is pynndescent's approximate NN-descent.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

#: rows compared against all others at once (chunk x N similarities in memory)
CHUNK_ROWS = 2048
#: above this many rows on a CPU the search is approximate (near-linear instead of quadratic)
EXACT_CPU_MAX_ROWS = 30_000


@torch.no_grad()
def nearest_neighbours(features: np.ndarray | torch.Tensor, n_neighbours: int, chunk_rows: int = CHUNK_ROWS,
                       metric: str = "cosine") -> np.ndarray:
    """(N, n) indices of each point's nearest others by cosine similarity (or Euclidean
    distance, `metric="euclidean"`), self excluded (also when exact duplicates tie with it),
    nearest first."""
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    data = features.detach().float() if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features, np.float32))
    n = min(n_neighbours, len(data) - 1)
    if n < 1:
        raise ValueError("Nearest neighbours need at least two points.")
    if metric == "cosine":
        data = torch.nn.functional.normalize(data, dim=1)
    if data.device.type == "cpu" and len(data) > EXACT_CPU_MAX_ROWS:  # Euclidean; on unit vectors, Euclidean order is cosine order
        return approximate_neighbours(data.numpy(), n, seed=0)
    found = []
    squared_norms = data.pow(2).sum(dim=1) if metric == "euclidean" else None
    for start in range(0, len(data), chunk_rows):
        similarity = data[start:start + chunk_rows] @ data.T
        if metric == "euclidean":  # -|a - b|^2 up to the row's own |a|^2, which does not change its order
            similarity = 2 * similarity - squared_norms
        rows = torch.arange(len(similarity), device=data.device)
        similarity[rows, rows + start] = -torch.inf  # never a point's own neighbour
        found.append(similarity.topk(n, dim=1).indices.cpu())
    return torch.cat(found).numpy().astype(np.int64)


def approximate_neighbours(features: np.ndarray, neighbours: int, seed: int) -> np.ndarray:
    """(rows, neighbours) indices of each row's nearest rows by Euclidean distance, itself left
    out: pynndescent's NN-descent, near-linear in the rows."""
    from diffclust.cluster.manifold import cache_numba_kernels
    from diffclust.cluster.numba_cache import guard_numba_cache

    guard_numba_cache()
    from numba.core.errors import NumbaWarning
    from pynndescent import NNDescent

    cache_numba_kernels()
    with warnings.catch_warnings():  # numba says that it cannot cache nn_descent
        warnings.simplefilter("ignore", NumbaWarning)
        table, _ = NNDescent(features, n_neighbors=neighbours + 1, random_state=seed, low_memory=True).neighbor_graph
    own = table == np.arange(len(table))[:, None]
    # each row's own index (or, for duplicates, the first column) is dropped
    drop = np.where(own.any(axis=1), own.argmax(axis=1), 0)
    keep = np.ones_like(table, dtype=bool)
    keep[np.arange(len(table)), drop] = False
    return table[keep].reshape(len(table), neighbours)
