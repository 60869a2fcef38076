"""An unconditional diffusers UNet2DModel (a DDPM) as a DiffusionBackbone.

It has no text pathway: methods that need prompts (DiFiC) say so; methods that read
activations (DiEC, CLUDI features) use it like any other backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel

from diffclust.backbones.base import DiffusionBackbone, PromptEncoding, UNetPass, match_channels
from diffclust.backbones.capture import ActivationCapture
from diffclust.backbones.noise import SchedulerNoiseMixin
from diffclust.errors import BackboneNotFoundError, DiffclustError


class UnconditionalBackbone(SchedulerNoiseMixin, DiffusionBackbone):
    def __init__(self, unet: UNet2DModel, scheduler, reference: str = "custom"):
        self.unet = unet
        self.scheduler = DDPMScheduler.from_config(scheduler.config)
        self.reference = reference
        self.freeze()

    @classmethod
    def from_pretrained(cls, source: str | Path, device="cpu", dtype=torch.float32, reference: str | None = None) -> UnconditionalBackbone:
        try:
            unet = UNet2DModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype, local_files_only=True)
            scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", local_files_only=True)
        except (OSError, ValueError) as error:
            raise BackboneNotFoundError(f"Could not load the unconditional backbone folder '{source}': {error}") from error
        return cls(unet, scheduler, reference=reference or str(source)).to(device)

    def to(self, device) -> UnconditionalBackbone:
        self.unet.to(device)
        return self

    def freeze(self) -> UnconditionalBackbone:
        self.unet.requires_grad_(False)
        self.unet.eval()
        return self

    def denoiser(self) -> torch.nn.Module:
        return self.unet

    @property
    def resolution(self) -> int:
        size = self.unet.config.sample_size
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    @property
    def token_dim(self) -> int:
        raise DiffclustError(f"Backbone '{self.reference}' is unconditional (no text encoder): it has no proxy words. "
                             "Use a text-conditioned backbone for DiFiC.")

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        step = 2 ** (len(self.unet.config.block_out_channels) - 1)
        if resolution % step:
            raise DiffclustError(f"Resolution {resolution} must be a multiple of {step} for this backbone.")
        return int(self.unet.config.in_channels), resolution, resolution

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return match_channels(pixels.to(self.device, self.unet.dtype), int(self.unet.config.in_channels))

    def encode_prompt(self, prompt: str, batch_size: int, proxy: torch.Tensor | None = None) -> PromptEncoding:
        if prompt or proxy is not None:
            raise DiffclustError(f"Backbone '{self.reference}' is unconditional: it takes no prompt ('{prompt}').")
        return PromptEncoding(torch.zeros(batch_size, 0, 0, device=self.device), end_index=-1)

    def run_unet(self, noisy, timesteps, prompt, capture: Sequence[str] = (), attention_token=None, stop_after_capture=False) -> UNetPass:
        if attention_token is not None:
            raise DiffclustError(f"Backbone '{self.reference}' has no cross-attention, so no attention maps.")
        prediction = None
        with ActivationCapture(self.unet, capture, stop_after_capture and bool(capture)) as activations:
            prediction = self.unet(noisy.to(self.unet.dtype), timesteps.to(self.device)).sample
        return UNetPass(prediction, activations.outputs)
