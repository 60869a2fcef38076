"""Backbone names the command line needs before any model library is imported."""

SD15_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
TINY_RANDOM = "tiny-random"
USPS_DDPM = "usps-ddpm"

#: built-in backbones: tiny-random is built on first use, usps-ddpm ships inside the package (see registry.BUILTIN_BUILDERS)
BUILTIN_BACKBONES: tuple[str, ...] = (USPS_DDPM, TINY_RANDOM)
