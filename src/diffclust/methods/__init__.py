"""Clustering methods as scikit-learn estimators (loaded on first use)."""

from diffclust._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "CLUDI": "diffclust.methods.cludi",
    "DiEC": "diffclust.methods.diec",
    "DiFiC": "diffclust.methods.difc",
})

__all__ = ["CLUDI", "DiEC", "DiFiC"]
