"""What every diffclust estimator shares: the scikit-learn settings protocol, data and saving.

Each method (DiFiC, DiEC, CLUDI) keeps its settings as constructor arguments of the same name,
learns state in attributes ending in ``_``, and saves itself as ``<method>.json`` (settings and
shapes) beside ``<method>.safetensors`` (weights), so a run folder says which method made it.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np

from diffclust.backbones.base import DiffusionBackbone
from diffclust.backbones.registry import load_backbone
from diffclust.data.collection import ImageCollection, scan_images
from diffclust.engine.checkpoint import atomic_write_json, checkpoint_path
from diffclust.engine.runtime import make_accelerator
from diffclust.errors import DiffclustError

#: settings that are paths: saved as strings
PATH_SETTINGS = ("output_dir", "cache_dir")


class ClusteringEstimator:
    """Base of the estimators: get_params/set_params, fit_predict/predict, config files."""

    #: short name used in file names and the `method` field of the saved config
    method: str = ""
    #: an attribute that exists only once the model is fitted (or loaded)
    fitted_attribute: str = "labels_"
    #: version of the saved config's layout
    format_version: int = 1

    def _keep_settings(self, values: dict[str, Any]) -> None:
        """Store each constructor argument under its own name (call with locals() in __init__)."""
        for name in self._param_names():
            setattr(self, name, values[name])

    def _setting_problems(self) -> list[str]:
        """What is wrong with this method's own settings (each a short phrase); none by default."""
        return []

    def _check_settings(self) -> None:
        """One error naming every bad setting, K's and the method's own."""
        problems = []
        if not isinstance(self.n_clusters, int) or self.n_clusters < 2:
            problems.append(f"n_clusters (--k) must be an integer >= 2, got {self.n_clusters!r}")
        problems += self._setting_problems()
        if problems:
            raise DiffclustError(f"Invalid {type(self).__name__} settings: " + "; ".join(problems) + ".")

    def _require_samples(self, count: int, what: str) -> None:
        """K clusters need at least K items; `what` names them in the error."""
        if self.n_clusters > count:
            raise DiffclustError(f"n_clusters (--k) is {self.n_clusters} but only {count} {what}.")

    def _loaded_backbone(self) -> DiffusionBackbone:
        """The backbone for inference, loaded on first use (after `load`, only its reference is known)."""
        if not hasattr(self, "backbone_"):
            self.backbone_ = load_backbone(self.backbone, device=make_accelerator(self.device).device)
        return self.backbone_

    def _run_folder(self, resume: bool) -> Path | None:
        """output_dir as a Path; refuses a folder holding a run unless resuming (nothing is overwritten)."""
        if self.output_dir is None:
            return None
        run_dir = Path(self.output_dir)
        if not resume and checkpoint_path(run_dir).is_file():
            raise DiffclustError(
                f"{run_dir} already holds a run (checkpoint.pt). Pass resume=True (--resume) to continue it, "
                "or choose another output folder (--out): nothing is overwritten."
            )
        return run_dir

    @classmethod
    def _param_names(cls) -> list[str]:
        return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> "ClusteringEstimator":
        for name, value in params.items():
            if name not in self._param_names():
                raise DiffclustError(f"{type(self).__name__} has no setting '{name}'.")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        shown = {"n_clusters": getattr(self, "n_clusters", None), "backbone": self._backbone_reference(), "epochs": getattr(self, "epochs", None)}
        return f"{type(self).__name__}(" + ", ".join(f"{key}={value!r}" for key, value in shown.items() if value is not None) + ")"

    def _backbone_reference(self) -> str | None:
        backbone = getattr(self, "backbone", None)
        return backbone.reference if isinstance(backbone, DiffusionBackbone) else (None if backbone is None else str(backbone))

    def _collect(self, data) -> ImageCollection:
        if isinstance(data, ImageCollection):
            return data
        return scan_images(data, strict=getattr(self, "strict", False))

    def _check_fitted(self) -> None:
        if not hasattr(self, self.fitted_attribute):
            raise DiffclustError(f"This {type(self).__name__} model is not fitted yet: call fit(data) or "
                                 f"{type(self).__name__}.load(folder) first.")

    def fit_predict(self, data, y=None, resume: bool = False) -> np.ndarray:
        return self.fit(data, y, resume=resume).labels_

    def predict_with_confidence(self, data) -> tuple[np.ndarray, np.ndarray, ImageCollection]:
        raise NotImplementedError

    def predict(self, data) -> np.ndarray:
        """Cluster of each item in `data` with the fitted model."""
        return self.predict_with_confidence(data)[0]

    # ------------------------------------------------------------------ saved configs
    def saved_settings(self) -> dict[str, Any]:
        """Settings as JSON values: the backbone by its reference, paths as strings."""
        params = self.get_params()
        if "backbone" in params:
            params["backbone"] = self._backbone_reference()
        for key in PATH_SETTINGS:
            if key in params and params[key] is not None:
                params[key] = str(params[key])
        return params

    def write_config(self, folder: Path, state: dict[str, Any], settings: dict[str, Any] | None = None) -> Path:
        """<method>.json: which method, the layout version, the settings and the learned shapes."""
        return atomic_write_json(Path(folder) / self.config_name(), {
            "method": self.method, "format_version": self.format_version,
            "settings": self.saved_settings() if settings is None else settings, "state": state,
        })

    @classmethod
    def config_name(cls) -> str:
        return f"{cls.method}.json"

    @classmethod
    def weights_name(cls) -> str:
        return f"{cls.method}.safetensors"

    @classmethod
    def read_config(cls, folder: str | Path) -> dict[str, Any]:
        """The saved config of this method in `folder`, with a clear error if it is not there."""
        path = Path(folder) / cls.config_name()
        if not path.is_file():
            raise DiffclustError(f"'{folder}' holds no saved {cls.__name__} model ({cls.config_name()} missing). "
                                 "Is it a finished run folder of this method?")
        config = json.loads(path.read_text())
        if config.get("method") != cls.method:
            raise DiffclustError(f"{path} is not a {cls.__name__} model (method = {config.get('method')!r}).")
        return config

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "ClusteringEstimator":
        """An unfitted estimator with the saved settings (unknown keys from other versions ignored)."""
        return cls(**{key: value for key, value in settings.items() if key in cls._param_names()})
