"""Building the compact UNets and finding the text encoder."""

from __future__ import annotations

from diffusers import DDPMScheduler, UNet2DConditionModel, UNet2DModel

from diffclust.pretrain.settings import PretrainSettings


def _shared_unet_settings(settings: PretrainSettings, channels: int) -> dict:
    """What both kinds of compact UNet take from the settings."""
    return {
        "sample_size": settings.resolution,
        "in_channels": channels,
        "out_channels": channels,
        "block_out_channels": settings.block_out_channels,
        "layers_per_block": settings.layers_per_block,
        "attention_head_dim": settings.attention_head_dim,
        "norm_num_groups": min(32, min(settings.block_out_channels)),
    }


def build_conditioned_unet(settings: PretrainSettings, channels: int, context_dim: int) -> UNet2DConditionModel:
    """SD-1.x topology (CrossAttnDown x3 + Down / Up + CrossAttnUp x3) at compact widths, pixel space."""
    return UNet2DConditionModel(
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=context_dim,
        **_shared_unet_settings(settings, channels),
    )


def build_unconditional_unet(settings: PretrainSettings, channels: int) -> UNet2DModel:
    """A DDPM UNet: plain blocks, self-attention at the second-deepest level."""
    levels = len(settings.block_out_channels)
    down = ["DownBlock2D"] * levels
    up = ["UpBlock2D"] * levels
    if levels >= 2:
        down[-2] = "AttnDownBlock2D"
        up[1] = "AttnUpBlock2D"
    return UNet2DModel(down_block_types=tuple(down), up_block_types=tuple(up), **_shared_unet_settings(settings, channels))


def build_scheduler(settings: PretrainSettings) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule=settings.beta_schedule, prediction_type="epsilon")
