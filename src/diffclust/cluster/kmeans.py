"""k-means on feature vectors, and soft assignments to its centres."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans


def fit_kmeans(features: np.ndarray | torch.Tensor, n_clusters: int, seed: int, n_init: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Centres (K, d) and labels (N,) of scikit-learn's k-means, seeded."""
    data = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    model = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit(data.astype(np.float64))
    return model.cluster_centers_.astype(np.float32), model.labels_.astype(np.int64)


def student_t_assignments(features: torch.Tensor, centres: torch.Tensor, alpha: float = 1.0, scale: float = 1.0) -> torch.Tensor:
    """q_ik proportional to (1 + |x_i - mu_k|^2 / (alpha * scale))^(-(alpha+1)/2): DEC's soft assignment.

    `scale` sets the unit of squared distance (1 in DEC).
    """
    distances = torch.cdist(features.float(), centres.float()).pow(2) / scale
    kernel = (1.0 + distances / alpha).pow(-(alpha + 1.0) / 2.0)
    return kernel / kernel.sum(dim=1, keepdim=True)


def half_gap_scale(centres: torch.Tensor) -> float:
    """Mean squared half-distance from each centre to its nearest other centre.

    Measured in this unit, a point midway between two centres is 1 away from each, so k-means
    confidences mean the same whatever the scale of the features.
    """
    gaps = torch.cdist(centres.float(), centres.float()).pow(2)
    gaps.fill_diagonal_(float("inf"))
    scale = float(gaps.min(dim=1).values.mean()) / 4.0
    return scale if scale > 0 and scale != float("inf") else 1.0


def kmeans_confidences(features: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Soft assignments to k-means centres, in units of the gap between centres."""
    return student_t_assignments(features, centres, scale=half_gap_scale(centres))
