"""DiEC: clustering on the clustering-optimal layer x timestep of a diffusion UNet."""

from diffclust.methods.diec.estimator import PAPER_SETTINGS, DiEC

__all__ = ["DiEC", "PAPER_SETTINGS"]
