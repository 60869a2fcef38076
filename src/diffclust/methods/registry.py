"""Which estimator a run folder holds, so `predict` works on a run of any method."""

from __future__ import annotations

from pathlib import Path

from diffclust.errors import DiffclustError
from diffclust.methods.base import ClusteringEstimator
from diffclust.methods.cludi import CLUDI
from diffclust.methods.diec import DiEC
from diffclust.methods.difc import DiFiC

METHODS: dict[str, type[ClusteringEstimator]] = {"difc": DiFiC, "diec": DiEC, "cludi": CLUDI}


def load_model(folder: str | Path, **overrides) -> ClusteringEstimator:
    """The fitted model saved in `folder`, whichever method made it."""
    folder = Path(folder)
    for estimator in METHODS.values():
        if (folder / estimator.config_name()).is_file():
            return estimator.load(folder, **overrides)
    names = ", ".join(estimator.config_name() for estimator in METHODS.values())
    raise DiffclustError(f"'{folder}' holds no saved model (none of {names}). Is it a finished `diffclust fit` run folder?")
