"""What every diffclust estimator shares: scikit-learn's estimator protocol, data and saving.

Each method (DiFiC, DiEC, CLUDI) is a scikit-learn clusterer (``BaseEstimator``,
``ClusterMixin``, and ``TransformerMixin`` for ``transform``: ``clone``, ``get_params``,
pipelines and the default repr work). It keeps its settings as constructor arguments of the
same name, learns state in attributes ending in ``_``, and saves itself as ``<method>.json``
(settings and shapes) beside ``<method>.safetensors`` (weights), so a run folder says which
method made it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.exceptions import NotFittedError

from diffclust.backbones.base import DiffusionBackbone
from diffclust.backbones.registry import load_backbone
from diffclust.cluster.k_selection import CRITERIA, choose_k, write_k_selection
from diffclust.cluster.start_choice import choose_against_start, neighbour_share
from diffclust.data.collection import FROM_FOLDERS, ImageCollection, collect_images
from diffclust.engine.atomic import read_json_object
from diffclust.engine.checkpoint import CHECKPOINT_NAME, atomic_save_array, atomic_write_json, checkpoint_path, damaged
from diffclust.engine.run_lock import RunFolderLock, remove_if_only_locks
from diffclust.engine.runtime import is_main_launch_process, make_accelerator, writable_folder
from diffclust.engine.timing import StageTimer
from diffclust.errors import DiffclustError, library_reason, setting_label
from diffclust.outputs import ASSIGNMENTS_NAME, RUN_SUMMARY_NAME, read_assignment_rows, write_run_summary

logger = logging.getLogger(__name__)


class NotFittedYetError(DiffclustError, NotFittedError):
    """predict/transform/save before fit: a user error (exit code 2 in the CLI) that
    scikit-learn also recognises as NotFittedError."""


#: settings that are paths: saved as strings
PATH_SETTINGS = ("output_dir", "cache_dir")
#: what a finished run leaves in its folder, and what any started run does
FINISHED_RUN_FILES = (ASSIGNMENTS_NAME, RUN_SUMMARY_NAME, "difc.json", "diec.json", "cludi.json")
RUN_ARTEFACTS = (CHECKPOINT_NAME, *FINISHED_RUN_FILES, "cache", "search.json")
#: the representation each method clustered (DiFiC: proxy words; DiEC: embeddings; CLUDI: features)
EMBEDDING_NAME = "embedding.npy"
REFIT = "fit again into a new output folder, or restore the run's files from a copy"
#: images checked, and the mean distance of a pixel from its grey (0-255) above which an image counts as colour
GREY_PROBE_IMAGES, GREY_TOLERANCE = 16, 6.0
#: settings renamed since earlier releases: old saved name -> current name
RENAMED_SETTINGS = {"seed": "random_state"}


def pretrain_then_diec(data, n_clusters) -> str:
    """The two commands that give a user's own images a backbone of their own, and cluster them
    with the method an unconditional model serves (DiEC)."""
    data = shlex.quote(str(data))
    return (f"`diffclust pretrain {data} --out my-ddpm --unconditional`, then "
            f"`diffclust fit {data} --method diec --backbone my-ddpm --k {n_clusters}`")


@contextmanager
def messages_in_python(show: bool):
    """diffclust's INFO lines (the search's pick, K chosen, the time left) on stderr during a fit
    from Python, as on the command line, when progress is shown and nobody configured logging:
    a program that set up its own logging keeps it, and progress=False keeps a fit quiet."""
    package = logging.getLogger("diffclust")
    if not show or package.handlers or logging.getLogger().handlers:
        yield
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    level = package.level
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)


def _epochs_finished(run_dir: Path) -> int | None:
    """The epochs of the finished run in `run_dir` (from its run.json), or None."""
    return (read_json_object(run_dir / RUN_SUMMARY_NAME) or {}).get("epochs")


def _holds_something(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


#: parameters every estimator shares, documented once: a class docstring's "{k_parameters}" and
#: "{run_parameters}" lines become these (numpydoc, indented for a class docstring)
SHARED_PARAMETER_DOCS = {
    "{k_parameters}": """n_clusters : int or "auto", default=10
        K, or "auto" to choose it without labels (see ``k_range`` and ``k_criterion``).
    k_range : (int, int), optional
        The K searched by "auto" (default 2 to N/5, at most 100).
    k_criterion : str, default="umap_hdbscan" (CLUDI: "silhouette")
        The label-free criterion "auto" maximises: "silhouette", "calinski_harabasz",
        "davies_bouldin", "bic", "prediction_strength", "umap_silhouette", "knn_modularity" or
        "umap_hdbscan" (the K nearest the clusters HDBSCAN finds in UMAP embeddings; the
        default of DiEC and DiFiC, which came nearer the true K on digits than silhouette).""",
    "{run_parameters}": """device : {"auto", "cpu", "cuda", "mps"}, default="auto"
        Where to run; "auto" takes a GPU when there is one.
    random_state : int, default=0
        The seed of every random choice; the same seed gives the same clusters on a CPU.
    output_dir : str or Path, optional
        A run folder for checkpoints, the metrics log, assignments and the model; ``fit(...,
        resume=True)`` continues it. Without one, nothing is written but caches.
    num_workers : int, default=0
        Image-loading worker processes.
    strict : bool, default=False
        Stop with an error on an unreadable image instead of skipping and listing it.
    folder_labels : bool, default=True
        Read a folder of sub-folders as one class per sub-folder (labels only score); False
        reads it as unlabelled.
    progress : bool, default=True
        Progress bars.""",
}


class ClusteringEstimator(ClusterMixin, TransformerMixin, BaseEstimator):
    """Base of the estimators: scikit-learn's protocol, input collection, config files."""

    #: short name used in file names and the `method` field of the saved config
    method: str = ""
    #: an attribute that exists only once the model is fitted (or loaded)
    fitted_attribute: str = "labels_"
    #: version of the saved config's layout
    format_version: int = 1
    #: True when the estimator clusters rows of a feature matrix (CLUDI); DiFiC and DiEC take images
    takes_feature_matrix: bool = False

    def __init_subclass__(cls, **kwargs):
        """Fill the shared parameter docs into the subclass's docstring (see SHARED_PARAMETER_DOCS)."""
        super().__init_subclass__(**kwargs)
        if cls.__doc__:
            for placeholder, text in SHARED_PARAMETER_DOCS.items():
                cls.__doc__ = cls.__doc__.replace("    " + placeholder, "    " + text)

    def __sklearn_tags__(self):
        """Clusterers, seeded (deterministic); image methods do not take 2-D feature matrices."""
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.input_tags.two_d_array = self.takes_feature_matrix
        tags.input_tags.three_d_array = not self.takes_feature_matrix  # image arrays (N, H, W[, C]) and folders
        return tags

    def _keep_settings(self, values: dict[str, Any]) -> None:
        """Store each constructor argument under its own name (call with locals() in __init__)."""
        for name in self._get_param_names():
            setattr(self, name, values[name])

    def _setting_problems(self) -> list[str]:
        """What is wrong with this method's own settings (each a short phrase); none by default."""
        return []

    def _shared_setting_problems(self) -> list[str]:
        """Checks of the settings every method has, so a bad value stops a run before any work."""
        problems = []

        def whole(name: str, low: int, none_ok: bool = False) -> None:
            value = getattr(self, name)
            if none_ok and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                problems.append(f"{setting_label(name)} must be an integer >= {low}, got {value!r}")

        whole("random_state", 0)
        whole("epochs", 0)
        whole("batch_size", 1)
        whole("num_workers", 0)
        whole("resolution", 1, none_ok=True)
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            problems.append(f"{setting_label('lr')} must be a finite number > 0, got {self.lr!r}")
        return problems

    def _check_for_backbone(self, backbone: DiffusionBackbone, resolution: int, **timesteps) -> None:
        """Settings only the backbone can judge (timesteps within its T, a resolution its UNet
        takes), checked as soon as it is loaded and before any image is encoded."""
        last = backbone.num_train_timesteps - 1
        problems = [f"{setting_label(name)} must be within 0..{last} for this backbone (T = {last + 1}), got {value}"
                    for name, value in timesteps.items() if isinstance(value, int) and not 0 <= value <= last]
        if problems:
            raise DiffclustError(f"Invalid {type(self).__name__} settings: " + "; ".join(problems) + ".")
        backbone.latent_shape(resolution)  # raises for a resolution the UNet cannot take

    def _check_images_for_backbone(self, collection: ImageCollection, backbone: DiffusionBackbone, resolution: int) -> None:
        """A grey pixel-space model (such as usps-ddpm, 16 px digits) knows nothing of colour
        photos: refuse them with the reason, before any pass is spent on them."""
        if getattr(backbone, "vae", None) is not None or backbone.latent_shape(resolution)[0] != 1 or not collection.records:
            return
        sample = collection.records[:: max(1, len(collection.records) // GREY_PROBE_IMAGES)][:GREY_PROBE_IMAGES]
        colourful, sizes = [], []
        for record in sample:
            image = record.rgb(resolution)
            sizes.append(min(image.size))
            pixels = np.asarray(image.resize((32, 32)), dtype=np.float32)
            if np.abs(pixels - pixels.mean(axis=2, keepdims=True)).mean() > GREY_TOLERANCE:
                colourful.append(record.file)
        if len(colourful) * 2 > len(sample):
            raise DiffclustError(
                f"The backbone '{backbone.reference}' is a one-channel model at {backbone.resolution} px (grey images such as "
                f"digits), but these are colour images (e.g. '{colourful[0]}', {len(colourful)} of the {len(sample)} checked). "
                "Use a backbone that knows photos (--backbone with Stable Diffusion v1.5), or pretrain one on these images "
                f"and cluster with DiEC: {pretrain_then_diec(collection.root, self.n_clusters)}.")
        if colourful:
            logger.warning("%d of the %d images checked are in colour (e.g. '%s'), but the backbone '%s' sees grey: they are "
                           "clustered by their grey values and their colour is lost. If they do not belong with the others, "
                           "move them out of the data.", len(colourful), len(sample), colourful[0], backbone.reference)
        if sizes and min(sizes) > 8 * backbone.resolution:
            logger.warning("These images (%d px and more) are shrunk to the backbone's %d px: fine detail is lost.", min(sizes),
                           backbone.resolution)

    def _check_settings(self) -> None:
        """One error naming every bad setting, K's and the method's own."""
        problems = []
        if self.n_clusters == "auto":  # K chosen without labels, see cluster.k_selection
            if self.k_criterion not in CRITERIA:
                problems.append(f"k_criterion (--k-criterion) must be one of {', '.join(CRITERIA)}, got {self.k_criterion!r}")
            if self.k_range is not None and not (len(self.k_range) == 2 and 2 <= self.k_range[0] <= self.k_range[1]):
                problems.append(f"k_range (--k-range) must be (MIN, MAX) with 2 <= MIN <= MAX, got {self.k_range!r}")
        elif isinstance(self.n_clusters, bool) or not isinstance(self.n_clusters, (int, np.integer)) or self.n_clusters < 2:
            problems.append(f"n_clusters (--k) must be an integer >= 2 or 'auto', got {self.n_clusters!r}")
        problems += self._shared_setting_problems()
        problems += self._setting_problems()
        if problems:
            raise DiffclustError(f"Invalid {type(self).__name__} settings: " + "; ".join(problems) + ".")

    def _require_samples(self, count: int, what: str) -> None:
        """K clusters need at least K items; `what` names them in the error."""
        if self.n_clusters != "auto" and self.n_clusters > count:
            raise DiffclustError(f"n_clusters (--k) is {self.n_clusters} but only {count} {what}.")

    def _resolve_k(self, features, run_dir: Path | None, is_main: bool = True) -> int | None:
        """n_clusters_: the given K, or (n_clusters="auto") the K chosen without labels on
        `features`, with the criteria's curves written to k_selection.csv/.png in the run folder.
        With "auto" and no features yet (DiFiC before warm-up ends), n_clusters_ is None."""
        if self.n_clusters != "auto" or features is None:
            self.k_selection_ = None
            self.n_clusters_ = None if self.n_clusters == "auto" else int(self.n_clusters)
            return self.n_clusters_
        selection = choose_k(features, tuple(self.k_range) if self.k_range else None, self.k_criterion, self.random_state)
        self.k_selection_ = selection
        self.n_clusters_ = selection.k
        logger.info("Chose K = %d by %s over K = %d..%d (%d items scanned; curves in k_selection.csv/png).", selection.k,
                    selection.criterion, selection.candidates[0], selection.candidates[-1], selection.items)
        for name, words in selection.notes.items():
            logger.info("%s: %s.", name, words)
        if run_dir is not None and is_main:
            write_k_selection(run_dir, selection)
        return selection.k

    def _loaded_backbone(self) -> DiffusionBackbone:
        """The backbone for inference, loaded on first use (after `load`, only its reference is known)."""
        if not hasattr(self, "backbone_"):
            self.backbone_ = load_backbone(self.backbone, device=make_accelerator(self.device).device, progress=self.progress)
        return self.backbone_

    def _trainer_params(self, data_identity: str, resolution: int | None, **extra) -> dict[str, Any]:
        """The settings a trainer reads, with the run's identity (data, backbone reference,
        resolution in effect), which a resume must match."""
        k = self.n_clusters if self.n_clusters_ is None else self.n_clusters_  # "auto" until chosen
        return {**self.get_params(deep=False), "n_clusters": k, "data": data_identity,
                "backbone": self._backbone_reference(), "resolution": resolution, **extra}

    def _finish_run(self, run_dir: Path | None, accelerator, timer: StageTimer, embedding: np.ndarray | None = None) -> None:
        """Keep the stage times (timings_); write run.json and, for the report's map, the
        representation that was clustered (embedding.npy, fp16) (main process); wait for the others."""
        self.timings_ = timer.rounded()
        if run_dir is not None and accelerator.is_main_process:
            if embedding is not None:
                atomic_save_array(run_dir / EMBEDDING_NAME, np.asarray(embedding, dtype=np.float16))
            if self._finished_before != getattr(self, "epochs", None):  # a finished run resumed with no new epoch keeps its times
                write_run_summary(run_dir, self.method, self._backbone_reference(), str(accelerator.device), self.timings_, timer.total,
                                  processes=accelerator.num_processes, items=len(self.labels_), n_clusters=self.n_clusters_,
                                  data=self.data_reference_, epochs=getattr(self, "epochs", None),
                                  **({"start_agreement": round(self.start_agreement_, 4)} if getattr(self, "start_agreement_", None) is not None else {}),
                                  **({"kept_partition": self.kept_partition_} if getattr(self, "kept_partition_", None) else {}))
        logger.debug("%s stages (s): %s", type(self).__name__, self.timings_)
        accelerator.wait_for_everyone()

    def _check_against_start(self, trainer, start: np.ndarray | None, neighbours: Callable[[], np.ndarray]) -> None:
        """Keep the start partition in place of the trained one (labels_) when training moved far
        from it and the start follows the data's neighbourhoods better (start_margin); the
        metrics log gets a row when the two were compared. Sets start_agreement_ and
        kept_partition_ ("trained", with no agreement, when there is no `start`). `neighbours`
        gives the kNN table, searched only when there is a start to compare."""
        self.start_agreement_, self.kept_partition_ = None, "trained"
        if start is None:
            return
        started = time.perf_counter()
        neighbours = neighbours()
        choice = choose_against_start(neighbours, start, self.labels_, self.start_margin)
        self.start_agreement_, self.kept_partition_ = choice.agreement, choice.kept
        if choice.kept == "start":
            self.labels_ = np.asarray(start).copy()
            self.confidence_ = neighbour_share(neighbours, self.labels_).astype(np.float32)
        if choice.modularity is not None:
            epoch = max(record.get("epoch", 0) for record in trainer.log.records) + 1 if trainer.log.records else self.epochs + 1
            trainer.log_record({"epoch": epoch, "phase": f"kept the {choice.kept} partition", **choice.record()}, self.labels_, started)

    def fit(self, X, y=None, resume: bool = False) -> ClusteringEstimator:
        """Cluster `X` (images for DiFiC and DiEC; features or images for CLUDI) and return self.

        `y` is never trained on: labels (given, or found in the data) only score the clusters.
        `resume` continues the interrupted run in `output_dir`. The run folder is checked
        first (a folder, writable, not holding another run) and locked for the whole fit, so a
        second writer is refused instead of corrupting this one.
        """
        with messages_in_python(bool(getattr(self, "progress", False))):
            return self._fit_in_folder(X, y, resume)

    def _fit_in_folder(self, X, y, resume: bool) -> ClusteringEstimator:
        self._check_settings()
        self._finished_before = None
        self.data_reference_ = str(Path(X).expanduser().resolve()) if isinstance(X, (str, os.PathLike)) else None
        if self.output_dir is None:
            self._fit(X, y, None, resume)
            return self
        existed = Path(self.output_dir).expanduser().exists()
        run_dir = writable_folder(self.output_dir, "output_dir (--out)")
        try:
            with RunFolderLock(run_dir) if is_main_launch_process() else nullcontext():
                self._refuse_existing_run(run_dir, resume)
                self._finished_before = _epochs_finished(run_dir) if resume else None
                self._fit(X, y, run_dir, resume)
        except BaseException:
            if not existed:
                remove_if_only_locks(run_dir)  # a run that never started leaves no folder behind
            raise
        return self

    def _fit(self, X, y, run_dir: Path | None, resume: bool) -> None:
        raise NotImplementedError

    def _refuse_existing_run(self, run_dir: Path, resume: bool) -> None:
        """Nothing is overwritten: a folder holding a run (finished, or interrupted with a checkpoint
        or a cache) needs resume=True; a finished run without a checkpoint cannot be resumed."""
        found = [name for name in RUN_ARTEFACTS if _holds_something(run_dir / name)]  # an empty cache/ is no run
        if not resume and found:
            raise DiffclustError(
                f"{run_dir} already holds a run ({', '.join(found)}): nothing is overwritten. To continue it, run the same "
                "command with --resume (resume=True in Python); to start afresh, choose another --out (output_dir) "
                "or delete that folder first."
            )
        finished = [name for name in found if name in FINISHED_RUN_FILES]
        if resume and finished and not checkpoint_path(run_dir).is_file():
            raise DiffclustError(f"{run_dir} holds a finished run ({', '.join(finished)}) but no checkpoint.pt to resume from; "
                                 "choose another output folder (--out): nothing is overwritten.")

    def _backbone_reference(self) -> str | None:
        backbone = getattr(self, "backbone", None)
        return backbone.reference if isinstance(backbone, DiffusionBackbone) else (None if backbone is None else str(backbone))

    def _training_collection(self, data) -> ImageCollection:
        """The images to fit on; says where any labels came from (they only score the clusters)."""
        collection = self._collect(data)
        self.label_source_ = collection.describe_labels()
        if collection.label_source == FROM_FOLDERS:
            logger.info("Labels from %s: used only to score the clusters (folder_labels=False, --no-folder-labels, "
                        "reads the folders as unlabelled).", self.label_source_)
        return collection

    def _collect(self, data) -> ImageCollection:
        """Any image input (folder, labels.csv, image files, PIL images, arrays) as a collection."""
        return collect_images(data, strict=self.strict, folder_labels=self.folder_labels)

    def _check_fitted(self) -> None:
        if not hasattr(self, self.fitted_attribute):
            raise NotFittedYetError(f"This {type(self).__name__} model is not fitted yet: call fit(data) or "
                                 f"{type(self).__name__}.load(folder) first.")

    def fit_predict(self, X, y=None, resume: bool = False) -> np.ndarray:
        """fit(X) and return labels_ (X: images for DiFiC and DiEC, features or images for CLUDI)."""
        return self.fit(X, y, resume=resume).labels_

    def predict_with_confidence(self, X) -> tuple[np.ndarray, np.ndarray, ImageCollection]:
        raise NotImplementedError

    def predict(self, X) -> np.ndarray:
        """Cluster of each item in `X` with the fitted model."""
        return self.predict_with_confidence(X)[0]

    def _restore_training_assignments(self, folder: Path) -> None:
        """After `load`: labels_, confidence_, files_ of the images the run was fitted on, from its
        assignments.csv (absent when only the model was saved)."""
        path = Path(folder) / ASSIGNMENTS_NAME
        if not path.is_file():
            return
        rows = [row for row in read_assignment_rows(path) if row["cluster"] != ""]
        self.files_ = [row["file"] for row in rows]
        self.labels_ = np.array([int(row["cluster"]) for row in rows], dtype=np.int64)
        self.confidence_ = np.array([float(row["confidence"]) for row in rows], dtype=np.float64)

    # ------------------------------------------------------------------ saved configs
    def saved_settings(self) -> dict[str, Any]:
        """Settings as JSON values: the backbone by its reference, paths as strings."""
        params = self.get_params(deep=False)
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
            "settings": self.saved_settings() if settings is None else settings,
            "state": {"n_clusters": self.n_clusters_, **state},
        })

    @classmethod
    def config_name(cls) -> str:
        return f"{cls.method}.json"

    @classmethod
    def weights_name(cls) -> str:
        return f"{cls.method}.safetensors"

    @classmethod
    def read_config(cls, folder: str | Path) -> dict[str, Any]:
        """The saved config of this method in `folder`, with a clear error if it is not there or broken."""
        path = Path(folder) / cls.config_name()
        if not path.is_file():
            raise DiffclustError(f"'{folder}' holds no saved {cls.__name__} model ({cls.config_name()} missing). "
                                 "Is it a finished run folder of this method?")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise damaged(Path(folder), f"{path.name} is not valid JSON ({error})", REFIT) from None
        if not isinstance(config, dict) or not isinstance(config.get("settings"), dict) or not isinstance(config.get("state"), dict):
            raise damaged(Path(folder), f"{path.name} is not a diffclust model config (no 'settings' and 'state' objects)", REFIT)
        if config.get("method") != cls.method:
            raise DiffclustError(f"{path} is not a {cls.__name__} model (method = {config.get('method')!r}).")
        return config

    @classmethod
    def load(cls, folder: str | Path, backbone: str | DiffusionBackbone | None = None, device: str | None = None):
        """A fitted model from `save` (or a run folder); `backbone` overrides the saved reference
        (e.g. when the SD folder has moved). A run folder also restores labels_, files_ and
        confidence_ of the fit. A folder whose files are broken is a clear error."""
        folder = Path(folder)
        config = cls.read_config(folder)
        try:
            model = cls.from_settings(config["settings"])
            if backbone is not None:
                model.backbone = backbone
            if device is not None:
                model.device = device
            state = config["state"]
            model.n_clusters_ = int(state.get("n_clusters", model.n_clusters))
            model._restore(state, folder)
            model._restore_training_assignments(folder)
        except DiffclustError:
            raise
        except Exception as error:  # missing or truncated weights, wrong types or shapes in the config
            raise damaged(folder, f"its saved {cls.__name__} model cannot be read ({library_reason(error, 300)})",
                          REFIT) from None
        return model

    def _restore(self, state: dict[str, Any], folder: Path) -> None:
        """Set the fitted attributes from the saved config's state and the weights in `folder`."""
        raise NotImplementedError

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> ClusteringEstimator:
        """An unfitted estimator with the saved settings (renamed keys mapped, unknown keys from
        other versions ignored)."""
        settings = {RENAMED_SETTINGS.get(key, key): value for key, value in settings.items()}
        return cls(**{key: value for key, value in settings.items() if key in cls._get_param_names()})
