"""CLUDI as a scikit-learn-shaped estimator over any features."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from diffclust.backbones.base import DiffusionBackbone
from diffclust.cluster.metrics import clustering_scores
from diffclust.data.collection import ImageCollection
from diffclust.engine.checkpoint import atomic_save_array, atomic_save_tensors, load_tensors
from diffclust.engine.runtime import make_accelerator
from diffclust.engine.timing import StageTimer
from diffclust.engine.trainer import matrix_identity
from diffclust.errors import DiffclustError
from diffclust.methods.base import ClusteringEstimator
from diffclust.methods.cludi.diffusion import EmbeddingDiffusion
from diffclust.methods.cludi.inputs import FeatureTable, is_feature_file, read_feature_file, table_from_matrix
from diffclust.methods.cludi.network import CLUDINetwork
from diffclust.methods.cludi.training import CLUDITrainer, assign, mean_logits, sample_agreement
from diffclust.outputs import ASSIGNMENTS_NAME, SKIPPED_NAME, write_assignments, write_skipped
from diffclust.seeding import make_generator, seed_everything

logger = logging.getLogger(__name__)



#: per item, the share of CLUDI's prediction samples that agree with its cluster (the report's spread)
AGREEMENT_NAME = "sample_agreement.npy"


def _names_images(data) -> bool:
    """True for image inputs (a folder, a labels.csv, image files, an ImageCollection); anything
    else is read as a feature matrix (arrays, tensors, nested lists, data frames)."""
    if isinstance(data, (str, os.PathLike, ImageCollection)):
        return True
    return isinstance(data, (list, tuple)) and bool(data) and all(isinstance(item, (str, os.PathLike)) for item in data)


class CLUDI(ClusteringEstimator):
    """Clustering by a diffusion teacher-student over cluster-assignment embeddings.

    ``fit(X)`` takes a feature matrix (array, tensor, or a .npy/.pt/.safetensors file) or an
    image folder, whose features are pooled UNet activations of ``backbone`` at ``layer`` and
    ``timestep`` ("auto": DiEC's clusterability search picks them). Defaults are the published
    ones (the authors' code): AdamW (0.9, 0.98), lr 1e-4 cosine to 1e-6 (centres x 0.1),
    weight decay 0.01, 200 epochs, batch 256, EMA 0.999, T = 1000 with x0-prediction, teacher
    25 DDIM steps at eta 1, cross-entropy weight 50, temperatures 0.1 (rows) / 0.05 (columns),
    feature noise 0.2-1.0, dropout 0.05-0.1, prediction averaged over 64 samples of 50 steps.
    Unlike that code, the teacher really is the EMA of the student, and every setting is used.
    ``init="kmeans"`` (our addition) first fits the networks to k-means of the features for
    ``init_steps`` updates, as a start; ``"random"`` is the published start from random weights.
    """

    method = "cludi"
    fitted_attribute = "teacher_"
    takes_feature_matrix = True
    chooses_k = True

    def __init__(
        self,
        n_clusters: int | str = 10,
        *,
        k_range: tuple[int, int] | None = None,
        k_criterion: str = "silhouette",
        backbone: str | DiffusionBackbone | None = None,
        layer: str = "auto",
        timestep: int | str = "auto",
        resolution: int | None = None,
        noise_draws: int = 4,
        pool_size: int = 4,
        search_subset: int = 1000,
        init: str = "kmeans",
        init_steps: int = 200,
        embedding_dim: int = 64,
        hidden_dim: int = 512,
        depth: int = 3,
        epochs: int = 200,
        batch_size: int = 256,
        lr: float = 1e-4,
        min_lr: float = 1e-6,
        centre_lr_scale: float = 0.1,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.98),
        ema_decay: float = 0.999,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        teacher_steps: int = 25,
        teacher_eta: float = 1.0,
        ce_weight: float = 50.0,
        row_temperature: float = 0.1,
        column_temperature: float = 0.05,
        embedding_temperature: float = 0.1,
        feature_noise: tuple[float, float] = (0.2, 1.0),
        feature_dropout: tuple[float, float] = (0.05, 0.1),
        self_conditioning: float = 0.5,
        predict_samples: int = 64,
        predict_steps: int = 50,
        monitor_samples: int = 4,
        device: str = "auto",
        random_state: int = 0,
        output_dir: str | Path | None = None,
        num_workers: int = 0,
        strict: bool = False,
        folder_labels: bool = True,
        progress: bool = True,
    ):
        self._keep_settings(locals())

    def _setting_problems(self) -> list[str]:
        problems = []
        if self.batch_size < 2 or self.min_lr < 0:
            problems.append("batch_size must be >= 2 (the column-wise loss needs a batch) and min_lr >= 0")
        if not 0 <= self.ema_decay < 1:
            problems.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if min(self.teacher_steps, self.predict_steps, self.predict_samples, self.monitor_samples) < 1:
            problems.append("teacher_steps, predict_steps, predict_samples and monitor_samples must be >= 1")
        for name in ("feature_noise", "feature_dropout"):
            low, high = getattr(self, name)
            if not 0 <= low <= high or (name == "feature_dropout" and high >= 1):
                problems.append(f"{name} must be a range (low, high) with 0 <= low <= high" + (" < 1" if name == "feature_dropout" else ""))
        if self.init_steps < 0:
            problems.append(f"init_steps must be >= 0, got {self.init_steps}")
        if self.init not in ("kmeans", "random"):
            problems.append(f"init must be 'kmeans' or 'random', got {self.init!r}")
        if min(self.row_temperature, self.column_temperature, self.embedding_temperature) <= 0:
            problems.append("temperatures must be > 0")
        return problems

    # ------------------------------------------------------------------ inputs
    def _image_features(self, data, layer, timestep) -> FeatureTable:
        from diffclust.methods.diec import DiEC

        if self.backbone is None:
            raise DiffclustError(f"'{data}' is not a feature matrix or feature file ({', '.join(('.npy', '.pt', '.safetensors'))}); "
                                 "to cluster images, give a backbone (--backbone) whose activations become the features.")
        reader = DiEC(self.n_clusters, backbone=self.backbone, layer=layer, timestep=timestep, resolution=self.resolution,
                      noise_draws=self.noise_draws, pool_size=self.pool_size, search_subset=self.search_subset,
                      batch_size=self.batch_size, device=self.device, random_state=self.random_state, num_workers=self.num_workers,
                      strict=self.strict, folder_labels=self.folder_labels, progress=self.progress)
        collection, features, self.feature_layer_, self.feature_timestep_ = reader.extract_features(data)
        self.label_source_ = reader.label_source_
        return FeatureTable(features.float(), collection.files, collection.labels, list(collection.skipped))

    def _table(self, data, y=None, fitting: bool = False) -> FeatureTable:
        """Every kind of input as a FeatureTable; images are read at the fitted (layer, t) after fit."""
        if isinstance(data, FeatureTable):
            table = data
        elif is_feature_file(data):
            values, labels = read_feature_file(data)
            table = table_from_matrix(values, y if y is not None else labels, str(data))
        elif not _names_images(data):
            table = table_from_matrix(data, y)
        elif fitting:
            table = self._image_features(data, self.layer, self.timestep)
        elif getattr(self, "feature_layer_", None) is None:
            raise DiffclustError(f"This CLUDI model was fitted on a feature matrix: give features of the same kind, not '{data}'.")
        else:
            table = self._image_features(data, self.feature_layer_, self.feature_timestep_)
        if not fitting and table.values.shape[1] != self.feature_dim_:
            raise DiffclustError(f"X has {table.values.shape[1]} features, but CLUDI is expecting {self.feature_dim_} features "
                                 "as input (the columns it was fitted on).")
        return table

    def _standardised(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.feature_mean_) / self.feature_std_

    # ------------------------------------------------------------------ fit
    def _fit(self, X, y, run_dir: Path | None, resume: bool) -> None:
        """Cluster the rows of `X` (features, or images through the backbone); `y` only scores."""
        timer = StageTimer()
        accelerator = make_accelerator(self.device)
        seed_everything(self.random_state)
        self.feature_layer_ = self.feature_timestep_ = None
        self.label_source_ = None if y is None else "the labels given"
        with timer("features"):
            table = self._table(X, y, fitting=True)
        if self.label_source_ is None and table.labels is not None:
            self.label_source_ = "the labels stored with the features"
        self._require_samples(len(table), "samples were given")
        self.feature_dim_ = self.n_features_in_ = table.values.shape[1]
        self.feature_mean_ = table.values.mean(dim=0)
        self.feature_std_ = table.values.std(dim=0).clamp_min(1e-6)
        k = self._resolve_k(self._standardised(table.values).numpy(), run_dir, accelerator.is_main_process)
        seed_everything(self.random_state)
        network = CLUDINetwork(self.feature_dim_, k, self.embedding_dim, self.hidden_dim, self.depth)
        params = self._trainer_params(matrix_identity(table.values), self.resolution)
        trainer = CLUDITrainer(params, self._standardised(table.values), network, accelerator, table.labels, run_dir)
        with timer("training"):
            trainer.run(resume=resume)
        self.student_ = trainer.network.eval()
        self.teacher_ = trainer.teacher.model.eval()
        self.history_ = list(trainer.log.records)
        with timer("assignment"):
            logits, sampled = self._logits(table.values, keep_samples=True)
            self.labels_, self.confidence_, self.cluster_offsets_ = assign(logits, self.column_temperature)
            self.sample_agreement_ = sample_agreement(sampled, self.labels_, self.column_temperature, self.cluster_offsets_)
        self.files_ = table.names
        self.skipped_ = list(table.skipped)
        if table.labels is not None and self.history_:  # scores of the final, many-sample assignment
            final = clustering_scores(table.labels, self.labels_)
            self.history_[-1].update({f"final_{key}": value for key, value in final.items()})
            if accelerator.is_main_process:
                trainer.log.write()
        if run_dir is not None and accelerator.is_main_process:
            with timer("outputs"):
                self.save(run_dir)
                atomic_save_array(run_dir / AGREEMENT_NAME, self.sample_agreement_.astype(np.float32))
                write_assignments(run_dir / ASSIGNMENTS_NAME, table.names, self.labels_, self.confidence_, table.skipped)
                write_skipped(run_dir / SKIPPED_NAME, table.skipped)
        self._finish_run(run_dir, accelerator, timer, self._standardised(table.values).numpy())

    # ------------------------------------------------------------------ inference
    def _logits(self, values: torch.Tensor, keep_samples: bool = False):
        """Teacher logits averaged over predict_samples sampled embeddings of predict_steps steps."""
        diffusion = EmbeddingDiffusion(self.num_train_timesteps, self.beta_schedule)
        device = next(self.teacher_.parameters()).device
        generator = make_generator(self.random_state + 2_718)
        result = mean_logits(self.teacher_, diffusion, self._standardised(values).to(device), self.predict_samples,
                             self.predict_steps, self.teacher_eta, generator, keep_samples=keep_samples)
        return (result[0].cpu(), result[1]) if keep_samples else result.cpu()

    def transform(self, X) -> np.ndarray:
        """Mean teacher logits (N, K) of the rows of `X` (assign with the fitted cluster offsets)."""
        self._check_fitted()
        return self._logits(self._table(X).values).numpy()

    def predict_with_confidence(self, X) -> tuple[np.ndarray, np.ndarray, FeatureTable]:
        self._check_fitted()
        table = self._table(X)
        labels, confidence, _ = assign(self._logits(table.values), self.column_temperature, self.cluster_offsets_)
        return labels, confidence, table

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        """cludi.json (settings, input kind) + cludi.safetensors (teacher, feature statistics)."""
        self._check_fitted()
        folder = Path(folder)
        tensors = {f"teacher.{name}": value for name, value in self.teacher_.state_dict().items()}
        tensors.update(feature_mean=self.feature_mean_, feature_std=self.feature_std_, cluster_offsets=self.cluster_offsets_)
        atomic_save_tensors(folder / self.weights_name(), tensors)
        settings = self.saved_settings()
        settings.update(betas=list(self.betas), feature_noise=list(self.feature_noise), feature_dropout=list(self.feature_dropout),
                        k_range=list(self.k_range) if self.k_range else None)
        self.write_config(folder, {"feature_dim": self.feature_dim_, "feature_layer": self.feature_layer_,
                                   "feature_timestep": self.feature_timestep_}, settings)
        return folder

    def _restore(self, state: dict, folder: Path) -> None:
        self.betas, self.feature_noise, self.feature_dropout = tuple(self.betas), tuple(self.feature_noise), tuple(self.feature_dropout)
        self.k_range = tuple(self.k_range) if self.k_range else None  # JSON saved these tuples as lists
        tensors = load_tensors(folder / self.weights_name())
        teacher = CLUDINetwork(state["feature_dim"], self.n_clusters_, self.embedding_dim, self.hidden_dim, self.depth)
        teacher.load_state_dict({name[len("teacher."):]: value for name, value in tensors.items() if name.startswith("teacher.")})
        self.teacher_ = teacher.eval()
        self.feature_dim_ = self.n_features_in_ = state["feature_dim"]
        self.feature_layer_, self.feature_timestep_ = state["feature_layer"], state["feature_timestep"]
        self.feature_mean_, self.feature_std_ = tensors["feature_mean"], tensors["feature_std"]
        self.cluster_offsets_ = tensors["cluster_offsets"]
