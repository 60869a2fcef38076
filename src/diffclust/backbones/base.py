"""The backbone protocol: what every diffusion clustering method asks of a diffusion model.

DiFiC, DiEC and CLUDI talk to backbones only through this interface, so a new kind of model
(SD-1.x, a pixel-space compact model, an unconditional DDPM, or a closed-form model in a test)
plugs in by implementing these few operations.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from diffclust.errors import DiffclustError

PLACEHOLDER = "S*"
"""Marks where the proxy word goes in a prompt template, as in the paper's "A photo of a S*"."""


def match_channels(pixels: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB pixels -> what a pixel-space model takes: luminance (ITU-R 601) for 1 channel."""
    if channels == pixels.shape[1]:
        return pixels
    if channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=pixels.dtype, device=pixels.device)
        return (pixels * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    raise ValueError(f"Cannot feed {pixels.shape[1]}-channel images to a {channels}-channel model.")


@dataclass
class PromptEncoding:
    """A batch of encoded prompts and the positions of the tokens methods care about."""

    embeddings: torch.Tensor  # (batch, sequence, context_dim): the UNet's cross-attention context
    end_index: int  # position of the end-of-text token
    placeholder_index: int | None = None  # position of the proxy word, if the prompt has one


@dataclass
class UNetPass:
    """What one UNet call returned: the prediction (None if stopped early), captures, attention."""

    prediction: torch.Tensor | None
    activations: dict[str, torch.Tensor]
    attention: torch.Tensor | None = None  # (batch, latent_h, latent_w), mean over heads and layers


class DiffusionBackbone(ABC):
    """A frozen diffusion model seen through the operations clustering methods need."""

    #: how the backbone was referred to (name, folder or hub id), so a saved model can reload it
    reference: str = "unknown"

    @property
    @abstractmethod
    def resolution(self) -> int:
        """Native image size in pixels."""

    @property
    @abstractmethod
    def num_train_timesteps(self) -> int:
        """T: the number of diffusion steps of the noise schedule."""

    @property
    @abstractmethod
    def token_dim(self) -> int:
        """Size of one prompt token embedding: the size of a proxy word."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the backbone's weights live."""

    @abstractmethod
    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        """(channels, height, width) of the latent of an image of `resolution` pixels."""

    @abstractmethod
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], (batch, 3, H, W) -> latents the UNet works on."""

    @abstractmethod
    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Forward diffusion q(x_t | x_0) with the model's own noise schedule."""

    @abstractmethod
    def prediction_target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the UNet is trained to predict (noise, velocity or sample)."""

    @abstractmethod
    def encode_prompt(self, prompt: str, batch_size: int, proxy: torch.Tensor | None = None) -> PromptEncoding:
        """Encode `prompt` for a batch; `proxy` (batch, token_dim) replaces the PLACEHOLDER token."""

    @abstractmethod
    def run_unet(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        prompt: PromptEncoding,
        capture: Sequence[str] = (),
        attention_token: int | None = None,
        stop_after_capture: bool = False,
    ) -> UNetPass:
        """One UNet call, capturing the outputs of the named modules and, if asked, the
        cross-attention probabilities of one prompt token (averaged over heads and layers)."""

    def denoiser(self) -> torch.nn.Module:
        """The UNet itself: DiEC lists its blocks and can fine-tune it."""
        raise DiffclustError(f"Backbone '{self.reference}' exposes no UNet module.")

    def freeze(self) -> DiffusionBackbone:
        """Backbones are frozen by default: methods train their own modules around them."""
        return self

    def prepare_training(self, options) -> None:
        """Run the training passes as `options` (a resolved backbones.efficiency.TrainingEfficiency)
        say: lower-precision weights, checkpointing, offloading. Backbones without such
        machinery (closed-form test models) run as they are."""

    def finish_training(self) -> None:
        """Undo `prepare_training` (full-precision weights, VAE back on the device) for prediction."""
