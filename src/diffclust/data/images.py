"""Decode any common image file to RGB and bring it to a square, fixed-size tensor.

Deterministic on purpose: centre square, resized, no augmentation, so that the per-image
constants DiFiC caches are the same every time an image is read. Bounded on purpose: the
centre square is cut before resampling (a 1 x 200000 strip does not become a 64 x 12.8M
image), JPEGs decode at a reduced scale when they are far larger than needed, and files of
more than MAX_PIXELS pixels are refused. Camera orientation (EXIF) is applied, as viewers do.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from diffclust.errors import DiffclustError

if TYPE_CHECKING:  # torch loads only where tensors are made: reading labels and folders stays quick
    import torch

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
#: decoded pixels allowed per image: 100 MP is 300 MB of RGB; larger files are skipped
MAX_PIXELS = 100_000_000
#: bumped whenever preprocessing changes the pixels, so caches made before are not reused
PREPROCESSING_VERSION = 2
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
    return image if image.mode == "RGB" else image.convert("RGB")


class ImageTooLargeError(ValueError):
    """More pixels than MAX_PIXELS: skipped like an unreadable file."""


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


def open_image(path: str | Path) -> Image.Image:
    """PIL's lazy open (the header only), with PIL's own decompression-bomb check folded into
    MAX_PIXELS's: its warning silenced (MAX_PIXELS decides, with its own reason) and its error
    raised as ImageTooLargeError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"over the {MAX_PIXELS // 1_000_000}-megapixel limit (diffclust.data.images.MAX_PIXELS): "
                                 f"{error}") from None


def load_rgb(path: str | Path, size_hint: int | None = None) -> Image.Image:
    """Open and fully decode an image (raises on truncated or non-image files), upright as
    viewers show it (EXIF orientation), first frame of an animation. With `size_hint`, a JPEG
    may decode at a reduced scale whose short side is still at least that many pixels."""
    image, rgb = open_image(path), None
    try:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ImageTooLargeError(f"{width} x {height} pixels is over the {MAX_PIXELS // 1_000_000}-megapixel limit "
                                     "(diffclust.data.images.MAX_PIXELS)")
        if size_hint is not None and image.format == "JPEG":
            image.draft("RGB", _draft_size(image.size, size_hint))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        rgb = to_rgb(image)
        if rgb is image and getattr(image, "n_frames", 1) > 1:
            rgb = image.copy()  # detach the first frame from the file that stays open for the others
    finally:
        if rgb is not image:  # the decoded image itself is returned; anything else is released
            image.close()
    return rgb  # no copy of a decoded RGB image: a 100-megapixel file costs its 300 MB once


def _draft_size(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """The smallest size of `size`'s shape whose short side is `short_side` (draft keeps at least it)."""
    scale = short_side / min(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def is_animated(path: str | Path) -> bool:
    with Image.open(path) as image:
        return bool(getattr(image, "is_animated", False))


def resize_center_crop(image: Image.Image, resolution: int) -> Image.Image:
    """The centre square (side = the short side), resampled to resolution x resolution."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return image.resize((resolution, resolution), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor (3, H, W) in [-1, 1], the range diffusion models expect."""
    import torch

    return uint8_to_model_range(torch.from_numpy(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()))


def load_image_tensor(path: str | Path, resolution: int) -> torch.Tensor:
    """The whole preprocessing chain for one file."""
    return image_to_tensor(resize_center_crop(load_rgb(path, resolution), resolution))


def load_image_array(paths: list[Path], resolution: int, workers: int = 8) -> torch.Tensor:
    """Every image preprocessed once into one uint8 tensor (N, 3, R, R): small models train
    faster from memory than from JPEG decoding at every step."""
    from concurrent.futures import ThreadPoolExecutor

    def read(path: Path) -> np.ndarray:
        return np.asarray(resize_center_crop(load_rgb(path, resolution), resolution), dtype=np.uint8).transpose(2, 0, 1)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        arrays = list(pool.map(read, paths))
    import torch

    return torch.from_numpy(np.stack(arrays))


def uint8_to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 (.., 3, H, W) -> float in [-1, 1]."""
    return images.float() / 127.5 - 1.0
