"""Thumbnails for the report, written once and reused: a second report of a run (or of a run on
the same images) only makes the thumbnails it did not have."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from diffclust.data.images import load_rgb, resize_center_crop
from diffclust.data.names import name_bytes

THUMBNAIL_FOLDER = "thumbs"


class ThumbnailCache:
    """Square JPEG thumbnails under `folder/thumbs/`, named by the image's path, size and time."""

    def __init__(self, folder: Path, size: int = 112):
        self.folder = Path(folder) / THUMBNAIL_FOLDER
        self.size = size
        self.made = 0
        self.reused = 0

    def _name(self, path: Path, kind: str) -> str:
        stat = path.stat()
        key = hashlib.sha1(name_bytes(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.size}|{kind}")).hexdigest()[:20]
        return f"{THUMBNAIL_FOLDER}/{key}.jpg"

    def thumbnail(self, path: Path, mask: np.ndarray | None = None) -> str | None:
        """The thumbnail's path relative to the report folder (made if missing), or None if the
        image cannot be read. With `mask`, the background outside the object is dimmed."""
        try:
            name = self._name(path, "plain" if mask is None else "mask")
            target = self.folder.parent / name
            if target.is_file():
                self.reused += 1
                return name
            image = resize_center_crop(load_rgb(path, self.size), self.size)
            if mask is not None:
                image = dim_outside(image, mask)
            self.folder.mkdir(parents=True, exist_ok=True)
            # a temp name of this writer's own: two reports of one run at once never share one
            handle, temp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=self.folder)
            try:
                with os.fdopen(handle, "wb") as stream:
                    image.save(stream, format="JPEG", quality=80)
                os.replace(temp, target)
            finally:
                if os.path.exists(temp):
                    os.unlink(temp)
            self.made += 1
            return name
        except (OSError, ValueError):  # an image that cannot be shown (a bomb is an ImageTooLargeError) gets a placeholder
            return None


def dim_outside(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """The image with everything outside the (latent-sized) object mask darkened and tinted."""
    inside = np.asarray(Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255).resize(image.size, Image.Resampling.NEAREST)) > 0
    pixels = np.asarray(image, dtype=np.float32)
    dimmed = pixels * 0.3 + np.array([0, 0, 60], dtype=np.float32)
    return Image.fromarray(np.where(inside[..., None], pixels, dimmed).clip(0, 255).astype(np.uint8))
