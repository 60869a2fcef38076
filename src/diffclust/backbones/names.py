"""Backbone names the command line needs before any model library is imported."""

SD15_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
TINY_RANDOM = "tiny-random"
USPS_DDPM = "usps-ddpm"
USPS_TEXT = "usps-text"

#: built-in backbones: tiny-random is built on first use, usps-ddpm and usps-text ship inside the
#: package (see registry.BUILTIN_BUILDERS)
BUILTIN_BACKBONES: tuple[str, ...] = (USPS_DDPM, USPS_TEXT, TINY_RANDOM)
