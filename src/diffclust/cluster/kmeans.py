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


def student_t_assignments(features: torch.Tensor, centres: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """q_ik proportional to (1 + |x_i - mu_k|^2 / alpha)^(-(alpha+1)/2): DEC's soft assignment.

    Gives k-means predictions a confidence in [1/K, 1].
    """
    distances = torch.cdist(features.float(), centres.float()).pow(2)
    kernel = (1.0 + distances / alpha).pow(-(alpha + 1.0) / 2.0)
    return kernel / kernel.sum(dim=1, keepdim=True)
