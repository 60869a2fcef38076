"""`load_backbone`: one entry point for built-in names, local folders and hub ids (offline first)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from diffclust.backbones.base import DiffusionBackbone
from diffclust.backbones.hub import library_progress_bars, locate_hub_model
from diffclust.backbones.names import BUILTIN_BACKBONES, SD15_HUB_ID, TINY_RANDOM, USPS_DDPM, USPS_TEXT
from diffclust.backbones.stable_diffusion import StableDiffusionBackbone
from diffclust.backbones.tiny_random import ensure_tiny_random
from diffclust.backbones.unconditional import UnconditionalBackbone
from diffclust.errors import DiffclustError

logger = logging.getLogger(__name__)

__all__ = ["BUILTIN_BACKBONES", "SD15_HUB_ID", "load_backbone", "unet_class"]

#: the models that ship inside the package, each a diffusers folder with its training record
BUNDLED = Path(__file__).resolve().parent / "bundled"


def bundled_folder(name: str) -> Callable[[], Path]:
    def folder() -> Path:
        path = BUNDLED / name
        if not (path / "unet" / "config.json").is_file():
            raise DiffclustError(f"The built-in '{name}' backbone is missing from this installation ({path}); reinstall diffclust.")
        return path

    return folder


#: built-in backbones: name -> function returning the folder that holds it
BUILTIN_BUILDERS: dict[str, Callable[[], Path]] = {TINY_RANDOM: ensure_tiny_random, USPS_DDPM: bundled_folder(USPS_DDPM),
                                                   USPS_TEXT: bundled_folder(USPS_TEXT)}
assert set(BUILTIN_BUILDERS) == set(BUILTIN_BACKBONES)

TINY_RANDOM_WARNING = (
    "The 'tiny-random' backbone has random weights: it checks that diffclust runs, but its clusters and confidences "
    "mean nothing. For real results pass --backbone with Stable Diffusion v1.5 (a folder or hub id) or a backbone "
    "made with `diffclust pretrain`."
)


def unet_class(folder: Path) -> str | None:
    """The diffusers class named in folder/unet/config.json, if any."""
    config = folder / "unet" / "config.json"
    return json.loads(config.read_text()).get("_class_name") if config.is_file() else None


def load_backbone(
    name_or_path: str | Path | DiffusionBackbone,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    local_files_only: bool | None = None,
    progress: bool = True,
) -> DiffusionBackbone:
    """A built-in name (``tiny-random``), a folder in the diffusers SD layout (or holding an
    unconditional UNet2DModel DDPM), or a hub id: from the local cache if it is there, else
    downloaded (unless ``local_files_only`` or HF_HUB_OFFLINE). ``progress=False`` silences
    the model libraries' own loading bars."""
    if isinstance(name_or_path, DiffusionBackbone):
        return name_or_path
    reference = str(name_or_path)
    with library_progress_bars(progress):
        folder = Path(reference).expanduser()
        if reference in BUILTIN_BUILDERS:
            if reference == TINY_RANDOM:
                logger.warning(TINY_RANDOM_WARNING)
            folder = BUILTIN_BUILDERS[reference]()
        elif folder.is_dir():
            reference = str(folder.resolve())
        else:  # a hub id: its cached snapshot folder, or the id itself to download
            located = locate_hub_model(reference, allow_download=not local_files_only)
            folder = Path(located)
            if not folder.is_dir():
                return StableDiffusionBackbone.from_pretrained(located, device=device, dtype=dtype, reference=reference)
        loader = UnconditionalBackbone if unet_class(folder) == "UNet2DModel" else StableDiffusionBackbone
        return loader.from_pretrained(folder, device=device, dtype=dtype, reference=reference)
