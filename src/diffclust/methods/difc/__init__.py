"""DiFiC: fine-grained clustering through proxy words of a text-to-image diffusion model."""

from diffclust.methods.difc.estimator import DiFiC

__all__ = ["DiFiC"]
