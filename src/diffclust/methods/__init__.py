"""Clustering methods as scikit-learn-shaped estimators."""

from diffclust.methods.cludi import CLUDI
from diffclust.methods.diec import DiEC
from diffclust.methods.difc import DiFiC

__all__ = ["CLUDI", "DiEC", "DiFiC"]
