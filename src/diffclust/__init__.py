"""diffclust: cluster images without labels using pretrained diffusion models."""

from diffclust.backbones import DiffusionBackbone, load_backbone
from diffclust.cluster.metrics import clustering_scores, hungarian_accuracy, many_to_one_accuracy
from diffclust.data import scan_images
from diffclust.errors import DiffclustError
from diffclust.methods import CLUDI, DiEC, DiFiC

__version__ = "0.1.0"

__all__ = [
    "CLUDI",
    "DiEC",
    "DiFiC",
    "DiffclustError",
    "DiffusionBackbone",
    "clustering_scores",
    "hungarian_accuracy",
    "load_backbone",
    "many_to_one_accuracy",
    "scan_images",
]
