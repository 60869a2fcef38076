"""`load_backbone`: one entry point for built-in names, local folders and hub ids."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from diffclust.backbones.base import DiffusionBackbone
from diffclust.backbones.stable_diffusion import StableDiffusionBackbone
from diffclust.backbones.tiny_random import NAME as TINY_RANDOM, ensure_tiny_random
from diffclust.backbones.unconditional import UnconditionalBackbone


def unet_class(folder: Path) -> str | None:
    """The diffusers class named in folder/unet/config.json, if any."""
    config = folder / "unet" / "config.json"
    return json.loads(config.read_text()).get("_class_name") if config.is_file() else None


SD15_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"

#: built-in backbones: name -> function returning the folder that holds it
BUILTIN_BACKBONES: dict[str, Callable[[], Path]] = {TINY_RANDOM: ensure_tiny_random}


def load_backbone(
    name_or_path: str | Path | DiffusionBackbone,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    local_files_only: bool | None = None,
) -> DiffusionBackbone:
    """A built-in name (``tiny-random``), a folder in the diffusers SD layout (or holding an
    unconditional UNet2DModel DDPM), or a hub id."""
    if isinstance(name_or_path, DiffusionBackbone):
        return name_or_path
    reference = str(name_or_path)
    if reference in BUILTIN_BACKBONES:
        folder = BUILTIN_BACKBONES[reference]()
        return StableDiffusionBackbone.from_pretrained(folder, device=device, dtype=dtype, reference=reference)
    folder = Path(reference).expanduser()
    if folder.is_dir():
        reference = str(folder.resolve())
        if unet_class(folder) == "UNet2DModel":
            return UnconditionalBackbone.from_pretrained(folder, device=device, dtype=dtype, reference=reference)
    return StableDiffusionBackbone.from_pretrained(
        reference, device=device, dtype=dtype, local_files_only=local_files_only, reference=reference
    )
