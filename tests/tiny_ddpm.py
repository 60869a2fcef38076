"""A tiny randomly initialised unconditional DDPM folder (UNet2DModel + scheduler) for tests."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel


def write_tiny_ddpm(folder: Path, resolution: int = 16, channels: int = 1, seed: int = 0) -> Path:
    """diffusers layout (unet/, scheduler/) that `load_backbone(folder)` reads as unconditional."""
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=resolution, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=8,
    )
    unet.save_pretrained(folder / "unet")
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(folder / "scheduler")
    return folder
