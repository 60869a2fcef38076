"""DiEC: clustering on the clustering-optimal layer x timestep of a diffusion UNet."""

from diffclust.methods.diec.estimator import DiEC

__all__ = ["DiEC"]
