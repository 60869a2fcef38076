"""Diffusion backbones behind one protocol (see base.DiffusionBackbone); loaded on first use."""

from diffclust._lazy import lazy_exports
from diffclust.backbones.names import BUILTIN_BACKBONES, SD15_HUB_ID

__getattr__, __dir__ = lazy_exports(__name__, {
    "PLACEHOLDER": "diffclust.backbones.base",
    "ActivationCapture": "diffclust.backbones.capture",
    "AttentionCapture": "diffclust.backbones.capture",
    "DiffusionBackbone": "diffclust.backbones.base",
    "PromptEncoding": "diffclust.backbones.base",
    "StableDiffusionBackbone": "diffclust.backbones.stable_diffusion",
    "UNetPass": "diffclust.backbones.base",
    "UnconditionalBackbone": "diffclust.backbones.unconditional",
    "capturable_layers": "diffclust.backbones.capture",
    "load_backbone": "diffclust.backbones.registry",
})

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
