"""Pretraining compact diffusion backbones (text-conditioned or unconditional)."""

from diffclust.pretrain.classifier import diffusion_classifier_accuracy
from diffclust.pretrain.settings import PretrainSettings
from diffclust.pretrain.trainer import Pretrainer

__all__ = ["PretrainSettings", "Pretrainer", "diffusion_classifier_accuracy"]
