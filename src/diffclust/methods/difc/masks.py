"""DiFiC's object mask: split an attention map into object and background with a 2-component GMM."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.mixture import GaussianMixture


def gmm_threshold(values: np.ndarray, seed: int = 0) -> float:
    """Midpoint of the two means of a 2-component Gaussian mixture fitted to `values`."""
    values = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    if np.ptp(values) < 1e-12:
        return float("-inf")  # a flat map carries no object: keep every pixel
    mixture = GaussianMixture(n_components=2, random_state=seed).fit(values)
    return float(mixture.means_.mean())


def gmm_foreground_mask(attention_map: np.ndarray | torch.Tensor, seed: int = 0) -> np.ndarray:
    """Boolean mask of the pixels above the GMM midpoint threshold (the object)."""
    values = attention_map.detach().cpu().numpy() if isinstance(attention_map, torch.Tensor) else np.asarray(attention_map)
    mask = values > gmm_threshold(values, seed)
    if not mask.any():  # never return an empty mask: the loss would have nothing to average
        mask[:] = True
    return mask


def object_masks(attention_maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(batch, H, W) attention maps -> (batch, H, W) float masks in {0, 1}."""
    masks = [torch.from_numpy(gmm_foreground_mask(single, seed)) for single in attention_maps]
    return torch.stack(masks).float()
