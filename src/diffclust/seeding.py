"""One place that seeds every random number generator diffclust touches."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a run is repeatable on CPU."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A private torch generator, so library randomness does not disturb the user's."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator
