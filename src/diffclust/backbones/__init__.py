"""Diffusion backbones behind one protocol (see base.DiffusionBackbone)."""

from diffclust.backbones.base import PLACEHOLDER, DiffusionBackbone, PromptEncoding, UNetPass
from diffclust.backbones.capture import ActivationCapture, AttentionCapture, capturable_layers
from diffclust.backbones.registry import BUILTIN_BACKBONES, SD15_HUB_ID, load_backbone
from diffclust.backbones.stable_diffusion import StableDiffusionBackbone
from diffclust.backbones.unconditional import UnconditionalBackbone

__all__ = [
    "BUILTIN_BACKBONES",
    "PLACEHOLDER",
    "SD15_HUB_ID",
    "ActivationCapture",
    "AttentionCapture",
    "DiffusionBackbone",
    "PromptEncoding",
    "StableDiffusionBackbone",
    "UNetPass",
    "UnconditionalBackbone",
    "capturable_layers",
    "load_backbone",
]
