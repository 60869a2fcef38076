"""DiFiC's diffusion loss, restricted to the object mask."""

from __future__ import annotations

import torch


def masked_diffusion_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the masked pixels of each image, then over the batch.

    prediction, target: (batch, C, H, W); mask: (batch, H, W) in {0, 1} or None for all pixels.
    Each image weighs the same whatever its object's size.
    """
    error = (prediction.float() - target.float()).pow(2).mean(dim=1)  # (batch, H, W)
    if mask is None:
        return error.mean()
    mask = mask.to(error.dtype)
    per_image = (error * mask).flatten(1).sum(dim=1) / mask.flatten(1).sum(dim=1).clamp_min(1.0)
    return per_image.mean()
