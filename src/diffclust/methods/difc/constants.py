"""Per-image constants of DiFiC, computed once and cached.

The latent, the feature z (block b at t-hat with the empty prompt and one noise tensor shared
by all images) and the object mask (t-tilde) never change while f and g train, so each is
computed once per image. They live in ``.npy`` files (memory-mapped when large), so a resumed
or repeated run reuses them; several processes each fill their own rows.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from torch.utils.data import DataLoader, Subset

from diffclust.backbones.base import DiffusionBackbone
from diffclust.data.collection import ImageCollection
from diffclust.data.dataset import ImageTensorDataset
from diffclust.data.images import PREPROCESSING_VERSION
from diffclust.data.names import name_bytes
from diffclust.engine.atomic import read_json_object
from diffclust.engine.checkpoint import atomic_write_json
from diffclust.engine.runtime import progress
from diffclust.errors import EnvironmentProblem
from diffclust.methods.difc.masks import object_masks

logger = logging.getLogger(__name__)

FEATURE_DTYPE = torch.float16  # z is stored at half precision: SD-1.5's z is 640 x 32 x 32 values per image
#: how each constant is stored on disk
CACHE_DTYPES = {"latents": np.float32, "features": np.float16, "masks": np.uint8, "feature_scales": np.float32}
#: the cache may take at most this share of the free disk space (the rest stays for checkpoints and outputs)
CACHE_DISK_SHARE = 0.95
META_NAME = "constants.json"


#: how z is stored: fp16, or int8 with one scale per image and channel (half the disk of fp16)
FEATURE_STORAGES = ("fp16", "int8")


def quantise_int8(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z (N, C, H, W) -> int8 codes and (N, C) scales, symmetric: each image's channel maps
    its largest |value| to 127, so the error is at most half a scale step."""
    scales = (z.float().abs().amax(dim=(2, 3)) / 127).clamp_min(1e-12)
    codes = torch.round(z.float() / scales[:, :, None, None]).clamp(-127, 127).to(torch.int8)
    return codes, scales


def as_cached_feature(z: torch.Tensor, storage: str = "fp16") -> torch.Tensor:
    """Round z as the cache does, so features computed at predict time match those of fit."""
    if storage == "int8":
        codes, scales = quantise_int8(z)
        return codes.float() * scales[:, :, None, None]
    return z.to(FEATURE_DTYPE).float()


@dataclass(frozen=True)
class ConstantSettings:
    """Everything that decides the constants' values (part of the cache fingerprint)."""

    resolution: int
    feature_layer: str
    feature_timestep: int
    mask_timestep: int
    mask_prompt: str
    with_masks: bool
    seed: int
    feature_storage: str = "fp16"


class ConstantComputer:
    """Computes latents, features and masks for a batch of images with a frozen backbone."""

    def __init__(self, backbone: DiffusionBackbone, settings: ConstantSettings, shared_noise: torch.Tensor):
        self.backbone = backbone
        self.settings = settings
        self.shared_noise = shared_noise.to(backbone.device)

    def _noised(self, latents: torch.Tensor, timestep: int) -> tuple[torch.Tensor, torch.Tensor]:
        timesteps = torch.full((len(latents),), timestep, dtype=torch.long, device=latents.device)
        noise = self.shared_noise.to(latents.dtype).expand_as(latents)
        return self.backbone.add_noise(latents, noise, timesteps), timesteps

    @torch.no_grad()
    def latents(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_images(pixels.to(self.backbone.device))

    @torch.no_grad()
    def features(self, latents: torch.Tensor) -> torch.Tensor:
        """z: the feature_layer output at feature_timestep, empty prompt, shared noise."""
        noisy, timesteps = self._noised(latents, self.settings.feature_timestep)
        prompt = self.backbone.encode_prompt("", len(latents))
        layer = self.settings.feature_layer
        run = self.backbone.run_unet(noisy, timesteps, prompt, capture=[layer], stop_after_capture=True)
        return as_cached_feature(run.activations[layer], self.settings.feature_storage)

    @torch.no_grad()
    def attention_maps(self, latents: torch.Tensor) -> torch.Tensor:
        """End-of-text token's cross-attention at mask_timestep, averaged over heads and layers."""
        noisy, timesteps = self._noised(latents, self.settings.mask_timestep)
        prompt = self.backbone.encode_prompt(self.settings.mask_prompt, len(latents))
        return self.backbone.run_unet(noisy, timesteps, prompt, attention_token=prompt.end_index).attention

    def masks(self, latents: torch.Tensor) -> torch.Tensor:
        return object_masks(self.attention_maps(latents), seed=self.settings.seed)

    def __call__(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        latents = self.latents(pixels)
        values = {"latents": latents.float(), "features": self.features(latents)}
        if self.settings.with_masks:
            values["masks"] = self.masks(latents)
        return values


class ConstantStore:
    """Read access to the cached arrays, one batch of rows at a time."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays["latents"])

    def has(self, name: str) -> bool:
        return name in self.arrays

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.arrays[name].shape[1:])

    def batch(self, name: str, indices: torch.Tensor | np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        rows = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices)
        values = torch.from_numpy(np.ascontiguousarray(self.arrays[name][rows]))
        if name == "features" and "feature_scales" in self.arrays:  # int8 codes: scale each image's channels
            values = values.float() * torch.from_numpy(np.ascontiguousarray(self.arrays["feature_scales"][rows]))[:, :, None, None]
        if torch.device(device).type == "cuda":  # pinned, so the copy runs beside the GPU's work
            return values.pin_memory().to(device, non_blocking=True).float()
        return values.float().to(device)

    def prefetch(self, names: list[str], batches: Iterable[torch.Tensor], device: torch.device | str) -> Iterator[dict[str, torch.Tensor]]:
        """Each batch's rows of `names`, read by a background thread one batch ahead, so disk
        reads (memory-mapped caches) overlap with the training step."""
        def read(indices):
            return {name: self.batch(name, indices, device) for name in names}

        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = None
            for indices in batches:
                upcoming = pool.submit(read, indices)
                if pending is not None:
                    yield pending.result()
                pending = upcoming
            if pending is not None:
                yield pending.result()


def fingerprint(backbone: DiffusionBackbone, collection: ImageCollection, settings: ConstantSettings) -> dict:
    """What the cached values depend on: settings, backbone, and each file's name, size and time."""
    listing = hashlib.sha256()
    for record in collection.records:
        listing.update(name_bytes(f"{record.file}\0{record.identity()}\n"))
    return {"settings": asdict(settings), "backbone": backbone.reference, "files": listing.hexdigest(), "count": len(collection),
            "preprocessing": PREPROCESSING_VERSION}


def check_cache_space(folder: Path, layout: dict[str, tuple[tuple[int, ...], type]]) -> int:
    """Say how large the cache will be, and refuse before writing when the disk cannot hold it."""
    sizes = {name: int(np.prod(shape)) * np.dtype(dtype).itemsize for name, (shape, dtype) in layout.items()}
    total = sum(sizes.values())
    count = next(iter(layout.values()))[0][0]
    free = shutil.disk_usage(folder).free
    logger.info("Constant cache for %d images: %s (%s per image: %s) in %s; %s free there.", count, _size(total),
                _size(total / max(count, 1)), ", ".join(f"{name} {_size(size)}" for name, size in sizes.items()), folder, _size(free))
    if total > free * CACHE_DISK_SHARE:
        raise EnvironmentProblem(f"The constant cache needs {_size(total)} for {count} images ({_size(total / max(count, 1))} each), "
                             f"but {folder} has {_size(free)} free. Point --cache-dir at a larger disk, or fit on fewer images "
                             "(or a lower --resolution).")
    return total


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000:
            return f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def _stored(values: dict[str, torch.Tensor], int8: bool) -> dict[str, torch.Tensor]:
    """The constants as the cache holds them: with int8 z, its codes and per-channel scales."""
    if int8:
        values = dict(values)
        values["features"], values["feature_scales"] = quantise_int8(values["features"])
    return values


def _cached_fingerprint(meta_path: Path) -> str | None:
    """The fingerprint a cache was written for; None when absent or damaged (then it is recomputed)."""
    if not meta_path.is_file():
        return None
    meta = read_json_object(meta_path)
    if meta is None:
        logger.warning("%s is damaged: the constants are computed again.", meta_path)
    return None if meta is None else meta.get("fingerprint")


def _open_store(folder: Path, names: list[str], in_memory_bytes: int) -> ConstantStore:
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in names}
    if sum(array.nbytes for array in arrays.values()) <= in_memory_bytes:
        arrays = {name: np.array(array) for name, array in arrays.items()}
    return ConstantStore(arrays)


def load_or_compute_constants(
    computer: ConstantComputer,
    collection: ImageCollection,
    folder: str | Path,
    accelerator: Accelerator,
    batch_size: int,
    num_workers: int = 0,
    show_progress: bool = True,
    in_memory_bytes: int = 4 << 30,
) -> ConstantStore:
    """Reuse the cache in `folder` if its fingerprint matches, else compute it (sharded)."""
    folder = Path(folder)
    int8 = computer.settings.feature_storage == "int8"
    names = ["latents", "features"] + (["masks"] if computer.settings.with_masks else []) + (["feature_scales"] if int8 else [])
    expected = fingerprint(computer.backbone, collection, computer.settings)
    meta_path = folder / META_NAME
    if _cached_fingerprint(meta_path) == expected:
        try:
            return _open_store(folder, names, in_memory_bytes)
        except (OSError, ValueError) as error:  # a damaged cache is only a cache: compute it again
            logger.warning("The constant cache in %s is damaged (%s): computing it again.", folder, error)

    dataset = ImageTensorDataset(collection, computer.settings.resolution)
    refusal = [None]  # the main process's refusal, handed to every process so none waits for it
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)
        probe = _stored(computer(dataset[0][1][None]), int8)  # shapes of every constant, from one image
        dtypes = {**CACHE_DTYPES, "features": np.int8} if int8 else CACHE_DTYPES
        layout = {name: ((len(dataset),) + tuple(probe[name].shape[1:]), dtypes[name]) for name in names}
        try:
            check_cache_space(folder, layout)
        except EnvironmentProblem as error:
            refusal[0] = str(error)
        else:
            for name, (shape, dtype) in layout.items():
                np.lib.format.open_memmap(folder / f"{name}.npy.partial", mode="w+", dtype=dtype, shape=shape).flush()
    if broadcast_object_list(refusal)[0] is not None:
        raise EnvironmentProblem(refusal[0])

    outputs = {name: np.load(folder / f"{name}.npy.partial", mmap_mode="r+") for name in names}
    mine = list(range(accelerator.process_index, len(dataset), accelerator.num_processes))
    loader = DataLoader(Subset(dataset, mine), batch_size=batch_size, num_workers=num_workers, shuffle=False)
    bar = progress(loader, accelerator, show_progress, desc="constants (latent, z, mask)", unit="batch")
    for indices, pixels in bar:
        values = _stored(computer(pixels), int8)
        rows = indices.numpy()
        for name in names:
            outputs[name][rows] = values[name].cpu().numpy().astype(outputs[name].dtype)
    for array in outputs.values():
        array.flush()
    del outputs
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for name in names:
            os.replace(folder / f"{name}.npy.partial", folder / f"{name}.npy")
        atomic_write_json(meta_path, {"fingerprint": expected})
    accelerator.wait_for_everyone()
    return _open_store(folder, names, in_memory_bytes)
