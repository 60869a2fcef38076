"""A picture of each DiFiC cluster: the text-to-image model's own sample for "A photo of a S*",
with S* the cluster's mean proxy word (few DDIM steps, classifier-free guidance)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from diffclust.backbones.base import DiffusionBackbone
from diffclust.pretrain.sampling import sample
from diffclust.seeding import make_generator


@torch.no_grad()
def generate_prototypes(backbone: DiffusionBackbone, proxies: torch.Tensor, prompt_template: str, resolution: int,
                        steps: int = 20, guidance: float = 3.0, seed: int = 0, chunk: int = 8) -> list[Image.Image]:
    """One image per row of `proxies` (K, token_dim), in order."""
    empty = backbone.encode_prompt("", 1).embeddings
    images = []
    for part in proxies.split(chunk):
        context = backbone.encode_prompt(prompt_template, len(part), proxy=part.to(backbone.device)).embeddings
        latents = sample(backbone.denoiser(), backbone.scheduler, (len(part), *backbone.latent_shape(resolution)),
                         make_generator(seed), context, empty, guidance, steps, clip=False)
        pixels = ((backbone.decode_latents(latents).cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        images += [Image.fromarray(np.ascontiguousarray(item.permute(1, 2, 0).numpy())) for item in pixels]
    return images
