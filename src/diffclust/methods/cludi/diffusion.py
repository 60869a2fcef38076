"""Diffusion over assignment embeddings: forward noising and stochastic DDIM sampling (x0-prediction)."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler

from diffclust.methods.cludi.network import CLUDINetwork


class EmbeddingDiffusion:
    """T-step schedule whose model predicts the clean sample; DDIM with eta for sampling."""

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear"):
        self.config = dict(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, prediction_type="sample",
                           clip_sample=False, set_alpha_to_one=True)
        self.training = DDIMScheduler(**self.config)

    @property
    def num_train_timesteps(self) -> int:
        return self.config["num_train_timesteps"]

    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.training.add_noise(clean, noise, timesteps)

    @torch.no_grad()
    def sample(self, network: CLUDINetwork, features: torch.Tensor, steps: int, eta: float, generator: torch.Generator,
               self_conditioning: bool = True) -> torch.Tensor:
        """Clean embeddings for `features` by `steps` DDIM steps from pure noise; each step's x0
        prediction is the next step's self-conditioning input."""
        scheduler = DDIMScheduler(**self.config)
        scheduler.set_timesteps(steps)
        batch, dim = len(features), network.denoiser.embedding_dim
        sample = torch.randn((batch, dim), generator=generator).to(features.device)
        estimate = torch.zeros_like(sample)
        for timestep in scheduler.timesteps:
            timesteps = torch.full((batch,), int(timestep), device=features.device, dtype=torch.long)
            prediction = network.denoiser(sample, timesteps, features, estimate if self_conditioning else torch.zeros_like(sample))
            noise = torch.randn(sample.shape, generator=generator).to(features.device)
            sample = scheduler.step(prediction, timestep, sample, eta=eta, variance_noise=noise).prev_sample
            estimate = prediction
        return estimate
