"""Cluster heads: small networks that map a feature vector to cluster probabilities."""

from __future__ import annotations

import torch
from torch import nn


class ClusterHead(nn.Module):
    """MLP in_dim -> hidden -> n_clusters (DiFiC's g is 768-768-C)."""

    def __init__(self, in_dim: int, n_clusters: int, hidden_dim: int | None = None):
        super().__init__()
        hidden_dim = hidden_dim or in_dim
        self.layers = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, n_clusters))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (batch, n_clusters)."""
        return self.layers(features)
