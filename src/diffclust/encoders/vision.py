"""Pretrained vision transformers (ViT, DINO, DINOv2, CLIP's vision tower) as feature encoders.

CLUDI is defined on such features. An encoder loads the transformers way, from a local folder
or a hub id (offline first, like the diffusion backbones), with the folder's own image
processor, and maps a batch of PIL images to one L2-normalised vector each: the CLS token
(for CLIP, its projected image embedding; SigLIP, which has no CLS token, gives its
attention-pooled image vector) or the mean of the patch tokens.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from diffclust.backbones.hub import library_progress_bars, locate_hub_model
from diffclust.engine.trainer import weights_identity
from diffclust.errors import DiffclustError, library_reason

logger = logging.getLogger(__name__)

POOLINGS = ("cls", "mean")
#: model types whose checkpoints hold a text tower too: only the vision tower (and projection) loads
TWO_TOWER_TYPES = ("clip", "siglip")
#: model types whose token sequence holds only patches (no CLS token in front)
NO_CLS_TYPES = ("siglip",)
#: (mean, std) used when a folder has no preprocessor_config.json: each family's own, else ImageNet's
IMAGENET_STATISTICS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
FALLBACK_STATISTICS = {"clip": ((0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758)), "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}


class EncoderError(DiffclustError):
    """An encoder that cannot be found or used: names the setting (--encoder) and what to do."""


class VisionEncoder:
    """A transformers vision model and its preprocessing; `encode(images)` -> (B, D) unit rows."""

    def __init__(self, model: torch.nn.Module, processor, model_type: str, image_size: int, pooling: str, reference: str,
                 device: torch.device, register_tokens: int = 0, weights: str | None = None):
        self.model = model.eval().to(device)
        self.weights = weights  # identity of the weight files (a local folder), so resumed features are not mixed
        self.processor = processor
        self.model_type = model_type
        self.image_size = image_size
        self.pooling = pooling
        self.reference = reference
        self.device = device
        self.register_tokens = register_tokens
        #: tokens before the patches: CLS (none for SigLIP) and any register tokens
        self.prefix_tokens = (0 if model_type in NO_CLS_TYPES else 1) + register_tokens

    @classmethod
    def load(cls, name_or_path: str | Path, pooling: str = "cls", device: str | torch.device = "cpu", progress: bool = True,
             local_files_only: bool | None = None) -> VisionEncoder:
        """From a folder saved with `save_pretrained` (config.json + weights, ideally a
        preprocessor_config.json), or a hub id (the local cache first; downloaded only when allowed)."""
        from transformers import AutoConfig, AutoImageProcessor, AutoModel
        from transformers.utils import logging as transformers_logging

        if pooling not in POOLINGS:
            raise EncoderError(f"pooling (--pooling) must be one of {', '.join(POOLINGS)}, got {pooling!r}.")
        reference = str(name_or_path)
        folder = Path(reference).expanduser()
        source = str(folder.resolve()) if folder.is_dir() else locate_hub_model(
            reference, allow_download=not local_files_only, kind="Encoder", option="--encoder", builtins=())
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()  # a CLIP checkpoint's unused text tower is expected, not news
        try:
            with library_progress_bars(progress):
                config = AutoConfig.from_pretrained(source)
                model_type = config.model_type
                if model_type in TWO_TOWER_TYPES:
                    model = _vision_tower(source, config)
                    vision_config = config.vision_config
                else:
                    model = AutoModel.from_pretrained(source)
                    vision_config = config
                processor = _processor(source, AutoImageProcessor)
        except (OSError, ValueError, KeyError) as error:
            raise EncoderError(f"Could not load the vision encoder '{reference}' ({library_reason(error, 300)}). "
                               "--encoder takes a folder saved with transformers' save_pretrained (ViT, DINO, DINOv2, CLIP) "
                               "or a hub id such as facebook/dinov2-small.") from None
        finally:
            transformers_logging.set_verbosity(verbosity)
        image_size = _image_size(vision_config)
        if processor is None:
            logger.warning("'%s' has no preprocessor_config.json: resizing to %d px and normalising with %s statistics.",
                           reference, image_size, f"{model_type}'s" if model_type in FALLBACK_STATISTICS else "ImageNet's")
        registers = int(getattr(vision_config, "num_register_tokens", 0) or 0) if "register" in model_type else 0
        weights = weights_identity(source) if Path(source).is_dir() else None
        return cls(model, processor, model_type, image_size, pooling, reference, torch.device(device), registers, weights)

    @property
    def description(self) -> dict:
        """What the features depend on: recorded beside them and checked when a run resumes."""
        return {"encoder": self.reference, "model_type": self.model_type, "pooling": self.pooling, "image_size": self.image_size,
                "weights": self.weights}

    def pixels(self, images: list[Image.Image]) -> torch.Tensor:
        """The model's input for these RGB images (its processor, or the fallback)."""
        if self.processor is not None:
            return self.processor(images=images, return_tensors="pt")["pixel_values"]
        mean, std = FALLBACK_STATISTICS.get(self.model_type, IMAGENET_STATISTICS)
        from diffclust.data.images import image_to_tensor, resize_center_crop

        batch = torch.stack([image_to_tensor(resize_center_crop(image, self.image_size)) for image in images]).float() / 255.0
        return (batch - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]

    @torch.no_grad()
    def encode(self, images: list[Image.Image]) -> torch.Tensor:
        """(B, D) float32 features, each row of unit length."""
        outputs = self.model(pixel_values=self.pixels(images).to(self.device))
        if self.pooling == "mean":  # the patch tokens: after the CLS token and any register tokens
            vectors = outputs.last_hidden_state[:, self.prefix_tokens:].mean(dim=1)
        elif hasattr(outputs, "image_embeds"):  # CLIP: the projected image embedding
            vectors = outputs.image_embeds
        elif self.model_type in NO_CLS_TYPES:  # SigLIP: its attention-pooled image vector
            vectors = outputs.pooler_output
        else:
            vectors = outputs.last_hidden_state[:, 0]
        return F.normalize(vectors.float(), dim=1).cpu()


def _vision_tower(source: str, config):
    """CLIP/SigLIP's vision tower (with CLIP's projection) from a full two-tower checkpoint."""
    from transformers import CLIPVisionModelWithProjection, SiglipVisionModel

    vision = config.vision_config
    if config.model_type == "clip":
        vision.projection_dim = config.projection_dim  # the projection's size is a top-level setting
        return CLIPVisionModelWithProjection.from_pretrained(source, config=vision)
    return SiglipVisionModel.from_pretrained(source, config=vision)


def _processor(source: str, auto_processor):
    """The folder's image processor, or None when it has none (the fallback preprocessing serves)."""
    try:
        return auto_processor.from_pretrained(source)
    except (OSError, ValueError):
        return None


def _image_size(config) -> int:
    size = getattr(config, "image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)
