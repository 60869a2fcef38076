"""DiEC as a scikit-learn-shaped estimator: search the clustering-optimal (layer, t), then train."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from diffclust.backbones.base import DiffusionBackbone
from diffclust.backbones.registry import SD15_HUB_ID, load_backbone
from diffclust.choices import DIEC_INITS
from diffclust.data.collection import ImageCollection
from diffclust.engine.checkpoint import atomic_save_tensors, atomic_write_json, load_tensors
from diffclust.engine.runtime import make_accelerator
from diffclust.engine.timing import StageTimer
from diffclust.engine.trainer import files_identity
from diffclust.errors import DiffclustError
from diffclust.methods.base import ClusteringEstimator
from diffclust.methods.diec.features import BOTTLENECK, LayerFeatureReader, candidate_layers, encode_collection
from diffclust.methods.diec.network import DiECNetwork
from diffclust.methods.diec.search import SCORES, ClusterabilitySearch, SearchResult, clusterability, even_timesteps
from diffclust.methods.diec.search_report import read_search, write_search_outputs
from diffclust.methods.diec.training import DiECTrainer
from diffclust.outputs import collection_outputs
from diffclust.seeding import make_generator, seed_everything

logger = logging.getLogger(__name__)

#: the run folder's label-free comparison of the chosen features with the raw pixels
PIXEL_COMPARISON_NAME = "pixel_comparison.json"

UNET_WEIGHTS = "diec-unet.safetensors"
#: with n_clusters="auto", the K at which the layer/timestep search scores k-means
PROVISIONAL_K = 10
SEARCH_STRATEGIES = ("two-stage", "grid")
GRID_TIMESTEPS = 10
#: the DiEC paper's procedure where our defaults depart from it (`--paper-settings`): the
#: Calinski-Harabasz search index, DEC's k-means start, DEC's sharpened target from the first
#: epoch. Measured against the defaults in docs/benchmarks/diec.md.
PAPER_SETTINGS = {"search_score": "calinski_harabasz", "init": "kmeans", "self_label_epochs": 0, "finetune_unet": True}


class DiEC(ClusteringEstimator):
    """Clustering on the best layer x timestep of a diffusion UNet.

    The clusterability search picks a (layer, timestep) pair without labels; DiEC then trains
    cluster embeddings on the pooled UNet features there: a residual mapping, a DEC-style KL
    loss with graph and entropy regularisers, and with ``finetune_unet`` a parallel denoising
    loss that fine-tunes the UNet. The defaults depart from the paper where a measurement chose
    otherwise (docs: benchmarks/diec.md); ``PAPER_SETTINGS`` restores the paper's procedure.

    Parameters
    ----------
    {k_parameters}
    backbone : str, Path or DiffusionBackbone, default=SD-1.5's hub id
        Any diffusion UNet: a diffusers folder (SD or an unconditional DDPM), a hub id, a
        built-in name (``usps-ddpm``) or a backbone object.
    resolution : int, optional
        Image side in pixels (default: the backbone's own).
    layer, timestep : str / int or "auto", default="auto"
        The pair to cluster at; "auto" runs the search.
    search : {"two-stage", "grid"}, default="two-stage"
        Fix the layer, then search t (a coarse grid, then a Fibonacci search); or score every
        block at ``search_timesteps``.
    search_layer : str, default="bottleneck"
        The two-stage search's layer: "bottleneck" (``mid_block``), "probe" (the best block at
        ``probe_timestep``) or a module path.
    probe_timestep : int, optional
        The timestep of the "probe" layer choice.
    search_score : {"umap_silhouette", "calinski_harabasz", "silhouette"}, default="umap_silhouette"
        The label-free index of a pair: k-means' silhouette in a UMAP embedding of the features
        (default), or the paper's Calinski-Harabasz index in the features themselves.
    search_subset : int, default=1000
        Random images the search scores on.
    search_layers, search_timesteps : list, optional
        The grid search's candidates (default: every top-level block; 10 timesteps).
    timestep_range : (int, int), optional
        The timesteps the search may pick (default: the whole schedule).
    noise_draws : int, default=4
        Noise draws averaged per feature (each image's noise is seeded by the image).
    pool_size : int, default=4
        Features are average-pooled to pool_size x pool_size.
    finetune_unet : bool or "auto", default="auto"
        Fine-tune the UNet with the denoising loss ("auto": on a GPU; frozen on a CPU).
    epochs : int, default=50
        Training epochs.
    batch_size : int, default=256
        Images per step (sized for small DDPMs; lower it for SD-size UNets).
    lr, unet_lr : float, default=1e-3, 1e-5
        Learning rates of the mapping and centres, and of the fine-tuned UNet.
    weight_decay : float, default=1e-4
        AdamW's weight decay.
    graph_weight, entropy_weight, denoising_weight : float, default=1.0
        Weights of the neighbour-graph term, the balance term and the denoising loss.
    n_neighbours : int, default=10
        Neighbours of the graph term (recomputed each epoch).
    mapping_hidden : int, optional
        Width of the residual mapping (default: the feature's).
    init : {"umap", "consensus", "kmeans"}, default="umap"
        The start partition: k-means in a UMAP embedding (the median of five draws), the
        consensus of k-means and spectral clusterings, or k-means (DEC's start).
    self_label_epochs : int, default=10
        Epochs whose target is the start partition (label-smoothed) before DEC's sharpened
        targets; 0 is plain DEC.
    mixed_precision : {"no", "bf16", "fp16"}, default="no"
        Autocast of the backbone on a GPU (accelerate's setting).
    {run_parameters}

    Attributes
    ----------
    labels_ : ndarray of shape (n_images,)
        The cluster of each image, in the order of ``files_``.
    files_ : list of str
        The images that were clustered.
    confidence_ : ndarray of shape (n_images,)
        The soft assignment's probability of each image's cluster.
    layer_, timestep_ : str, int
        The pair DiEC clustered at.
    search_result_ : SearchResult or None
        Every evaluated pair with its score, when the search ran.
    pixel_comparison_ : dict
        The label-free comparison of the chosen features with the raw pixels.
    embedding_ : ndarray
        What was clustered (the mapped features), for the report's map.
    n_clusters_ : int
        K, chosen when ``n_clusters="auto"``.
    history_ : list of dict
        The metrics log, one row per epoch.
    skipped_ : list
        The files that were set aside, with the reason.

    Examples
    --------
    >>> from diffclust import DiEC
    >>> diec = DiEC(n_clusters=10, backbone="usps-ddpm").fit("usps")  # doctest: +SKIP
    >>> diec.layer_, diec.timestep_  # doctest: +SKIP
    """

    method = "diec"
    fitted_attribute = "network_"

    def __init__(
        self,
        n_clusters: int | str = 10,
        *,
        k_range: tuple[int, int] | None = None,
        k_criterion: str = "umap_hdbscan",
        backbone: str | DiffusionBackbone = SD15_HUB_ID,
        resolution: int | None = None,
        layer: str = "auto",
        timestep: int | str = "auto",
        search: str = "two-stage",
        search_layer: str = "bottleneck",
        probe_timestep: int | None = None,
        search_score: str = "umap_silhouette",
        search_subset: int = 1000,
        search_layers: list[str] | None = None,
        search_timesteps: list[int] | None = None,
        timestep_range: tuple[int, int] | None = None,
        noise_draws: int = 4,
        pool_size: int = 4,
        finetune_unet: bool | str = "auto",
        epochs: int = 50,
        batch_size: int = 256,
        lr: float = 1e-3,
        unet_lr: float = 1e-5,
        weight_decay: float = 1e-4,
        graph_weight: float = 1.0,
        entropy_weight: float = 1.0,
        denoising_weight: float = 1.0,
        n_neighbours: int = 10,
        mapping_hidden: int | None = None,
        init: str = "umap",
        self_label_epochs: int = 10,
        device: str = "auto",
        mixed_precision: str = "no",
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
        if self.timestep != "auto" and not (isinstance(self.timestep, int) and self.timestep >= 0):
            problems.append(f"timestep must be 'auto' or an integer >= 0, got {self.timestep!r}")
        if self.search not in SEARCH_STRATEGIES:
            problems.append(f"search must be one of {', '.join(SEARCH_STRATEGIES)}, got {self.search!r}")
        if self.search_score not in SCORES:
            problems.append(f"search_score must be one of {', '.join(SCORES)}, got {self.search_score!r}")
        if self.search_subset < 2 * self._search_k():
            problems.append(f"search_subset must be at least 2 x n_clusters, got {self.search_subset}")
        if self.noise_draws < 1 or self.pool_size < 1:
            problems.append("noise_draws and pool_size must be >= 1")
        if self.n_neighbours < 1:
            problems.append(f"n_neighbours must be >= 1, got {self.n_neighbours}")
        if self.init not in DIEC_INITS:
            problems.append(f"init must be one of {', '.join(DIEC_INITS)}, got {self.init!r}")
        if self.finetune_unet not in (True, False, "auto"):
            problems.append(f"finetune_unet must be True, False or 'auto', got {self.finetune_unet!r}")
        if not (isinstance(self.self_label_epochs, int) and self.self_label_epochs >= 0):
            problems.append(f"self_label_epochs must be an integer >= 0, got {self.self_label_epochs!r}")
        return problems

    # ------------------------------------------------------------------ the pieces of fit
    def _search_k(self) -> int:
        """The K at which the search scores k-means: the given one, or with n_clusters="auto" a
        provisional PROVISIONAL_K (K itself is then chosen on the features at the chosen pair)."""
        return PROVISIONAL_K if self.n_clusters == "auto" else int(self.n_clusters)

    def _reader(self, backbone: DiffusionBackbone, layers) -> LayerFeatureReader:
        return LayerFeatureReader(backbone, layers, self.noise_draws, self.pool_size, self.random_state)

    def _prepare(self, data):
        """(accelerator, collection, backbone, resolution, latents of every image)."""
        self._check_settings()
        accelerator = make_accelerator(self.device, self.mixed_precision)
        seed_everything(self.random_state)
        collection = self._training_collection(data)
        self._require_samples(len(collection), "usable images were found")
        backbone = load_backbone(self.backbone, device=accelerator.device, progress=self.progress)
        resolution = self.resolution or backbone.resolution
        self._check_for_backbone(backbone, resolution, timestep=self.timestep)
        self._check_images_for_backbone(collection, backbone, resolution)
        latents = encode_collection(backbone, collection, resolution, self.batch_size, self.num_workers,
                                    self.progress and accelerator.is_main_process)
        return accelerator, collection, backbone, resolution, latents

    def _timestep_bounds(self, backbone: DiffusionBackbone) -> tuple[int, int]:
        last = backbone.num_train_timesteps - 1
        low, high = self.timestep_range or (0, last)
        if not 0 <= low <= high <= last:
            raise DiffclustError(f"timestep_range must lie within [0, {last}] with low <= high, got {self.timestep_range}.")
        return int(low), int(high)

    def search_rows(self, count: int) -> torch.Tensor:
        """Which of `count` images the search scores: a seeded random subset."""
        return torch.randperm(count, generator=make_generator(self.random_state))[: self.search_subset]

    def run_search(self, backbone: DiffusionBackbone, latents: torch.Tensor, score=None, score_name: str | None = None) -> SearchResult:
        """The search on a seeded random subset of `latents`. `score` overrides the internal
        index (benchmarks pass accuracy against labels to find the labels' best pair)."""
        subset = latents[self.search_rows(len(latents))]
        layers = (self.search_layers or candidate_layers(backbone)) if self.layer == "auto" else [self.layer]

        def read_features(timestep: int, wanted) -> dict[str, np.ndarray]:
            features = self._reader(backbone, wanted).read_all(subset, timestep, self.batch_size)
            return {layer: value.numpy() for layer, value in features.items()}

        def report(item) -> None:
            logger.info("search: %s @ t=%d -> %s %.4g", item.layer, item.timestep, score_name or self.search_score, item.score)

        search = ClusterabilitySearch(read_features, self._search_k(), score or self.search_score, self.random_state,
                                      score_name=score_name, on_evaluation=report if self.progress else None)
        low, high = self._timestep_bounds(backbone)
        if self.timestep != "auto":
            return search.grid(layers, [int(self.timestep)])
        if self.layer != "auto":
            return search.two_stage(layers, low, high, layer=self.layer)
        if self.search == "grid":
            timesteps = self.search_timesteps or even_timesteps(low, high, GRID_TIMESTEPS)
            return search.grid(layers, timesteps)
        if self.search_layer == "probe":
            probe = self.probe_timestep if self.probe_timestep is not None else low + (high - low + 1) // 10
            return search.two_stage(layers, low, high, layer=None, probe_timestep=probe)
        fixed = BOTTLENECK if self.search_layer == "bottleneck" else self.search_layer
        return search.two_stage(layers, low, high, layer=fixed)

    def search_pair(self, data) -> SearchResult:
        """Only the search: the clustering-optimal (layer, timestep) for `data` (also `diffclust search`).
        Writes search.json/csv/png to `output_dir` when set."""
        accelerator, _, backbone, _, latents = self._prepare(data)
        result = self.run_search(backbone, latents)
        if self.output_dir is not None and accelerator.is_main_process:
            write_search_outputs(self.output_dir, result)
        self.search_result_ = result
        return result

    def extract_features(self, data) -> tuple[ImageCollection, torch.Tensor, str, int]:
        """(collection, features (N, D), layer, timestep): the pooled activations every image has
        at the chosen pair, searching first if layer or timestep is "auto" (CLUDI's image input)."""
        _, collection, backbone, _, latents = self._prepare(data)
        layer, timestep = self._choose_pair(backbone, latents, None, resume=False, is_main=False)
        features = self._reader(backbone, [layer]).read_all(latents, timestep, self.batch_size, self.progress)[layer]
        return collection, features, layer, timestep

    def _choose_pair(self, backbone: DiffusionBackbone, latents: torch.Tensor, run_dir: Path | None, resume: bool,
                     is_main: bool) -> tuple[str, int]:
        """The given pair, the search's saved pick (resuming), or a new search (written to run_dir)."""
        if self.layer != "auto" and self.timestep != "auto":
            self.search_result_ = None
            return self.layer, int(self.timestep)
        saved = read_search(run_dir) if (resume and run_dir is not None) else None
        self.search_result_ = saved or self.run_search(backbone, latents)
        if saved is None and run_dir is not None and is_main:
            write_search_outputs(run_dir, self.search_result_)
        return self.search_result_.layer, self.search_result_.timestep

    def compare_with_pixels(self, reader, latents: torch.Tensor, layer: str, timestep: int, k: int, resolution: int) -> dict:
        """Label-free: the UMAP silhouette of k-means at K on the search's subset, for the chosen
        features and for the raw pixels (a latent model's VAE latents). When the pixels score as
        high, the diffusion model is not helping on these images, and the log says so."""
        subset = latents[self.search_rows(len(latents))]
        pixels = "raw pixels" if subset.shape[-1] == resolution else "VAE latents"
        features = reader.read_all(subset, timestep, self.batch_size)[layer].numpy()
        scores = {"features": clusterability(features, k, self.random_state, "umap_silhouette"),
                  "pixels": clusterability(subset.reshape(len(subset), -1).numpy(), k, self.random_state, "umap_silhouette"),
                  "images": len(subset), "k": k, "against": pixels}
        message = (f"UMAP silhouette of k-means at K = {k} on {len(subset)} images: {scores['features']:.3f} for the diffusion "
                   f"features ({layer}, t={timestep}), {scores['pixels']:.3f} for the {pixels}")
        if scores["pixels"] >= scores["features"]:
            logger.warning("%s. The %s cluster at least as well: the diffusion model may not help on these images "
                           "(compare with UMAP + k-means on them, or train the backbone longer).", message, pixels)
        else:
            logger.info("%s (higher separates better).", message)
        return scores

    def resolved_finetune(self, device: torch.device) -> bool:
        """'auto' fine-tunes the UNet (the paper's procedure) on a GPU and keeps it frozen on a
        CPU: on the small DDPMs a CPU trains, fine-tuning bought nothing and cost many times the
        training time (docs/benchmarks/diec.md)."""
        return device.type != "cpu" if self.finetune_unet == "auto" else bool(self.finetune_unet)

    # ------------------------------------------------------------------ fit
    def _fit(self, data, y, run_dir: Path | None, resume: bool) -> None:
        """Search (unless layer and timestep are given), then train at the chosen pair; on resume
        the saved search is reused."""
        timer = StageTimer()
        with timer("images, backbone and latents"):
            accelerator, collection, backbone, resolution, latents = self._prepare(data)
        with timer("search"):
            layer, timestep = self._choose_pair(backbone, latents, run_dir, resume, accelerator.is_main_process)
        logger.info("DiEC trains at %s, t=%d.", layer, timestep)
        reader = self._reader(backbone, [layer])
        dim = reader(latents[:1], timestep)[layer].shape[1]
        with timer("choose K"):
            at_pair = reader.read_all(latents, timestep, self.batch_size)[layer] if self.n_clusters == "auto" else None
            k = self._resolve_k(None if at_pair is None else at_pair.numpy(), run_dir, accelerator.is_main_process)
        with timer("pixel comparison"):
            self.pixel_comparison_ = self.compare_with_pixels(reader, latents, layer, timestep, k, resolution)
            if run_dir is not None and accelerator.is_main_process:
                atomic_write_json(run_dir / PIXEL_COMPARISON_NAME, self.pixel_comparison_)
        seed_everything(self.random_state)
        network = DiECNetwork(dim, k, self.mapping_hidden)
        self.finetune_unet_ = self.resolved_finetune(accelerator.device)
        params = self._trainer_params(files_identity(collection.files), resolution, layer_=layer, timestep_=timestep, finetune_unet=self.finetune_unet_)
        trainer = DiECTrainer(params, backbone, reader, latents, network, accelerator, collection.labels, run_dir, at_pair)
        with timer("training"):
            trainer.run(resume=resume)

        embedding, q = trainer.state
        self.backbone_ = backbone
        self.resolution_ = resolution
        self.layer_, self.timestep_ = layer, timestep
        self.feature_dim_ = dim
        self.network_ = trainer.network.eval()
        self.embedding_ = embedding.numpy()
        self.labels_ = q.argmax(dim=1).numpy()
        self.confidence_ = q.max(dim=1).values.numpy()
        self.files_ = collection.files
        self.skipped_ = list(collection.skipped)
        self.history_ = list(trainer.log.records)
        if run_dir is not None and accelerator.is_main_process:
            with timer("outputs"):
                self.save(run_dir)
                collection_outputs(run_dir, collection, self.labels_, self.confidence_)
        self._finish_run(run_dir, accelerator, timer, self.embedding_)

    # ------------------------------------------------------------------ inference
    def _loaded_backbone(self) -> DiffusionBackbone:
        """The backbone, with the fine-tuned UNet of a loaded model in place."""
        fresh = not hasattr(self, "backbone_")
        backbone = super()._loaded_backbone()
        if fresh and getattr(self, "unet_state_", None) is not None:
            backbone.denoiser().load_state_dict(self.unet_state_)
        return backbone

    @torch.no_grad()
    def _assignments(self, collection: ImageCollection) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_fitted()
        backbone = self._loaded_backbone()
        latents = encode_collection(backbone, collection, self.resolution_, self.batch_size, self.num_workers, self.progress)
        features = self._reader(backbone, [self.layer_]).read_all(latents, self.timestep_, self.batch_size, self.progress)[self.layer_]
        network = self.network_.to(backbone.device).eval()
        embedding, q = network(features.to(backbone.device))
        return embedding.cpu(), q.cpu()

    def transform(self, data) -> np.ndarray:
        """Cluster embeddings (N, feature_dim) of the images in `data`."""
        return self._assignments(self._collect(data))[0].numpy()

    def predict_with_confidence(self, data) -> tuple[np.ndarray, np.ndarray, ImageCollection]:
        collection = self._collect(data)
        _, q = self._assignments(collection)
        return q.argmax(dim=1).numpy(), q.max(dim=1).values.numpy(), collection

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        """diec.json (settings, pair, shapes) + diec.safetensors (mapping, centres), and the
        fine-tuned UNet as diec-unet.safetensors when the UNet was trained."""
        self._check_fitted()
        folder = Path(folder)
        atomic_save_tensors(folder / self.weights_name(), self.network_.state_dict())
        if self.finetune_unet_:
            atomic_save_tensors(folder / UNET_WEIGHTS, self._loaded_backbone().denoiser().state_dict())
        self.write_config(folder, {"resolution": self.resolution_, "layer": self.layer_, "timestep": self.timestep_,
                                   "feature_dim": self.feature_dim_, "unet_weights": UNET_WEIGHTS if self.finetune_unet_ else None})
        return folder

    def _restore(self, state: dict, folder: Path) -> None:
        network = DiECNetwork(state["feature_dim"], self.n_clusters_, self.mapping_hidden)
        network.load_state_dict(load_tensors(folder / self.weights_name()))
        self.network_ = network.eval()
        self.resolution_ = state["resolution"]
        self.layer_, self.timestep_ = state["layer"], int(state["timestep"])
        self.feature_dim_ = state["feature_dim"]
        self.unet_state_ = load_tensors(folder / state["unet_weights"]) if state["unet_weights"] else None
        self.finetune_unet_ = bool(state["unet_weights"])
