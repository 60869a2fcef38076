"""CLUDI as a scikit-learn-shaped estimator over any features."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from diffclust.backbones.base import DiffusionBackbone
from diffclust.choices import CLUDI_INITS, is_feature_file
from diffclust.cluster.metrics import clustering_scores
from diffclust.cluster.neighbours import nearest_neighbours
from diffclust.cluster.self_labelling import SelfLabeller, fit_self_labeller
from diffclust.cluster.start_choice import CHECK_NEIGHBOURS, margin_problems, warn_if_start_kept
from diffclust.data.collection import ImageCollection
from diffclust.encoders.extraction import read_row_names
from diffclust.encoders.vision import POOLINGS, VisionEncoder
from diffclust.engine.checkpoint import atomic_save_array, atomic_save_tensors, atomic_write_text, damaged, load_tensors
from diffclust.engine.runtime import make_accelerator
from diffclust.engine.timing import StageTimer, readable_duration
from diffclust.engine.trainer import matrix_identity
from diffclust.errors import DiffclustError
from diffclust.methods.base import ClusteringEstimator
from diffclust.methods.cludi.diffusion import EmbeddingDiffusion
from diffclust.methods.cludi.inputs import FeatureTable, read_feature_file, table_from_matrix
from diffclust.methods.cludi.network import CLUDINetwork
from diffclust.methods.cludi.training import CLUDITrainer, assign, distinct_rows, mean_logits, sample_agreement
from diffclust.outputs import ASSIGNMENTS_NAME, RUN_LABELS_NAME, SKIPPED_NAME, csv_text, write_assignments, write_skipped
from diffclust.seeding import make_generator, seed_everything

logger = logging.getLogger(__name__)

#: per item, the share of CLUDI's prediction samples that agree with its cluster (the report's spread)
AGREEMENT_NAME = "sample_agreement.npy"
#: a fit on images with a vision encoder keeps their features in the run folder under this name
ENCODED_FEATURES = "features.npy"
#: images per vision-encoder batch
ENCODER_BATCH = 64
#: "global": centre, then divide by one overall spread (keeps the features' geometry, so the
#: k-means start equals k-means on the raw features); "per_feature": standardise each column
FEATURE_SCALINGS = ("global", "per_feature")
#: where the networks start (see choices.CLUDI_INITS)
INITS = CLUDI_INITS
#: the published settings (the authors' code), which the CPU defaults cut down: `--paper-settings`
PAPER_SETTINGS = {"epochs": 200, "batch_size": 256, "lr": 1e-4, "ema_decay": 0.999, "teacher_steps": 25, "predict_samples": 64,
                  "predict_steps": 50, "monitor_samples": 4, "init": "random", "teacher_neighbours": 0,
                  "self_labelling": False, "epoch_steps": 0}
#: predict_samples="auto": this many samples per row up to AUTO_SAMPLE_ROWS rows; beyond, as many
#: as keep rows x samples at AUTO_SAMPLES x AUTO_SAMPLE_ROWS (at least MIN_AUTO_SAMPLES), so the
#: final assignment costs about as much on a million rows as on ten thousand
AUTO_SAMPLES, AUTO_SAMPLE_ROWS, MIN_AUTO_SAMPLES = 16, 10_000, 2


def prediction_samples(setting: int | str, rows: int) -> int:
    """The samples averaged per row for `rows` rows: the setting, or its "auto" rule."""
    if setting != "auto":
        return int(setting)
    return max(MIN_AUTO_SAMPLES, min(AUTO_SAMPLES, AUTO_SAMPLES * AUTO_SAMPLE_ROWS // max(1, rows)))


def _names_images(data) -> bool:
    """True for image inputs (a folder, a labels.csv, image files, an ImageCollection); anything
    else is read as a feature matrix (arrays, tensors, nested lists, data frames)."""
    if isinstance(data, (str, os.PathLike, ImageCollection)):
        return True
    return isinstance(data, (list, tuple)) and bool(data) and all(isinstance(item, (str, os.PathLike)) for item in data)


def check_saved_tensors(tensors: dict[str, torch.Tensor], k: int, dim: int, folder: Path, name: str) -> None:
    """Refuse, as damaged, a saved CLUDI model whose tensors are not finite or whose shapes do not
    match its saved K and feature dimension: such a file would assign every row to one cluster,
    or to a cluster that does not exist, without a word."""
    shapes = {"feature_mean": (dim,), "feature_std": (dim,), "cluster_offsets": (k,), "self_labelling.weights": (k, dim),
              "self_labelling.bias": (k,)}
    for tensor_name, tensor in tensors.items():
        expected = shapes.get(tensor_name)
        if expected is not None and tuple(tensor.shape) != expected:
            raise damaged(folder, f"{name}: '{tensor_name}' has shape {tuple(tensor.shape)}, but a model of K = {k} clusters over "
                          f"{dim} features has {expected}", "fit the model again")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise damaged(folder, f"{name}: '{tensor_name}' holds NaN or infinite values", "fit the model again")


class CLUDI(ClusteringEstimator):
    """Clustering by a diffusion teacher-student over cluster-assignment embeddings.

    ``fit(X)`` takes a feature matrix (an array, a tensor, or a .npy/.pt/.safetensors file, whose
    rows are named by a ``FEATURES.files.csv`` beside it when `diffclust features` wrote one) or
    an image folder, encoded by ``encoder`` or else by ``backbone``'s pooled UNet activations.
    The method is the published one; the defaults fit a CPU and add a start, teacher neighbours
    and self-labelling, each chosen by a measurement (docs: benchmarks/cludi.md).
    ``PAPER_SETTINGS`` holds the published settings.

    Parameters
    ----------
    {k_parameters}
    encoder : str or Path, optional
        A ViT, DINO, DINOv2 or CLIP folder or hub id that encodes images.
    pooling : {"cls", "mean"}, default="cls"
        The encoder's CLS token, or the mean of its patch tokens.
    backbone : str, Path or DiffusionBackbone, optional
        A diffusion backbone whose pooled activations are the features (without ``encoder``).
    layer, timestep : str / int or "auto", default="auto"
        The backbone's pair; "auto" runs DiEC's search.
    resolution, noise_draws, pool_size, search_subset
        As for DiEC, when a backbone encodes the images.
    feature_scaling : {"global", "per_feature"}, default="global"
        Centre the features and divide by one overall spread, or standardise each column.
    init : {"consensus", "spectral", "kmeans", "random"}, default="consensus"
        *Our addition.* The partition the networks first copy: the median of k-means and
        spectral clusterings at several graph sizes, one spectral graph, k-means, or none (the
        published random start).
    init_steps, init_agreement, max_init_steps : int, float, int, default=200, 0.99, 3000
        The copy runs in rounds of ``init_steps`` until the networks agree with the start on
        ``init_agreement`` of the rows, stop improving, or spend ``max_init_steps``.
    init_neighbours : int, default=10
        The graph size of ``init="spectral"``.
    start_margin : float, default=0.1
        *Our addition.* When the final clusters keep fewer than ``1 - start_margin`` of the rows
        in their start cluster, the fit keeps whichever of the two partitions has the higher
        modularity on the nearest-neighbour graph (no label read), and says so. 1.0: always
        the trained one.
    embedding_dim, hidden_dim, depth : int, default=64, 512, 3
        The assignment embedding's size and the denoiser's width and depth.
    epochs : int, default=30
        Training epochs (the paper: 200).
    batch_size : int, default=256
        Rows per step.
    epoch_steps : int, default=40
        *Our addition.* The steps of one epoch, on a fresh sample of rows each epoch, once the
        data has more rows than that many batches: the training then costs the same on any N.
        0: every row once per epoch (published).
    lr, min_lr, centre_lr_scale : float, default=1e-3, 1e-6, 0.1
        AdamW's learning rate, its cosine floor, and the centres' share of it.
    weight_decay, betas : float, (float, float), default=0.01, (0.9, 0.98)
        AdamW's settings.
    ema_decay : float, default=0.99
        The teacher is this EMA of the student (the paper: 0.999).
    num_train_timesteps, beta_schedule : int, str, default=1000, "linear"
        The diffusion schedule over embeddings.
    teacher_steps, teacher_eta : int, float, default=10, 1.0
        The teacher's DDIM sampling steps and stochasticity.
    teacher_neighbours : int, default=10
        *Our addition.* The teacher reads one of each row's k nearest neighbours (0: the row
        itself).
    self_labelling : bool, default=True
        *Our addition.* After training, a linear classifier on the rows whose neighbours agree
        relabels every row (skipped when the clusters are not linear in the features).
    balanced : bool, default=False
        Transport self-labelling's assignment to equal cluster sizes (for data whose groups are
        known to be equally large).
    ce_weight : float, default=50.0
        Weight of the two-way cross-entropy beside the embedding MSE.
    row_temperature, column_temperature, embedding_temperature : float, default=0.1, 0.05, 0.1
        The balanced softmaxes' and the embedding's temperatures.
    feature_noise, feature_dropout : (float, float), default=(0.2, 1.0), (0.05, 0.1)
        The ranges of noise and dropout on the student's features.
    self_conditioning : float, default=0.5
        How often the denoiser sees its previous estimate.
    predict_samples : int or "auto", default="auto"
        Samples averaged per row at prediction. "auto": 16 up to 10,000 rows, then fewer (at
        least 2), so that rows x samples stays at 160,000.
    predict_steps : int, default=20
        DDIM steps of each prediction sample.
    monitor_samples : int, default=1
        Samples behind each epoch's logged assignment.
    {run_parameters}

    Attributes
    ----------
    labels_ : ndarray of shape (n_rows,)
        The cluster of each row (or image).
    files_ : list of str
        The rows' names (file names, or row indices for a bare matrix).
    confidence_ : ndarray of shape (n_rows,)
        The probability of each row's cluster.
    start_partition_ : ndarray or None
        The partition the networks copied first.
    sample_agreement_ : ndarray
        The share of prediction samples that agree with each row's cluster.
    self_labeller_ : SelfLabeller or None
        The classifier of the self-labelling step, when it ran.
    n_clusters_ : int
        K, chosen when ``n_clusters="auto"``.
    n_features_in_ : int
        The feature dimension.
    start_agreement_ : float or None
        The share of rows whose final cluster is their start cluster (matched one to one).
    kept_partition_ : {"trained", "start"}
        Which partition ``labels_`` holds (see ``start_margin``).
    history_ : list of dict
        The metrics log, one row per epoch, the start as epoch 0.

    Examples
    --------
    >>> import numpy as np
    >>> from diffclust import CLUDI
    >>> features = np.random.default_rng(0).normal(size=(300, 16))
    >>> CLUDI(n_clusters=3, epochs=2, progress=False).fit(features).labels_.shape  # doctest: +SKIP
    (300,)
    """

    method = "cludi"
    fitted_attribute = "teacher_"
    takes_feature_matrix = True

    def __init__(
        self,
        n_clusters: int | str = 10,
        *,
        k_range: tuple[int, int] | None = None,
        k_criterion: str = "silhouette",
        encoder: str | None = None,
        pooling: str = "cls",
        backbone: str | DiffusionBackbone | None = None,
        layer: str = "auto",
        timestep: int | str = "auto",
        resolution: int | None = None,
        noise_draws: int = 4,
        pool_size: int = 4,
        search_subset: int = 1000,
        feature_scaling: str = "global",
        init: str = "consensus",
        init_steps: int = 200,
        init_agreement: float = 0.99,
        max_init_steps: int = 3000,
        init_neighbours: int = 10,
        start_margin: float = 0.1,
        embedding_dim: int = 64,
        hidden_dim: int = 512,
        depth: int = 3,
        epochs: int = 30,
        batch_size: int = 256,
        epoch_steps: int = 40,
        lr: float = 1e-3,
        min_lr: float = 1e-6,
        centre_lr_scale: float = 0.1,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.98),
        ema_decay: float = 0.99,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        teacher_steps: int = 10,
        teacher_eta: float = 1.0,
        teacher_neighbours: int = 10,
        self_labelling: bool = True,
        balanced: bool = False,
        ce_weight: float = 50.0,
        row_temperature: float = 0.1,
        column_temperature: float = 0.05,
        embedding_temperature: float = 0.1,
        feature_noise: tuple[float, float] = (0.2, 1.0),
        feature_dropout: tuple[float, float] = (0.05, 0.1),
        self_conditioning: float = 0.5,
        predict_samples: int | str = "auto",
        predict_steps: int = 20,
        monitor_samples: int = 1,
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
        if min(self.teacher_steps, self.predict_steps, self.monitor_samples) < 1:
            problems.append("teacher_steps, predict_steps and monitor_samples must be >= 1")
        if self.predict_samples != "auto" and not (isinstance(self.predict_samples, (int, np.integer)) and self.predict_samples >= 1):
            problems.append(f"predict_samples (--predict-samples) must be 'auto' or an integer >= 1, got {self.predict_samples!r}")
        if not isinstance(self.epoch_steps, (int, np.integer)) or self.epoch_steps < 0:
            problems.append(f"epoch_steps (--epoch-steps) must be an integer >= 0 (0: every row once per epoch), got {self.epoch_steps!r}")
        problems += margin_problems(self.start_margin)
        for name in ("feature_noise", "feature_dropout"):
            low, high = getattr(self, name)
            if not 0 <= low <= high or (name == "feature_dropout" and high >= 1):
                problems.append(f"{name} must be a range (low, high) with 0 <= low <= high" + (" < 1" if name == "feature_dropout" else ""))
        if self.init_steps < 0 or self.max_init_steps < self.init_steps:
            problems.append(f"init_steps must be >= 0 and max_init_steps at least init_steps, got {self.init_steps} and {self.max_init_steps}")
        if not 0 <= self.init_agreement <= 1:
            problems.append(f"init_agreement must be a share in [0, 1], got {self.init_agreement!r}")
        if self.encoder is not None and self.backbone is not None:
            problems.append("give either encoder (--encoder, a vision transformer) or backbone (--backbone, UNet activations), not both")
        if self.pooling not in POOLINGS:
            problems.append(f"pooling (--pooling) must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.feature_scaling not in FEATURE_SCALINGS:
            problems.append(f"feature_scaling must be one of {', '.join(FEATURE_SCALINGS)}, got {self.feature_scaling!r}")
        if self.init not in INITS:
            problems.append(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.init_neighbours < 2 or self.teacher_neighbours < 0:
            problems.append("init_neighbours must be >= 2 and teacher_neighbours >= 0")
        for name in ("self_labelling", "balanced"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                problems.append(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.balanced is True and self.self_labelling is False:
            problems.append("balanced (--balanced) acts in the self-labelling step: leave self_labelling on (no --no-self-labelling)")
        if min(self.row_temperature, self.column_temperature, self.embedding_temperature) <= 0:
            problems.append("temperatures must be > 0")
        return problems

    # ------------------------------------------------------------------ inputs
    def _image_features(self, data, layer, timestep) -> FeatureTable:
        from diffclust.methods.diec import DiEC

        if self.backbone is None:
            raise DiffclustError(f"'{data}' is not a feature matrix or feature file ({', '.join(('.npy', '.pt', '.safetensors'))}); "
                                 "to cluster images, give a vision encoder (--encoder, e.g. a DINOv2 folder) or a diffusion "
                                 "backbone (--backbone) whose activations become the features.")
        reader = DiEC(self.n_clusters, backbone=self.backbone, layer=layer, timestep=timestep, resolution=self.resolution,
                      noise_draws=self.noise_draws, pool_size=self.pool_size, search_subset=self.search_subset,
                      batch_size=self.batch_size, device=self.device, random_state=self.random_state, num_workers=self.num_workers,
                      strict=self.strict, folder_labels=self.folder_labels, progress=self.progress)
        collection, features, self.feature_layer_, self.feature_timestep_ = reader.extract_features(data)
        self.label_source_ = reader.label_source_
        return FeatureTable(features.float(), collection.files, collection.labels, list(collection.skipped))

    def _encoded_features(self, data, fitting: bool) -> FeatureTable:
        """Images through the vision encoder; a fit keeps them as features.npy in its run folder
        (written in shards, so an interrupted fit continues where the encoding stopped)."""
        from diffclust.encoders.extraction import extract_features

        if not hasattr(self, "encoder_"):
            self.encoder_ = VisionEncoder.load(self.encoder, self.pooling, make_accelerator(self.device).device, self.progress)
        collection = self._training_collection(data) if fitting else self._collect(data)
        out = Path(self.output_dir) / ENCODED_FEATURES if fitting and self.output_dir is not None else None
        values = extract_features(self.encoder_, collection, out, ENCODER_BATCH, show_progress=self.progress)
        return FeatureTable(torch.from_numpy(values), collection.files, collection.labels, list(collection.skipped))

    def _table(self, data, y=None, fitting: bool = False) -> FeatureTable:
        """Every kind of input as a FeatureTable; images are read at the fitted (layer, t) after fit."""
        if isinstance(data, FeatureTable):
            table = data
        elif is_feature_file(data):
            values, labels = read_feature_file(data)
            table = table_from_matrix(values, y if y is not None else labels, str(data))
            named = read_row_names(data, len(table))
            if named is not None:  # written by `diffclust features`: rows named by their files
                table.names, table.labels = named[0], table.labels if table.labels is not None else named[1]
        elif not _names_images(data):
            table = table_from_matrix(data, y)
        elif self.encoder is not None:
            table = self._encoded_features(data, fitting)
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
        """Centred and scaled in float64: finite float32 features near its limit would overflow on the way."""
        return ((values.double() - self.feature_mean_.double()) / self.feature_std_.double()).float()

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
        values = table.values.double()  # float64: the spread of finite but huge float32 values overflows float32
        mean = values.mean(dim=0)
        spread = values.std(dim=0) if self.feature_scaling == "per_feature" else (values - mean).std().expand(self.feature_dim_)
        self.feature_mean_ = mean.float()
        self.feature_std_ = spread.clamp_min(1e-6).float().contiguous()
        k = self._resolve_k(self._standardised(table.values).numpy(), run_dir, accelerator.is_main_process)
        seed_everything(self.random_state)
        network = CLUDINetwork(self.feature_dim_, k, self.embedding_dim, self.hidden_dim, self.depth)
        samples = prediction_samples(self.predict_samples, len(table))
        params = self._trainer_params(matrix_identity(table.values), self.resolution, predict_samples=samples)
        trainer = CLUDITrainer(params, self._standardised(table.values), network, accelerator, table.labels, run_dir)
        if resume:
            trainer.resume()
        estimate = trainer.estimated_seconds(samples, self.predict_steps)
        logger.info("CLUDI on %d x %d features, K = %d: about %s on %s (%d epochs of %d steps, teacher %d DDIM steps; prediction "
                    "%d samples x %d steps%s).", len(table), self.feature_dim_, k, readable_duration(estimate), accelerator.device,
                    self.epochs - trainer.start_epoch, trainer.steps_per_epoch, self.teacher_steps, samples, self.predict_steps,
                    f"; predict_samples 'auto' takes {samples} on {len(table)} rows" if samples < AUTO_SAMPLES and self.predict_samples == "auto" else "")
        with timer("training"):
            trainer.run()
        self.student_ = trainer.network.eval()
        self.teacher_ = trainer.teacher.model.eval()
        self.start_partition_ = trainer.start_partition
        with timer("assignment"):
            logits, sampled = self._logits(table.values, keep_samples=True)
            self.labels_, self.confidence_, self.cluster_offsets_ = assign(logits, self.column_temperature)
        if table.labels is not None and trainer.log.records:  # scores of the teacher's final, many-sample assignment
            final = clustering_scores(table.labels, self.labels_)
            trainer.log.records[-1].update({f"final_{key}": value for key, value in final.items()})
        self.self_labeller_ = None
        if self.self_labelling:
            with timer("self-labelling"):
                self._self_label(trainer, k)
        with timer("start check"):
            self._check_against_start(trainer, trainer.start_labels, lambda: (
                trainer.neighbours.numpy() if trainer.neighbours is not None
                else nearest_neighbours(trainer.features, CHECK_NEIGHBOURS, metric="euclidean")))
        self.sample_agreement_ = sample_agreement(sampled, self.labels_, self.column_temperature, self.cluster_offsets_)
        self.history_ = list(trainer.log.records)
        self.files_ = table.names
        self.skipped_ = list(table.skipped)
        if accelerator.is_main_process and table.labels is not None:  # the final scores updated a row the log had written
            trainer.log.write()
        if run_dir is not None and accelerator.is_main_process:
            with timer("outputs"):
                self.save(run_dir)
                atomic_save_array(run_dir / AGREEMENT_NAME, self.sample_agreement_.astype(np.float32))
                write_assignments(run_dir / ASSIGNMENTS_NAME, table.names, self.labels_, self.confidence_, table.skipped)
                write_skipped(run_dir / SKIPPED_NAME, table.skipped)
                if table.labels is not None:  # the report scores and colours by class without the features' source
                    atomic_write_text(run_dir / RUN_LABELS_NAME, csv_text(("file", "label"), zip(table.names, table.labels.tolist())))
        self._finish_run(run_dir, accelerator, timer, self._standardised(table.values).numpy())

    def _self_label(self, trainer: CLUDITrainer, k: int) -> None:
        """Relabel every row by a classifier trained on the rows the teacher's clusters are sure
        of, unless those clusters are not linear in the features; the metrics log gets its row
        either way (phase "self-labelling" or "self-labelling skipped ...", one epoch after the last)."""
        started = time.perf_counter()
        features = trainer.features.cpu().numpy()
        neighbours = trainer.neighbours.numpy() if trainer.neighbours is not None else None
        self.self_labeller_, sure_share, agreement = fit_self_labeller(features, self.labels_, k, self.random_state, neighbours,
                                                                       equal_sizes=self.balanced)
        moved = 0
        if self.self_labeller_ is not None:
            teacher_labels = self.labels_
            self.labels_, self.confidence_ = self.self_labeller_.predict(features)
            moved = int((self.labels_ != teacher_labels).sum())
            logger.info("Self-labelling moved %d of %d rows to another cluster.", moved, len(self.labels_))
        trainer.log_record({"epoch": self.epochs + 1, "phase": "self-labelling" if self.self_labeller_ is not None else
                            "self-labelling skipped (clusters not linear in the features)", "sure_rows": round(sure_share, 4),
                            "sure_rows_reproduced": round(agreement, 4), "moved_rows": moved}, self.labels_, started)

    # ------------------------------------------------------------------ inference
    def _logits(self, values: torch.Tensor, keep_samples: bool = False):
        """Teacher logits averaged over predict_samples sampled embeddings of predict_steps steps.
        Identical rows are sampled once and share the result: each row's own noise would otherwise
        split copies of one row across clusters."""
        diffusion = EmbeddingDiffusion(self.num_train_timesteps, self.beta_schedule)
        device = next(self.teacher_.parameters()).device
        generator = make_generator(self.random_state + 2_718)
        standardised = self._standardised(values)
        distinct, copies = distinct_rows(standardised.detach().cpu().numpy())
        result = mean_logits(self.teacher_, diffusion, standardised[distinct].to(device), prediction_samples(self.predict_samples, len(distinct)),
                             self.predict_steps, self.teacher_eta, generator, keep_samples=keep_samples)
        if keep_samples:
            return result[0].cpu()[copies], result[1][:, copies]
        return result.cpu()[copies]

    def transform(self, X) -> np.ndarray:
        """Mean teacher logits (N, K) of the rows of `X` (the teacher's assignment uses the fitted
        cluster offsets; `predict` uses the self-labelling classifier where one was fitted)."""
        self._check_fitted()
        return self._logits(self._table(X).values).numpy()

    def predict_with_confidence(self, X) -> tuple[np.ndarray, np.ndarray, FeatureTable]:
        self._check_fitted()
        table = self._table(X)
        warn_if_start_kept(getattr(self, "kept_partition_", None), getattr(self, "start_agreement_", None), "networks")
        if getattr(self, "self_labeller_", None) is not None:
            labels, confidence = self.self_labeller_.predict(self._standardised(table.values).numpy())
            return labels, confidence, table
        labels, confidence, _ = assign(self._logits(table.values), self.column_temperature, self.cluster_offsets_)
        return labels, confidence, table

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        """cludi.json (settings, input kind) + cludi.safetensors (teacher, feature statistics)."""
        self._check_fitted()
        folder = Path(folder)
        tensors = {f"teacher.{name}": value for name, value in self.teacher_.state_dict().items()}
        tensors.update(feature_mean=self.feature_mean_, feature_std=self.feature_std_, cluster_offsets=self.cluster_offsets_)
        if getattr(self, "self_labeller_", None) is not None:
            tensors.update({"self_labelling.weights": torch.from_numpy(self.self_labeller_.weights),
                            "self_labelling.bias": torch.from_numpy(self.self_labeller_.bias)})
        atomic_save_tensors(folder / self.weights_name(), tensors)
        settings = self.saved_settings()
        settings.update(betas=list(self.betas), feature_noise=list(self.feature_noise), feature_dropout=list(self.feature_dropout),
                        k_range=list(self.k_range) if self.k_range else None)
        self.write_config(folder, {"feature_dim": self.feature_dim_, "feature_layer": self.feature_layer_,
                                   "feature_timestep": self.feature_timestep_, "kept_partition": self.kept_partition_,
                                   "start_agreement": self.start_agreement_}, settings)
        return folder

    def _restore(self, state: dict, folder: Path) -> None:
        self.betas, self.feature_noise, self.feature_dropout = tuple(self.betas), tuple(self.feature_noise), tuple(self.feature_dropout)
        self.k_range = tuple(self.k_range) if self.k_range else None  # JSON saved these tuples as lists
        tensors = load_tensors(folder / self.weights_name())
        check_saved_tensors(tensors, self.n_clusters_, state["feature_dim"], folder, self.weights_name())
        teacher = CLUDINetwork(state["feature_dim"], self.n_clusters_, self.embedding_dim, self.hidden_dim, self.depth)
        try:
            teacher.load_state_dict({name[len("teacher."):]: value for name, value in tensors.items() if name.startswith("teacher.")})
        except RuntimeError as error:  # a tensor of another shape than the saved settings make
            raise damaged(folder, f"{self.weights_name()} does not fit the saved settings ({str(error).splitlines()[-1].strip()})",
                          "fit the model again") from None
        self.teacher_ = teacher.eval()
        self.feature_dim_ = self.n_features_in_ = state["feature_dim"]
        self.feature_layer_, self.feature_timestep_ = state["feature_layer"], state["feature_timestep"]
        # models saved before the start check kept the trained partition
        self.kept_partition_, self.start_agreement_ = state.get("kept_partition", "trained"), state.get("start_agreement")
        self.feature_mean_, self.feature_std_ = tensors["feature_mean"], tensors["feature_std"]
        self.cluster_offsets_ = tensors["cluster_offsets"]
        self.self_labeller_ = (SelfLabeller(tensors["self_labelling.weights"].numpy(), tensors["self_labelling.bias"].numpy())
                               if "self_labelling.weights" in tensors else None)  # models saved before self-labelling have none
