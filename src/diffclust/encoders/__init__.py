"""Pretrained vision encoders (ViT, DINO, DINOv2, CLIP) whose features CLUDI clusters; loaded on first use."""

from diffclust._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "VisionEncoder": "diffclust.encoders.vision",
    "extract_features": "diffclust.encoders.extraction",
})

__all__ = ["VisionEncoder", "extract_features"]
