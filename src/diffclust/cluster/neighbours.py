"""Nearest neighbours of each point (cosine), used by neighbour-consistency losses."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors


def nearest_neighbours(features: np.ndarray | torch.Tensor, n_neighbours: int) -> np.ndarray:
    """(N, n) indices of each point's nearest others by cosine similarity, self excluded."""
    data = features.detach().cpu().float().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, np.float32)
    data = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)
    n = min(n_neighbours, len(data) - 1)
    if n < 1:
        raise ValueError("Nearest neighbours need at least two points.")
    _, indices = NearestNeighbors(n_neighbors=n + 1).fit(data).kneighbors(data)
    # Drop each point itself (normally column 0; with exact duplicates it may sit elsewhere).
    rows = [row[row != i][:n] for i, row in enumerate(indices)]
    return np.stack(rows).astype(np.int64)
