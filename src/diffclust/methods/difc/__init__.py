"""DiFiC: fine-grained clustering through proxy words of a text-to-image diffusion model."""

from diffclust.methods.difc.estimator import PAPER_SETTINGS, DiFiC

__all__ = ["PAPER_SETTINGS", "DiFiC"]
