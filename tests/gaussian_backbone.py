"""A diffusion 'backbone' whose optimal denoiser is known in closed form.

Data model: the latent of an image is x0 ~ N(m(e), s^2 I) where the mean m(e) = W e is set by
the condition e (the proxy word). For x_t = sqrt(a) x0 + sqrt(1-a) eps, the optimal noise
prediction is E[eps | x_t] = sqrt(1-a) (x_t - sqrt(a) m) / (a s^2 + 1 - a). A proxy word that
minimises this denoiser's loss must therefore encode the image's own mean: DiFiC should
recover which component each image came from, while ignoring variation along directions the
condition cannot reach (the nuisance), which dominates the raw features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from diffclust.backbones.base import DiffusionBackbone, PromptEncoding, UNetPass


class GaussianMixtureBackbone(DiffusionBackbone):
    reference = "gaussian-closed-form"

    def __init__(self, token_dim: int = 32, latent_size: int = 6, spread: float = 0.1, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.latent_size = latent_size
        self.spread = spread
        self._token_dim = token_dim
        dims = 3 * latent_size * latent_size
        basis = torch.linalg.qr(torch.randn(dims, dims, generator=generator))[0]
        self.mixing = basis[:, :token_dim]  # orthonormal columns: the directions a condition can explain
        self.nuisance = basis[:, token_dim:]  # the rest: variation no proxy word can explain
        self.scheduler = DDPMScheduler(num_train_timesteps=1000)
        self.calls = {"features": 0, "denoise": 0}

    resolution = property(lambda self: 18)
    num_train_timesteps = property(lambda self: 1000)
    token_dim = property(lambda self: self._token_dim)
    device = property(lambda self: torch.device("cpu"))

    def latent_shape(self, resolution):
        return (3, self.latent_size, self.latent_size)

    def encode_images(self, pixels):
        return F.adaptive_avg_pool2d(pixels.float(), self.latent_size)

    def add_noise(self, latents, noise, timesteps):
        return self.scheduler.add_noise(latents, noise, timesteps)

    def prediction_target(self, latents, noise, timesteps):
        return noise

    def encode_prompt(self, prompt, batch_size, proxy=None):
        words = torch.zeros(batch_size, 1, self._token_dim) if proxy is None else proxy[:, None, :]
        return PromptEncoding(words, end_index=0, placeholder_index=None if proxy is None else 0)

    def run_unet(self, noisy, timesteps, prompt, capture=(), attention_token=None, stop_after_capture=False):
        if capture:  # the 'feature' is the noisy latent itself
            self.calls["features"] += 1
            return UNetPass(None, {name: noisy for name in capture})
        self.calls["denoise"] += 1
        alpha = self.scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1).to(noisy.dtype)
        mean = (prompt.embeddings[:, 0] @ self.mixing.T).view_as(noisy)
        prediction = (1 - alpha).sqrt() * (noisy - alpha.sqrt() * mean) / (alpha * self.spread**2 + 1 - alpha)
        attention = torch.ones(noisy.shape[0], *noisy.shape[-2:]) if attention_token is not None else None
        return UNetPass(prediction, {}, attention)
