"""Clustering methods as scikit-learn-shaped estimators."""

from diffclust.methods.difc import DiFiC

__all__ = ["DiFiC"]
