"""CLUDI's networks: assignment embeddings, and a denoiser over them conditioned on features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps, (B,) -> (B, dim)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10_000) * torch.arange(half, device=timesteps.device, dtype=torch.float32) / half)
    angles = timesteps.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class AssignmentEmbedding(nn.Module):
    """Logits over K clusters -> softmax(logits / temperature) @ (K unit-norm centres)."""

    def __init__(self, n_clusters: int, dim: int):
        super().__init__()
        self.centres = nn.Parameter(torch.randn(n_clusters, dim))

    def unit_centres(self) -> torch.Tensor:
        return F.normalize(self.centres, dim=1)

    def forward(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        return (logits.float() / temperature).softmax(dim=1) @ self.unit_centres()


class ResidualBlock(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, h: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return h + self.mlp(self.norm(h) + condition)


class Denoiser(nn.Module):
    """Predicts the clean assignment embedding from a noisy one, the timestep, the features and a
    self-conditioning estimate (the previous prediction, or zeros)."""

    def __init__(self, feature_dim: int, embedding_dim: int = 64, hidden: int = 512, depth: int = 3):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.hidden = hidden
        self.inputs = nn.Linear(2 * embedding_dim, hidden)
        self.features = nn.Linear(feature_dim, hidden)
        self.time = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(ResidualBlock(hidden) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, embedding_dim))

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, features: torch.Tensor, self_condition: torch.Tensor) -> torch.Tensor:
        condition = self.features(features) + self.time(timestep_embedding(timesteps, self.hidden))
        h = self.inputs(torch.cat([noisy, self_condition], dim=1))
        for block in self.blocks:
            h = block(h, condition)
        return self.out(h)


class CLUDINetwork(nn.Module):
    """Denoiser + linear classifier (embedding -> K logits) + the cluster centres."""

    def __init__(self, feature_dim: int, n_clusters: int, embedding_dim: int = 64, hidden: int = 512, depth: int = 3):
        super().__init__()
        self.denoiser = Denoiser(feature_dim, embedding_dim, hidden, depth)
        self.classifier = nn.Linear(embedding_dim, n_clusters)
        self.embedding = AssignmentEmbedding(n_clusters, embedding_dim)
