"""Forward diffusion with a diffusers DDPM schedule, shared by every diffusers-based backbone."""

from __future__ import annotations

import torch

from diffclust.errors import DiffclustError


class SchedulerNoiseMixin:
    """add_noise / prediction_target / num_train_timesteps from `self.scheduler` (a DDPMScheduler)."""

    scheduler: object

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(latents, noise, timesteps.to(latents.device))

    def prediction_target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.scheduler.get_velocity(latents, noise, timesteps.to(latents.device))
        if kind == "sample":
            return latents
        raise DiffclustError(f"Unsupported prediction_type '{kind}' in the scheduler config.")
