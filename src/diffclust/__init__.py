"""diffclust: cluster images without labels using pretrained diffusion models.

Importing diffclust sets ``OMP_WAIT_POLICY=PASSIVE`` unless it is already set: with torch's
default (spinning) OpenMP threads, any other load on a CPU machine can make each step many times
slower. It only takes effect if diffclust is imported before torch (docs: Stable Diffusion and GPUs).
Public names are loaded on first use, so the command line starts in well under a second.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from diffclust._lazy import lazy_exports  # noqa: E402

__version__ = "0.1.0"

__getattr__, __dir__ = lazy_exports(__name__, {
    "CLUDI": "diffclust.methods.cludi",
    "DiEC": "diffclust.methods.diec",
    "DiFiC": "diffclust.methods.difc",
    "DiffclustError": "diffclust.errors",
    "DiffusionBackbone": "diffclust.backbones.base",
    "VisionEncoder": "diffclust.encoders.vision",
    "clustering_scores": "diffclust.cluster.metrics",
    "hungarian_accuracy": "diffclust.cluster.metrics",
    "load_backbone": "diffclust.backbones.registry",
    "many_to_one_accuracy": "diffclust.cluster.metrics",
    "scan_images": "diffclust.data.collection",
})

__all__ = [
    "CLUDI",
    "DiEC",
    "DiFiC",
    "DiffclustError",
    "DiffusionBackbone",
    "VisionEncoder",
    "clustering_scores",
    "hungarian_accuracy",
    "load_backbone",
    "many_to_one_accuracy",
    "scan_images",
]
