"""CLUDI: a diffusion teacher-student over cluster-assignment embeddings, on any features."""

from diffclust.methods.cludi.estimator import CLUDI, PAPER_SETTINGS

__all__ = ["CLUDI", "PAPER_SETTINGS"]
