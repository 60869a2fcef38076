"""Sample grids from a pixel-space model with DDIM (classifier-free guidance for captions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler
from PIL import Image


@torch.no_grad()
def sample(unet, scheduler, shape: tuple[int, ...], generator: torch.Generator, context=None, empty_context=None,
           guidance: float = 3.0, steps: int = 50, clip: bool = True, show_progress: bool = False, desc: str = "sampling") -> torch.Tensor:
    """Samples of `shape` (batch, C, H, W), clipped to the image range [-1, 1] unless `clip` is
    off (latents of a VAE model); `context` (batch, L, D) conditions them. On a CPU a grid takes
    minutes, so it can show a progress bar."""
    from diffclust.engine.runtime import progress

    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(steps)
    parameter = next(unet.parameters())
    device = parameter.device
    images = torch.randn(shape, generator=generator).to(device, parameter.dtype)
    for timestep in progress(ddim.timesteps, enabled=show_progress, desc=desc, unit="step", leave=False):
        batch_t = torch.full((shape[0],), int(timestep), device=device, dtype=torch.long)
        if context is None:
            noise = unet(images, batch_t).sample
        else:
            both = unet(torch.cat([images, images]), torch.cat([batch_t, batch_t]),
                        encoder_hidden_states=torch.cat([context, empty_context.expand_as(context)])).sample
            conditional, unconditional = both.chunk(2)
            noise = unconditional + guidance * (conditional - unconditional)
        images = ddim.step(noise, timestep, images).prev_sample
    return images.clamp(-1, 1) if clip else images


def save_grid(images: torch.Tensor, rows: int, path: Path) -> Path:
    """(N, C, H, W) in [-1, 1] -> one PNG with `rows` rows."""
    images = ((images.float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    count, _, height, width = images.shape
    columns = int(np.ceil(count / rows))
    grid = np.full((rows * (height + 2), columns * (width + 2), 3), 255, dtype=np.uint8)
    for index in range(count):
        row, column = divmod(index, columns)
        grid[row * (height + 2) : row * (height + 2) + height, column * (width + 2) : column * (width + 2) + width] = images[index].permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path
