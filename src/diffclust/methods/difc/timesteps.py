"""DiFiC's timestep sampler: p(t) proportional to 1 + cos(pi t / T), favouring small t.

Small t is where a denoiser needs fine detail of the image, which is what a proxy word for
fine-grained clustering must carry.
"""

from __future__ import annotations

import math

import torch


def cosine_timestep_probabilities(num_timesteps: int) -> torch.Tensor:
    """p(t) for t = 0..T-1."""
    t = torch.arange(num_timesteps, dtype=torch.float64)
    weights = 1.0 + torch.cos(math.pi * t / num_timesteps)
    return weights / weights.sum()


def uniform_timestep_probabilities(num_timesteps: int) -> torch.Tensor:
    """Plain DDPM training distribution, for ablations."""
    return torch.full((num_timesteps,), 1.0 / num_timesteps, dtype=torch.float64)


class TimestepSampler:
    """Draws integer timesteps from a fixed distribution with a caller's generator."""

    def __init__(self, probabilities: torch.Tensor):
        self.probabilities = probabilities.float()

    def __call__(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.multinomial(self.probabilities, count, replacement=True, generator=generator)
