"""Nearest neighbours of each point (cosine), used by neighbour-consistency losses.

Exact search by chunked matrix products on the features' own device: DiFiC finds every
image's neighbours each epoch, and on a GPU 100,000 points take seconds (the CPU time is
printed by benchmarks/difc_step.py), with no index to build and no extra dependency.
"""

from __future__ import annotations

import numpy as np
import torch

#: rows compared against all others at once (chunk x N similarities in memory)
CHUNK_ROWS = 2048


@torch.no_grad()
def nearest_neighbours(features: np.ndarray | torch.Tensor, n_neighbours: int, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """(N, n) indices of each point's nearest others by cosine similarity, self excluded
    (also when exact duplicates tie with it), nearest first."""
    data = features.detach().float() if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features, np.float32))
    n = min(n_neighbours, len(data) - 1)
    if n < 1:
        raise ValueError("Nearest neighbours need at least two points.")
    data = torch.nn.functional.normalize(data, dim=1)
    found = []
    for start in range(0, len(data), chunk_rows):
        similarity = data[start:start + chunk_rows] @ data.T
        rows = torch.arange(len(similarity), device=data.device)
        similarity[rows, rows + start] = -torch.inf  # never a point's own neighbour
        found.append(similarity.topk(n, dim=1).indices.cpu())
    return torch.cat(found).numpy().astype(np.int64)
