"""DiFiC as a scikit-learn-shaped estimator: settings in, fit(data) -> self, labels_ out."""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from diffclust.backbones.base import DiffusionBackbone
from diffclust.backbones.efficiency import TrainingEfficiency
from diffclust.backbones.registry import SD15_HUB_ID, load_backbone
from diffclust.backbones.unconditional import UnconditionalBackbone
from diffclust.cluster.neighbours import nearest_neighbours
from diffclust.cluster.start_choice import CHECK_NEIGHBOURS, margin_problems, warn_if_start_kept
from diffclust.data.collection import ImageCollection
from diffclust.data.dataset import ImageTensorDataset
from diffclust.engine.checkpoint import atomic_save_tensors, load_tensors
from diffclust.engine.runtime import make_accelerator, progress
from diffclust.engine.timing import StageTimer
from diffclust.engine.trainer import files_identity
from diffclust.errors import DiffclustError
from diffclust.home import cache_root
from diffclust.methods.base import ClusteringEstimator
from diffclust.methods.difc.constants import (
    FEATURE_STORAGES,
    ConstantComputer,
    ConstantSettings,
    ConstantStore,
    fingerprint,
    load_or_compute_constants,
)
from diffclust.methods.difc.hand_over import feature_rows
from diffclust.methods.difc.network import DiFiCNetwork, assign
from diffclust.methods.difc.training import TIMESTEP_DISTRIBUTIONS, DiFiCTrainer
from diffclust.outputs import collection_outputs
from diffclust.seeding import make_generator, seed_everything

logger = logging.getLogger(__name__)

#: the paper's warm-up: 100 of 250 epochs distil proxy words before the cluster head trains
PAPER_WARMUP_FRACTION = 100 / 250
#: what the balance term pulls cluster sizes towards: the hand-over partition's shares, or equal sizes (the paper)
SIZE_PRIORS = ("start", "uniform")


#: the DiFiC paper's reading where our defaults depart from it (`--paper-settings`): a randomly
#: initialised head, neighbours found in the proxy words each epoch, the plain sum of the two
#: losses and the equal-size entropy. Measured against the defaults in docs/benchmarks/difc.md.
PAPER_SETTINGS = {"head_init": "random", "neighbour_space": "proxies", "cluster_gradient_ratio": None, "size_prior": "uniform"}


class DiFiC(ClusteringEstimator):
    """Fine-grained clustering by distilling each image into a proxy word of a text-to-image model.

    For each image a semantic extractor f maps a fixed UNet feature z to a proxy word ``S*``, a
    token embedding in the prompt "A photo of a ``S*``", and the frozen model must denoise the image
    from that prompt (inside an object mask). After a warm-up a cluster head g on ``S*`` trains with
    a neighbour-consistency loss and a balance term. Defaults follow the paper (SD v1.5, 512 px,
    block 19 = ``up_blocks.2.attentions.0``, t-hat 150, t-tilde 50, 250 epochs with 100 of
    warm-up, batch 32, AdamW 2e-4) apart from the additions marked below, each chosen by a
    measurement (docs: benchmarks/difc.md); ``PAPER_SETTINGS`` restores the paper's reading.

    Parameters
    ----------
    {k_parameters}
    backbone : str, Path or DiffusionBackbone, default=SD-1.5's hub id
        A text-to-image model: a diffusers folder, a hub id (the local cache first), a built-in
        name (``usps-text``, ``tiny-random``) or a backbone object.
    resolution : int, optional
        Image side in pixels (default: the backbone's own).
    feature_layer : str, default="up_blocks.2.attentions.0"
        Block b whose output is z (the paper's b = 19).
    feature_timestep : int, default=150
        t-hat, the timestep of z (empty prompt, one noise tensor shared by all images).
    mask_timestep : int, default=50
        t-tilde, the timestep of the object mask (the end-of-text token's cross-attention).
    prompt_template : str, default="A photo of a S*"
        The prompt ``S*`` is placed in.
    mask_prompt : str, default="A photo of a"
        The prompt whose end-of-text token gives the mask (without ``S*``, so the mask is a
        per-image constant; our reading).
    object_concentration : bool, default=True
        Compute the diffusion loss inside the object mask (False: the whole image; ablation).
    cluster_guidance : bool, default=True
        Train the cluster head after warm-up (False: k-means on ``S*`` decides; ablation).
    head_init : {"manifold", "kmeans", "random"}, default="manifold"
        *Our addition.* How g starts: by fitting k-means in UMAP embeddings of z, k-means of ``S*``
        after warm-up, or randomly (the literal reading).
    start_margin : float, default=0.1
        *Our addition.* When the final clusters keep fewer than ``1 - start_margin`` of the images
        in their start cluster (the partition g started from), the fit keeps whichever of the two
        has the higher modularity on the nearest-neighbour graph of z (no label read), and says
        so. 1.0: always the trained one.
    timestep_sampling : {"cosine", "uniform"}, default="cosine"
        p(t) of the diffusion loss: proportional to 1 + cos(pi t / T) (the paper) or uniform.
    epochs : int, default=250
        Epochs in all.
    warmup_epochs : int or "auto", default="auto"
        Epochs of distillation before g trains; "auto" keeps the paper's 100 of 250 for any
        ``epochs``. A number must leave g at least one epoch.
    batch_size : int, default=32
        Images per step and process.
    lr : float, default=2e-4
        AdamW's learning rate.
    weight_decay : float, default=0.01
        AdamW's weight decay.
    n_neighbours : int, default=10
        Neighbours of the consistency loss.
    neighbour_space : {"features", "proxies"}, default="features"
        *Our addition.* Find the neighbours once in z ("features") or in ``S*`` each epoch.
    memory_bank_size : int, default=512
        Past assignments that join the batch's in the balance term.
    entropy_weight : float, default=5.0
        lambda's factor: lambda = entropy_weight (U + N) / N.
    cluster_loss_weight : float, default=1.0
        Weight of the cluster loss beside the diffusion loss.
    cluster_gradient_ratio : float or None, default=0.0
        *Our addition.* Cap on the cluster loss's gradient reaching ``S*`` (and f), as a multiple of
        the diffusion loss's; 0 trains f on distillation alone, None is the paper's plain sum.
    size_prior : {"start", "uniform"}, default="start"
        *Our addition.* Hold cluster sizes near the hand-over partition's shares ("start"), or
        pull them to equal sizes with the paper's entropy ("uniform").
    extractor_hidden : int, optional
        Width of f's convolutions (default: z's channels).
    cache_precision : {"fp16", "int8"}, default="fp16"
        How the cached z is stored; int8 halves the cache.
    weights_dtype, text_encoder_dtype : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Storage type of the frozen UNet and text encoder while f and g train ("auto": bf16 on
        CUDA; the text encoder also in bf16 on a CPU with bf16 matrix units).
    gradient_checkpointing, channels_last : {"auto", "on", "off"}, default="auto"
        Recompute UNet blocks in the backward pass; NHWC weights ("auto": on with CUDA).
    offload_vae : bool, default=True
        Move the VAE off the GPU once the constants are cached.
    fused_attention : bool, default=True
        PyTorch's SDPA in every attention layer.
    compile_unet : bool, default=False
        ``torch.compile`` the UNet for the training passes.
    tf32 : bool, default=True
        TF32 matmuls on Ampere and newer GPUs.
    mixed_precision : {"no", "bf16", "fp16"}, default="no"
        Autocast of the backbone on a GPU (accelerate's setting).
    {run_parameters}
    cache_dir : str or Path, optional
        Where the per-image constants are cached (default: the run folder, else
        ``$DIFFCLUST_HOME/constants``).

    Attributes
    ----------
    labels_ : ndarray of shape (n_images,)
        The cluster of each image, in the order of ``files_``.
    files_ : list of str
        The images that were clustered (unreadable ones are in ``skipped_``).
    confidence_ : ndarray of shape (n_images,)
        The head's probability of each image's cluster.
    proxy_words_ : ndarray of shape (n_images, token_dim)
        The distilled ``S*`` of each image.
    start_agreement_ : float or None
        The share of images whose final cluster is their start cluster (matched one to one;
        None when there was no start, or a resume past it).
    kept_partition_ : {"trained", "start"}
        Which partition ``labels_`` holds (see ``start_margin``).
    n_clusters_ : int
        K, chosen when ``n_clusters="auto"``.
    k_selection_ : KSelection or None
        The criterion's curve when K was chosen.
    history_ : list of dict
        The metrics log, one row per epoch (losses; ACC/NMI/ARI when labels are known).
    skipped_ : list
        The files that were set aside, with the reason.

    Examples
    --------
    >>> from diffclust import DiFiC
    >>> model = DiFiC(n_clusters=5, backbone="usps-text", epochs=8).fit("odd-digits/")  # doctest: +SKIP
    >>> model.labels_[:5]  # doctest: +SKIP
    """

    method = "difc"
    fitted_attribute = "network_"

    def __init__(
        self,
        n_clusters: int | str = 10,
        *,
        k_range: tuple[int, int] | None = None,
        k_criterion: str = "umap_hdbscan",
        backbone: str | DiffusionBackbone = SD15_HUB_ID,
        resolution: int | None = None,
        feature_layer: str = "up_blocks.2.attentions.0",
        feature_timestep: int = 150,
        mask_timestep: int = 50,
        prompt_template: str = "A photo of a S*",
        mask_prompt: str = "A photo of a",
        object_concentration: bool = True,
        cluster_guidance: bool = True,
        head_init: str = "manifold",
        start_margin: float = 0.1,
        timestep_sampling: str = "cosine",
        epochs: int = 250,
        warmup_epochs: int | str = "auto",
        batch_size: int = 32,
        lr: float = 2e-4,
        weight_decay: float = 1e-2,
        n_neighbours: int = 10,
        neighbour_space: str = "features",
        memory_bank_size: int = 512,
        entropy_weight: float = 5.0,
        cluster_loss_weight: float = 1.0,
        cluster_gradient_ratio: float | None = 0.0,
        size_prior: str = "start",
        extractor_hidden: int | None = None,
        cache_precision: str = "fp16",
        weights_dtype: str = "auto",
        text_encoder_dtype: str = "auto",
        gradient_checkpointing: bool | str = "auto",
        offload_vae: bool = True,
        channels_last: bool | str = "auto",
        fused_attention: bool = True,
        compile_unet: bool = False,
        tf32: bool = True,
        device: str = "auto",
        mixed_precision: str = "no",
        random_state: int = 0,
        output_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        num_workers: int = 0,
        strict: bool = False,
        folder_labels: bool = True,
        progress: bool = True,
    ):
        self._keep_settings(locals())

    def _setting_problems(self) -> list[str]:
        problems = []
        if self.warmup_epochs != "auto" and (not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0):
            problems.append(f"warmup_epochs must be 'auto' or an integer >= 0, got {self.warmup_epochs!r}")
        elif self.cluster_guidance and self.epochs > 0 and self.resolved_warmup_epochs() >= self.epochs:
            problems.append(f"warmup_epochs ({self.warmup_epochs}) must be less than epochs ({self.epochs}), or the cluster head "
                            "never trains: lower --warmup-epochs (or leave it 'auto', the paper's 100/250 of the epochs), "
                            "raise --epochs, or pass --no-cluster-guidance to cluster by k-means on the proxy words")
        if self.timestep_sampling not in TIMESTEP_DISTRIBUTIONS:
            problems.append(f"timestep_sampling must be one of {sorted(TIMESTEP_DISTRIBUTIONS)}, got {self.timestep_sampling!r}")
        if self.head_init not in ("manifold", "kmeans", "random"):
            problems.append(f"head_init must be 'manifold', 'kmeans' or 'random', got {self.head_init!r}")
        problems += margin_problems(self.start_margin)
        if self.neighbour_space not in ("features", "proxies"):
            problems.append(f"neighbour_space must be 'features' or 'proxies', got {self.neighbour_space!r}")
        ratio = self.cluster_gradient_ratio
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio >= 0 or ratio == float("inf")):
            problems.append("cluster_gradient_ratio (--cluster-gradient-ratio) must be a finite number >= 0, or None for the paper's plain sum; "
                            f"got {self.cluster_gradient_ratio!r}")
        if self.size_prior not in SIZE_PRIORS:
            problems.append(f"size_prior (--size-prior) must be one of {', '.join(SIZE_PRIORS)}, got {self.size_prior!r}")
        if self.n_neighbours < 1:
            problems.append(f"n_neighbours must be >= 1, got {self.n_neighbours}")
        if self.cache_precision not in FEATURE_STORAGES:
            problems.append(f"cache_precision (--cache-precision) must be one of {', '.join(FEATURE_STORAGES)}, got {self.cache_precision!r}")
        try:
            self._efficiency()
        except DiffclustError as error:
            problems.append(str(error))
        return problems

    def _efficiency(self) -> TrainingEfficiency:
        return TrainingEfficiency(weights_dtype=self.weights_dtype, gradient_checkpointing=self.gradient_checkpointing,
                                  offload_vae=self.offload_vae, channels_last=self.channels_last, compile_unet=self.compile_unet,
                                  tf32=self.tf32, fused_attention=self.fused_attention, text_encoder_dtype=self.text_encoder_dtype)

    # ------------------------------------------------------------------ helpers
    def resolved_warmup_epochs(self) -> int:
        """Warm-up epochs in effect: "auto" is the paper's 100 of 250, rounded (2 epochs -> 1)."""
        if self.warmup_epochs != "auto":
            return int(self.warmup_epochs)
        return min(round(self.epochs * PAPER_WARMUP_FRACTION), max(self.epochs - 1, 0))

    def _constant_settings(self, resolution: int, with_masks: bool) -> ConstantSettings:
        return ConstantSettings(resolution, self.feature_layer, self.feature_timestep, self.mask_timestep,
                                self.mask_prompt, with_masks, self.random_state, self.cache_precision)

    def _cache_folder(self, backbone: DiffusionBackbone, collection: ImageCollection, settings: ConstantSettings) -> Path:
        if self.output_dir is not None and self.cache_dir is None:
            return Path(self.output_dir) / "cache"
        key = hashlib.sha256(json.dumps(fingerprint(backbone, collection, settings), sort_keys=True).encode()).hexdigest()[:16]
        return Path(self.cache_dir or cache_root() / "constants") / key

    def _shared_noise(self, backbone: DiffusionBackbone, resolution: int) -> torch.Tensor:
        """The one noise tensor used for every image's z (part of the model: predict needs it)."""
        return torch.randn(backbone.latent_shape(resolution), generator=make_generator(self.random_state))

    # ------------------------------------------------------------------ fit
    def _choose_k_on_z(self, store: ConstantStore, saved: dict | None, run_dir: Path | None, is_main: bool) -> np.ndarray | None:
        """n_clusters "auto": K from the interrupted run's checkpoint, else chosen on every image's
        z, the rows the hand-over partition (UMAP + k-means) is built from, before training: the
        log shows K at once, not after warm-up (S* after warm-up counted worse on the built-in
        digits: docs/benchmarks/k-selection.md). Returns the z rows when it read them."""
        if saved is not None and "n_clusters" in saved:
            self.n_clusters_ = int(saved["n_clusters"])
            logger.info("K = %d, as the interrupted run chose it.", self.n_clusters_)
            return None
        rows = feature_rows(store, self.random_state)
        self._resolve_k(rows, run_dir, is_main)
        return rows

    def _fit(self, data, y, run_dir: Path | None, resume: bool) -> None:
        """Learn proxy words (and the cluster head) for the images in `data`: a folder (flat,
        class sub-folders, or with labels.csv), image files, PIL images, arrays or an ImageCollection."""
        timer = StageTimer()
        self._resolve_k(None, run_dir)  # a given K; "auto" is chosen on z once the constants are at hand
        accelerator = make_accelerator(self.device, self.mixed_precision)
        seed_everything(self.random_state)
        with timer("scan images"):
            collection = self._training_collection(data)
        self._require_samples(len(collection), "usable images were found")
        with timer("load backbone"):
            backbone = load_backbone(self.backbone, device=accelerator.device, progress=self.progress)
        resolution = self.resolution or backbone.resolution
        self._check_images_for_backbone(collection, backbone, resolution)
        if isinstance(backbone, UnconditionalBackbone):
            raise DiffclustError(
                f"DiFiC needs a text-to-image model (its proxy words go through a text encoder into the UNet's cross-attention), "
                f"but '{backbone.reference}' is an unconditional model. It serves DiEC: `diffclust fit {shlex.quote(str(collection.root))} "
                f"--method diec --backbone {shlex.quote(backbone.reference)} --k {self.n_clusters}`. For DiFiC, pass Stable Diffusion v1.5 "
                "or a model from `diffclust pretrain` without --unconditional.")
        self._check_for_backbone(backbone, resolution, feature_timestep=self.feature_timestep, mask_timestep=self.mask_timestep)
        self.warmup_epochs_ = self.resolved_warmup_epochs()
        params = self._trainer_params(files_identity(collection.files), resolution, warmup_epochs=self.warmup_epochs_)
        saved = DiFiCTrainer.check_resumable(run_dir, params) if resume else None
        shared_noise = self._shared_noise(backbone, resolution)
        settings = self._constant_settings(resolution, self.object_concentration)
        computer = ConstantComputer(backbone, settings, shared_noise)
        with timer("constants (latent, z, mask)"):
            store = load_or_compute_constants(computer, collection, self._cache_folder(backbone, collection, settings), accelerator,
                                              self.batch_size, self.num_workers, self.progress)
        z_rows = None
        if self.n_clusters == "auto":
            with timer("choose K"):
                z_rows = self._choose_k_on_z(store, saved, run_dir, accelerator.is_main_process)
        seed_everything(self.random_state)  # the network's initial weights must not depend on the cache's history
        network = DiFiCNetwork(store.shape("features")[0], backbone.token_dim, self.n_clusters_, self.cluster_guidance,
                               self.extractor_hidden).to(accelerator.device)
        trainer = DiFiCTrainer(params, backbone, store, network, accelerator, collection.labels, run_dir, self.n_clusters_, z_rows)
        efficiency = self._efficiency().resolved(accelerator.device)
        logger.info("Training passes: UNet weights %s, text encoder weights %s, gradient checkpointing %s, VAE offloaded %s, "
                    "channels_last %s, fused attention %s, compiled UNet %s.", efficiency.weights_dtype,
                    efficiency.text_encoder_dtype, efficiency.gradient_checkpointing,
                    efficiency.offload_vae, efficiency.channels_last, efficiency.fused_attention, efficiency.compile_unet)
        backbone.prepare_training(efficiency)
        try:
            with timer("training"):
                trainer.run(resume=resume)
        finally:
            backbone.finish_training()

        self.backbone_ = backbone
        self.resolution_ = resolution
        self.feature_shape_ = store.shape("features")
        self.shared_noise_ = shared_noise
        self.network_ = trainer.network.eval()
        proxies, labels, confidence = trainer.assignment
        self.kmeans_centres_ = trainer.centres
        self.proxy_words_ = proxies.cpu().numpy()
        self.labels_ = labels
        self.confidence_ = confidence
        with timer("start check"):
            self._check_against_start(trainer, trainer.start_labels, lambda: nearest_neighbours(trainer.z_rows(), CHECK_NEIGHBOURS))
        labels, confidence = self.labels_, self.confidence_
        self.files_ = collection.files
        self.skipped_ = list(collection.skipped)
        self.history_ = list(trainer.log.records)
        if run_dir is not None and accelerator.is_main_process:
            with timer("outputs"):
                self.save(run_dir)
                collection_outputs(run_dir, collection, labels, confidence)
        self._finish_run(run_dir, accelerator, timer, self.proxy_words_)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def transform(self, data) -> np.ndarray:
        """Proxy words S* (N, token_dim) of the images in `data`: image -> latent -> z -> f(z)."""
        return self._proxies(self._collect(data)).cpu().numpy()

    def _proxies(self, collection: ImageCollection) -> torch.Tensor:
        self._check_fitted()
        backbone = self._loaded_backbone()
        computer = ConstantComputer(backbone, self._constant_settings(self.resolution_, False), self.shared_noise_)
        loader = DataLoader(ImageTensorDataset(collection, self.resolution_), batch_size=self.batch_size, num_workers=self.num_workers)
        extractor = self.network_.extractor.to(backbone.device).eval()
        words = []
        for _, pixels in progress(loader, enabled=self.progress, desc="proxy words", unit="batch"):
            words.append(extractor(computer.features(computer.latents(pixels))).float())
        return torch.cat(words)

    def predict_with_confidence(self, data) -> tuple[np.ndarray, np.ndarray, ImageCollection]:
        """Clusters, confidences and the collection they refer to (skipped files included)."""
        collection = self._collect(data)
        proxies = self._proxies(collection)
        warn_if_start_kept(getattr(self, "kept_partition_", None), getattr(self, "start_agreement_", None), "cluster head")
        # k-means centres exist exactly when the head did not (yet) decide at the end of fit
        head = self.network_.head if self.kmeans_centres_ is None else None
        labels, confidence = assign(proxies, head, self.kmeans_centres_)
        return labels, confidence, collection

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        """difc.json (settings, shapes) + difc.safetensors (f, g, shared noise, k-means centres)."""
        self._check_fitted()
        folder = Path(folder)
        tensors = {f"network.{name}": value for name, value in self.network_.state_dict().items()}
        tensors["shared_noise"] = self.shared_noise_
        if self.kmeans_centres_ is not None:
            tensors["kmeans_centres"] = torch.as_tensor(self.kmeans_centres_)
        atomic_save_tensors(folder / self.weights_name(), tensors)
        self.write_config(folder, {
            "resolution": self.resolution_,
            "feature_shape": list(self.feature_shape_),
            "token_dim": int(self.network_.extractor.project.out_features),
            "has_head": self.network_.head is not None,
            # what decides the clusters: the trained head, or k-means on S* (warm-up not over, or no guidance)
            "assigned_by": "kmeans" if self.kmeans_centres_ is not None else "head",
            "warmup_epochs": self.warmup_epochs_,
            # labels_ may be the start partition, which only the fitted images have (predict warns)
            "kept_partition": self.kept_partition_,
            "start_agreement": self.start_agreement_,
        })
        return folder

    def _restore(self, state: dict, folder: Path) -> None:
        tensors = load_tensors(folder / self.weights_name())
        network = DiFiCNetwork(state["feature_shape"][0], state["token_dim"], self.n_clusters_, state["has_head"], self.extractor_hidden)
        network.load_state_dict({name[len("network."):]: value for name, value in tensors.items() if name.startswith("network.")})
        self.network_ = network.eval()
        self.resolution_ = state["resolution"]
        self.feature_shape_ = tuple(state["feature_shape"])
        self.shared_noise_ = tensors["shared_noise"]
        self.kmeans_centres_ = tensors["kmeans_centres"].numpy() if "kmeans_centres" in tensors else None
        self.warmup_epochs_ = state.get("warmup_epochs", self.warmup_epochs)
        self.kept_partition_, self.start_agreement_ = state.get("kept_partition", "trained"), state.get("start_agreement")
