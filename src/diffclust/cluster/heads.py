"""Cluster heads: small networks that map a feature vector to cluster probabilities."""

from __future__ import annotations

import torch
from torch import nn


class ClusterHead(nn.Module):
    """MLP in_dim -> hidden -> n_clusters (DiFiC's g is 768-768-C), on standardised features.

    The input is standardised per dimension (BatchNorm without affine parameters: batch
    statistics in training, running ones in prediction). Proxy words share a large common
    component that drifts from step to step while the differences between groups are small;
    without this, the drift moves every point across a fixed head's boundaries at once and
    the head collapses into one saturated cluster.
    """

    def __init__(self, in_dim: int, n_clusters: int, hidden_dim: int | None = None):
        super().__init__()
        hidden_dim = hidden_dim or in_dim
        self.standardise = nn.BatchNorm1d(in_dim, affine=False)
        self.layers = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, n_clusters))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (batch, n_clusters)."""
        return self.layers(self.standardise(features))

    @torch.no_grad()
    def calibrate(self, features: torch.Tensor) -> None:
        """Set the prediction-time statistics to those of `features` (all the data).

        Running statistics trail features that drift during training; predictions made with
        them can saturate. Recomputing them over the whole data set before predicting fixes that.
        """
        self.standardise.running_mean.copy_(features.float().mean(dim=0))
        self.standardise.running_var.copy_(features.float().var(dim=0, unbiased=False))
