"""Decode any common image file to RGB and bring it to a square, fixed-size tensor.

Deterministic on purpose: short side resized, centre crop, no augmentation, so that the
per-image constants DiFiC caches are the same every time an image is read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffclust.errors import DiffclustError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert grayscale, palette, alpha, CMYK and 16-bit images to 8-bit RGB.

    Transparent pixels are composited on white, which is how a person sees them.
    """
    if image.mode in _HIGH_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if values.max(initial=0) > 255 or image.mode != "I" else 255.0
        image = Image.fromarray(np.clip(values / scale * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        image = Image.fromarray(np.clip(values / scale * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def array_to_image(array: np.ndarray) -> Image.Image:
    """A uint8 (or 0..1 float) array (H, W) or (H, W, 1|3|4) as a PIL image."""
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise DiffclustError(f"Image arrays must be uint8 (0..255) or float in [0, 1]; got {array.dtype} "
                                 f"with values in [{array.min()}, {array.max()}].")
        array = np.round(array * 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(np.ascontiguousarray(array))


def load_rgb(path: str | Path) -> Image.Image:
    """Open and fully decode an image (raises on truncated or non-image files)."""
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)


def resize_center_crop(image: Image.Image, resolution: int) -> Image.Image:
    """Resize the short side to `resolution`, then crop the centre square."""
    width, height = image.size
    scale = resolution / min(width, height)
    new_size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    image = image.resize(new_size, Image.Resampling.BICUBIC)
    left = (new_size[0] - resolution) // 2
    top = (new_size[1] - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor (3, H, W) in [-1, 1], the range diffusion models expect."""
    return uint8_to_model_range(torch.from_numpy(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()))


def load_image_tensor(path: str | Path, resolution: int) -> torch.Tensor:
    """The whole preprocessing chain for one file."""
    return image_to_tensor(resize_center_crop(load_rgb(path), resolution))


def load_image_array(paths: list[Path], resolution: int, workers: int = 8) -> torch.Tensor:
    """Every image preprocessed once into one uint8 tensor (N, 3, R, R): small models train
    faster from memory than from JPEG decoding at every step."""
    from concurrent.futures import ThreadPoolExecutor

    def read(path: Path) -> np.ndarray:
        return np.asarray(resize_center_crop(load_rgb(path), resolution), dtype=np.uint8).transpose(2, 0, 1)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        arrays = list(pool.map(read, paths))
    return torch.from_numpy(np.stack(arrays))


def uint8_to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 (.., 3, H, W) -> float in [-1, 1]."""
    return images.float() / 127.5 - 1.0
