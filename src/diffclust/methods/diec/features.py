"""DiEC's features: UNet activations at (layer, timestep), pooled to vectors, averaged over noise.

One UNet pass per noise draw captures every requested layer at once (forward hooks), so a
grid over L layers costs one pass per timestep, not L. Each image gets its own noise, seeded by
(seed, draw, a hash of the image's latent): noise is independent across images, as forward
diffusion has it (so high timesteps really do blur the clusters), yet an image's feature
depends on the image alone, so fit, search and predict read the same value whatever the batch.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from diffclust.backbones.base import DiffusionBackbone, PromptEncoding
from diffclust.backbones.capture import capturable_layers
from diffclust.data.collection import ImageCollection
from diffclust.data.dataset import ImageTensorDataset
from diffclust.engine.runtime import progress
from diffclust.errors import DiffclustError
from diffclust.seeding import make_generator

#: the UNet's own blocks (not their sub-modules): the default candidates of the search
_TOP_LEVEL_BLOCK = re.compile(r"^(down_blocks\.\d+|mid_block|up_blocks\.\d+)$")
BOTTLENECK = "mid_block"
#: latents are kept at half precision (SD: 4x64x64 per image), and read back as float32
LATENT_DTYPE = torch.float16


def _run_order(name: str) -> tuple[int, int]:
    kind, _, index = name.partition(".")
    return {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}[kind], int(index or 0)


def candidate_layers(backbone: DiffusionBackbone) -> list[str]:
    """The UNet's top-level blocks in the order they run: down_blocks.*, mid_block, up_blocks.*."""
    return sorted((name for name in capturable_layers(backbone.denoiser()) if _TOP_LEVEL_BLOCK.match(name)), key=_run_order)


def pool_activation(activation: torch.Tensor, pool_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C * pool_size^2): adaptive average pooling, then flattening.

    pool_size 1 is global average pooling; larger sizes keep a coarse layout (digits need it).
    """
    if activation.ndim != 4:
        raise DiffclustError(f"Expected a (batch, channels, height, width) activation, got shape {tuple(activation.shape)}.")
    return F.adaptive_avg_pool2d(activation.float(), pool_size).flatten(1)


def image_noise(latents: torch.Tensor, draw: int, seed: int) -> torch.Tensor:
    """Noise for each latent from a generator seeded by (seed, draw, hash of that latent)."""
    noise = []
    for latent in latents:
        digest = hashlib.blake2b(latent.detach().to(LATENT_DTYPE).cpu().numpy().tobytes(), digest_size=8).digest()
        key = (int.from_bytes(digest, "little") + 1_000_003 * seed + 7_919 * draw) % 2**63
        noise.append(torch.randn(latent.shape, generator=make_generator(key)))
    return torch.stack(noise).to(latents.device, latents.dtype)


class LayerFeatureReader:
    """Pooled activations of several layers at one timestep, from the empty-prompt UNet."""

    def __init__(self, backbone: DiffusionBackbone, layers: Sequence[str], draws: int = 1, pool_size: int = 1, seed: int = 0):
        if not layers:
            raise DiffclustError("No layers to read: name at least one UNet block.")
        if draws < 1:
            raise DiffclustError(f"noise_draws must be >= 1, got {draws}.")
        self.backbone = backbone
        self.layers = list(dict.fromkeys(layers))
        self.draws = draws
        self.pool_size = pool_size
        self.seed = seed
        self._prompts: dict[int, PromptEncoding] = {}

    def prompt(self, batch: int) -> PromptEncoding:
        """The empty prompt for a batch: features are read unconditioned, as DiEC does."""
        if batch not in self._prompts:
            with torch.no_grad():
                self._prompts[batch] = self.backbone.encode_prompt("", batch)
        return self._prompts[batch]

    def one_draw(self, latents: torch.Tensor, timestep: int, draw: int | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Pooled features of every layer from one noise draw (keeps gradients: DiEC fine-tunes).

        `draw` picks the image's own seeded noise; without it, fresh noise comes from `generator`.
        """
        latents = latents.to(self.backbone.device).float()
        timesteps = torch.full((len(latents),), int(timestep), dtype=torch.long, device=latents.device)
        if draw is None:
            noise = torch.randn(latents.shape, generator=generator).to(latents.device)
        else:
            noise = image_noise(latents, draw, self.seed)
        noisy = self.backbone.add_noise(latents, noise, timesteps)
        run = self.backbone.run_unet(noisy, timesteps, self.prompt(len(latents)), capture=self.layers, stop_after_capture=True)
        return {layer: pool_activation(run.activations[layer], self.pool_size) for layer in self.layers}

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, timestep: int) -> dict[str, torch.Tensor]:
        """Pooled features of every layer, averaged over all noise draws."""
        total: dict[str, torch.Tensor] = {}
        for draw in range(self.draws):
            for layer, value in self.one_draw(latents, timestep, draw).items():
                total[layer] = value if layer not in total else total[layer] + value
        return {layer: value / self.draws for layer, value in total.items()}

    def read_all(self, latents: torch.Tensor, timestep: int, batch_size: int, show_progress: bool = False) -> dict[str, torch.Tensor]:
        """Features of every row of `latents` (N, C, H, W), batch by batch, on the CPU."""
        parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in self.layers}
        batches = torch.arange(len(latents)).split(batch_size)
        for rows in progress(batches, enabled=show_progress, desc=f"features at t={timestep}", unit="batch", leave=False):
            for layer, value in self(latents[rows], timestep).items():
                parts[layer].append(value.cpu())
        return {layer: torch.cat(values) for layer, values in parts.items()}


@torch.no_grad()
def encode_collection(backbone: DiffusionBackbone, collection: ImageCollection, resolution: int, batch_size: int,
                      num_workers: int = 0, show_progress: bool = True) -> torch.Tensor:
    """Latents (N, C, H, W) of every image, in collection order, stored at half precision."""
    loader = DataLoader(ImageTensorDataset(collection, resolution), batch_size=batch_size, num_workers=num_workers)
    latents = [backbone.encode_images(pixels.to(backbone.device)).to(LATENT_DTYPE).cpu()
               for _, pixels in progress(loader, enabled=show_progress, desc="encoding images", unit="batch")]
    return torch.cat(latents)
