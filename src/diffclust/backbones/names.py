"""Backbone names the command line needs before any model library is imported."""

SD15_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
TINY_RANDOM = "tiny-random"

#: built-in backbones, materialised on first use (see registry.BUILTIN_BUILDERS)
BUILTIN_BACKBONES: tuple[str, ...] = (TINY_RANDOM,)
