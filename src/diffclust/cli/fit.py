"""`diffclust fit`: cluster a folder of images (DiFiC, DiEC) or a feature matrix (CLUDI)."""

from __future__ import annotations

from pathlib import Path

from diffclust.backbones.names import SD15_HUB_ID
from diffclust.choices import CLUDI_INITS, DIEC_INITS, FEATURE_SUFFIXES, K_CRITERIA, is_feature_file
from diffclust.cli.options import (
    METHOD_NAMES,
    add_backbone_and_device,
    add_encoder_options,
    add_report_options,
    add_search_settings,
    auto_or_int,
    auto_or_switch,
    auto_or_whole,
    check_images_and_backbone,
    common_settings,
    default_run_folder,
    k_range_type,
    k_value,
    positive_number,
    print_scores,
    ratio_or_none,
    search_settings,
    share,
    whole,
)
from diffclust.cli.report import write_report
from diffclust.datasets import missing_data_message
from diffclust.errors import DiffclustError


def add_parser(commands) -> None:
    fit = commands.add_parser("fit", help="cluster a folder of images (DiFiC, DiEC) or a feature matrix (CLUDI)",
                              description="Cluster the images under DATA (or, with --method cludi, the rows of a feature file, as DATA or --features) "
                                          "into K groups and write a run folder.")
    fit.add_argument("data", nargs="?", default=None,
                     help="image folder: flat, one sub-folder per class, or with a labels.csv (file,label[,class_name,split]); a built-in data set (usps); "
                          f"with --method cludi also a feature file ({', '.join(FEATURE_SUFFIXES)})")
    fit.add_argument("--k", type=k_value, required=True, help="number of clusters (2 <= K <= number of items), or 'auto': "
                                                              "chosen without labels, see --k-range and --k-criterion")
    fit.add_argument("--method", choices=sorted(METHOD_NAMES), default="difc",
                     help="difc: proxy words (fine-grained, needs a text-to-image backbone); diec: best layer x timestep (any UNet); cludi: diffusion "
                          "teacher-student on features")
    fit.add_argument("--out", type=Path, default=None,
                     help="run folder for checkpoints, logs, assignments.csv and the model (default: runs/<data folder name>)")
    fit.add_argument("--epochs", type=whole(0), default=None,
                     help="training epochs in all (default: DiFiC 250 as in the paper, DiEC 50, CLUDI 30, or 200 with --paper-settings)")
    fit.add_argument("--batch-size", type=whole(1), default=None, help="images per step and process (default: DiFiC 32, DiEC 256, CLUDI 256)")
    fit.add_argument("--lr", type=positive_number, default=None, help="AdamW learning rate (default: DiFiC 2e-4, DiEC 1e-3, CLUDI 1e-3 with a cosine to 1e-6)")
    fit.add_argument("--k-range", type=k_range_type, default=None, help="with --k auto: the Ks scanned, MIN:MAX (default 2 to N/5, at most 100)")
    fit.add_argument("--k-criterion", default=None, choices=list(K_CRITERIA),
                     help="with --k auto: the label-free criterion that chooses K (default: DiEC and DiFiC umap_hdbscan, CLUDI silhouette; "
                          "see the docs' Unknown K page)")
    fit.add_argument("--resume", action="store_true", help="continue the interrupted run in --out from its last checkpoint")
    fit.add_argument("--report", action="store_true", help="write RUN_DIR/report/index.html at the end (see `diffclust report`)")
    add_backbone_and_device(fit)
    difc = fit.add_argument_group("DiFiC (--method difc)")
    difc.add_argument("--warmup-epochs", type=auto_or_int, default="auto",
                      help="epochs of distillation before the cluster head trains; k-means on S* predicts meanwhile (default 'auto': the paper's 100 of 250, "
                           "scaled to --epochs)")
    difc.add_argument("--feature-layer", default="up_blocks.2.attentions.0", help="UNet module whose output is z (paper's block 19 = up_blocks.2.attentions.0)")
    difc.add_argument("--t-hat", dest="feature_timestep", type=whole(0), default=150, help="timestep at which z is read (paper: 150)")
    difc.add_argument("--t-tilde", dest="mask_timestep", type=whole(0), default=50, help="timestep of the attention map behind the object mask (paper: 50)")
    difc.add_argument("--no-object-concentration", dest="object_concentration", action="store_false",
                      help="ablation: diffusion loss over the whole image instead of the object mask")
    difc.add_argument("--no-cluster-guidance", dest="cluster_guidance", action="store_false",
                      help="ablation: no cluster head; clusters are k-means on the proxy words")
    difc.add_argument("--cluster-gradient-ratio", type=ratio_or_none, default=None,
                      help="cap on the cluster loss's gradient reaching the proxy words, as a multiple of the diffusion loss's "
                           "(default 0: the extractor learns from distillation alone; 'none': the paper's plain sum, where the "
                           "cluster loss alone retrains the extractor)")
    difc.add_argument("--size-prior", choices=["start", "uniform"], default=None,
                      help="cluster sizes the balance term pulls towards: the hand-over partition's shares (default) or equal sizes (the paper)")
    difc.add_argument("--head-init", choices=["manifold", "kmeans", "random"], default=None,
                      help="the cluster head's start: UMAP + k-means of the UNet feature z (default), k-means of the proxy words, or random")
    difc.add_argument("--neighbour-space", choices=["features", "proxies"], default=None,
                      help="where the head's neighbours are found: in z, once (default), or in the proxy words each epoch")
    difc.add_argument("--timestep-sampling", choices=["cosine", "uniform"], default="cosine",
                      help="p(t) for the diffusion loss: 1 + cos(pi t / T) (paper) or uniform")
    speed = fit.add_argument_group("DiFiC training passes: memory and speed ('auto' saves memory on CUDA, keeps speed on CPU)")
    speed.add_argument("--weights-dtype", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                       help="storage type of the frozen UNet (and text encoder) during training (auto: bf16 on CUDA, fp32 elsewhere)")
    speed.add_argument("--text-encoder-dtype", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                       help="storage type of the frozen text encoder during training (auto: as --weights-dtype; bf16 on a CPU "
                            "with AMX, where it is faster, when --weights-dtype is auto too)")
    speed.add_argument("--gradient-checkpointing", type=auto_or_switch, default="auto",
                       help="recompute UNet blocks and the text encoder in the backward pass (auto: on with CUDA)")
    speed.add_argument("--keep-vae", dest="offload_vae", action="store_false", help="keep the VAE on the GPU during training (default: offloaded)")
    speed.add_argument("--channels-last", type=auto_or_switch, default="auto", help="UNet in channels_last memory format (auto: on with CUDA)")
    speed.add_argument("--no-fused-attention", dest="fused_attention", action="store_false",
                       help="explicit attention instead of PyTorch's fused SDPA kernels")
    speed.add_argument("--compile-unet", action="store_true", help="torch.compile the UNet for training (minutes of compiling first)")
    speed.add_argument("--no-tf32", dest="tf32", action="store_false", help="full float32 matmuls on Ampere and newer GPUs")
    speed.add_argument("--cache-precision", choices=["fp16", "int8"], default="fp16",
                       help="how the cached z is stored: fp16, or int8 with a scale per image and channel (half the disk)")
    speed.add_argument("--cache-dir", type=Path, default=None,
                       help="where DiFiC keeps its per-image constants (default: RUN_DIR/cache; a larger or faster disk helps)")
    fit.add_argument("--start-margin", type=share, default=None,
                     help="DiFiC and CLUDI: when training moves more than this share of the rows out of the cluster they started "
                          "in, keep the partition with the higher kNN-graph modularity, start or trained (default 0.1; 1: always "
                          "the trained one)")
    diec = fit.add_argument_group("DiEC (--method diec)")
    fit.add_argument("--init", choices=list(dict.fromkeys([*DIEC_INITS, *CLUDI_INITS])), default=None,
                     help="DiEC and CLUDI start: k-means in a UMAP embedding (DiEC's default), the median of k-means and spectral "
                          "clusterings (CLUDI's default), spectral clustering of the kNN graph (CLUDI), k-means (DEC's start), "
                          "or random weights (CLUDI, published)")
    diec.add_argument("--frozen", dest="finetune_unet", action="store_const", const=False, default=None,
                      help="keep the UNet frozen (no denoising loss; features computed once); the default on a CPU")
    diec.add_argument("--finetune-unet", dest="finetune_unet", action="store_const", const=True,
                      help="fine-tune the UNet with a parallel denoising loss (the paper's; the default on a GPU)")
    diec.add_argument("--unet-lr", type=positive_number, default=1e-5, help="learning rate of the fine-tuned UNet")
    diec.add_argument("--self-label-epochs", type=whole(0), default=None,
                      help="epochs whose target is the start partition (self-labelling) before DEC's sharpened target "
                           "(default 10; 0: plain DEC)")
    diec.add_argument("--graph-weight", type=float, default=1.0, help="weight of the neighbour-agreement (graph) regulariser")
    diec.add_argument("--entropy-weight", type=float, default=1.0, help="weight of the entropy regulariser against empty clusters")
    diec.add_argument("--denoising-weight", type=float, default=1.0, help="weight of the parallel denoising loss (fine-tuning only)")
    cludi = fit.add_argument_group("CLUDI (--method cludi)")
    cludi.add_argument("--features", type=Path, default=None, help="feature matrix N x d (.npy, .pt, .safetensors) to cluster instead of images "
                                                                  "(rows named by FEATURES.files.csv when `diffclust features` wrote it)")
    add_encoder_options(cludi)
    cludi.add_argument("--labels", type=Path, default=None,
                       help="labels of the feature rows, for the metrics log only (.npy, or labels.csv with file = row index)")
    fit.add_argument("--paper-settings", action="store_true",
                     help="the published procedure, under any option given explicitly. DiFiC: random head start, neighbours in the "
                          "proxy words, the plain sum of the losses, equal-size entropy. DiEC: CH search index, k-means start, plain "
                          "DEC targets. CLUDI: 200 epochs, lr 1e-4, teacher 25 steps, prediction 64 x 50, random start, no "
                          "self-labelling (hours on a CPU, for GPUs)")
    cludi.add_argument("--teacher-neighbours", type=whole(0), default=None, help="the teacher reads one of each row's k nearest "
                                                                                  "neighbours (0: the row itself, published)")
    cludi.add_argument("--no-self-labelling", dest="self_labelling", action="store_false", default=None,
                       help="keep the teacher's assignment (published) instead of relabelling every row by a linear classifier "
                            "trained on the rows whose neighbours agree with their cluster")
    cludi.add_argument("--balanced", action="store_true", default=None,
                       help="the groups are known to be equally large (a benchmark built that way): self-labelling gives every "
                            "cluster the same number of rows. Off by default: it breaks groups of unequal size apart")
    cludi.add_argument("--ema-decay", type=float, default=None, help="teacher = EMA of the student with this decay")
    cludi.add_argument("--teacher-steps", type=whole(1), default=None, help="DDIM steps of the teacher's samples (eta 1)")
    cludi.add_argument("--ce-weight", type=float, default=None, help="weight of the two-way cross-entropy against the embedding MSE")
    cludi.add_argument("--predict-samples", type=auto_or_whole(1), default=None,
                       help="sampled embeddings averaged per row at prediction (default auto: 16, fewer beyond 10,000 rows)")
    cludi.add_argument("--epoch-steps", type=whole(0), default=None,
                       help="steps per epoch, on a fresh sample of rows, once the data is larger (default 40; 0: every row once "
                            "per epoch, published)")
    cludi.add_argument("--predict-steps", type=whole(1), default=None, help="DDIM steps of each prediction sample")
    cludi.add_argument("--embedding-dim", type=whole(1), default=None, help="size of the assignment embeddings")
    cludi.add_argument("--hidden-dim", type=whole(1), default=None, help="width of the denoiser MLP")
    add_search_settings(fit)
    add_report_options(fit)


def _method_settings(args) -> dict:
    """The chosen method's settings from the command line. Only its own option groups are read
    (DiEC's --entropy-weight must not reach DiFiC's lambda), and unset ones keep its defaults."""
    given = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "k_range": args.k_range, "k_criterion": args.k_criterion}
    settings = {**common_settings(args),
                **{key: value for key, value in given.items() if value is not None}}
    if args.method == "difc":
        from diffclust.methods.difc.estimator import PAPER_SETTINGS

        settings.update(warmup_epochs=args.warmup_epochs, feature_layer=args.feature_layer, feature_timestep=args.feature_timestep,
                        mask_timestep=args.mask_timestep, object_concentration=args.object_concentration,
                        cluster_guidance=args.cluster_guidance, timestep_sampling=args.timestep_sampling,
                        weights_dtype=args.weights_dtype, text_encoder_dtype=args.text_encoder_dtype,
                        gradient_checkpointing=args.gradient_checkpointing, offload_vae=args.offload_vae,
                        channels_last=args.channels_last, fused_attention=args.fused_attention, compile_unet=args.compile_unet,
                        tf32=args.tf32, cache_precision=args.cache_precision, cache_dir=args.cache_dir)
        given = dict(head_init=args.head_init, neighbour_space=args.neighbour_space, size_prior=args.size_prior,
                     start_margin=args.start_margin)
        if args.cluster_gradient_ratio is not None:  # its own 'none' (the paper's plain sum) arrives as the string
            given["cluster_gradient_ratio"] = None if args.cluster_gradient_ratio == "none" else args.cluster_gradient_ratio
    else:  # DiEC, and CLUDI on images, read UNet features
        settings.update(search_settings(args))
    if args.method == "diec":
        from diffclust.methods.diec.estimator import PAPER_SETTINGS

        settings.update(unet_lr=args.unet_lr, graph_weight=args.graph_weight,
                        entropy_weight=args.entropy_weight, denoising_weight=args.denoising_weight)
        given = dict(init=args.init, self_label_epochs=args.self_label_epochs, finetune_unet=args.finetune_unet)
    if args.method == "cludi":
        from diffclust.methods.cludi.estimator import PAPER_SETTINGS

        settings.update(encoder=args.encoder, pooling=args.pooling)
        given = dict(init=args.init, teacher_neighbours=args.teacher_neighbours, ema_decay=args.ema_decay,
                     teacher_steps=args.teacher_steps, ce_weight=args.ce_weight, predict_samples=args.predict_samples,
                     epoch_steps=args.epoch_steps, start_margin=args.start_margin,
                     predict_steps=args.predict_steps, embedding_dim=args.embedding_dim, hidden_dim=args.hidden_dim,
                     self_labelling=args.self_labelling, balanced=args.balanced)
    # every method: the published settings, under any option given explicitly (--epochs and --search-score included)
    paper = {key: value for key, value in PAPER_SETTINGS.items() if key not in settings} if args.paper_settings else {}
    settings.update(paper)
    settings.update({key: value for key, value in given.items() if value is not None or key == "cluster_gradient_ratio"})
    return settings


def build_model(args, out: Path):
    """The estimator `diffclust fit` runs: the chosen method with the command line's settings."""
    from diffclust.methods.registry import METHODS

    estimator = METHODS[args.method]
    wanted = set(estimator._get_param_names())
    return estimator(args.k, output_dir=out, **{key: value for key, value in _method_settings(args).items() if key in wanted})


def fit_input(args):
    """(what to fit on, labels or None, a name for the run folder)."""
    if args.method == "cludi" and args.features is not None:
        if args.data is not None:
            raise DiffclustError("Give either DATA (images) or --features FILE, not both.")
        from diffclust.methods.cludi.inputs import read_feature_file, read_row_labels

        values, _ = read_feature_file(args.features)  # checked here, read again by CLUDI with its row names
        labels = read_row_labels(args.labels, len(values)) if args.labels is not None else None
        folder = args.features.resolve().parent.name
        return args.features, labels, f"{folder}-{args.features.stem}" if folder else args.features.stem  # features.npy files differ by folder
    if args.features is not None or args.labels is not None:
        raise DiffclustError("--features and --labels belong to --method cludi; other methods read labels from DATA.")
    if args.data is None:
        raise DiffclustError("fit needs DATA, an image folder" + (" (or --features FILE)." if args.method == "cludi" else "."))
    return args.data, None, Path(args.data).resolve().name


def feature_file_as_data(args) -> None:
    """`diffclust fit FEATURES.npy --method cludi` reads the file as --features (as CLUDI.fit
    does in Python); other methods cluster images, and say so."""
    if args.data is None or not is_feature_file(Path(args.data).expanduser()):
        return
    if args.method != "cludi":
        raise DiffclustError(f"'{args.data}' is a feature file, and --method {args.method} clusters images (an image folder or a "
                             f"labels.csv). To cluster feature rows, run: diffclust fit --method cludi --features {args.data} --k K")
    if args.features is not None:
        raise DiffclustError("Give either DATA or --features FILE, not both.")
    args.features, args.data = Path(args.data).expanduser(), None


def check_paths(args) -> None:
    """The paths a user mistypes, checked before torch loads (seconds): a mistake is answered at once."""
    if args.data is not None and not Path(args.data).expanduser().exists():
        raise DiffclustError(missing_data_message(args.data))
    for option, path in (("--features", args.features), ("--labels", args.labels)):
        if path is not None and not Path(path).expanduser().is_file():
            raise DiffclustError(f"{option} '{path}' does not exist or is not a file.")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise DiffclustError(f"output_dir (--out) '{args.out}' is a file, not a folder: choose a folder name.")
    if args.data is not None and args.features is None:
        backbone = args.backbone or (SD15_HUB_ID if args.method in ("difc", "diec") else None)
        check_images_and_backbone(args.data, None if args.encoder else backbone, args.folder_labels)


def run(args) -> int:
    feature_file_as_data(args)
    check_paths(args)
    data, labels, name = fit_input(args)
    out = args.out or default_run_folder(args.data, name)
    model = build_model(args, out)
    model.fit(data, labels, resume=args.resume)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return 0
    used = len(set(model.labels_.tolist()))
    kind = "rows" if args.features is not None else "images"
    chosen = f" (K chosen by {model.k_selection_.criterion}; see k_selection.png)" if getattr(model, "k_selection_", None) else ""
    print(f"{METHOD_NAMES[args.method]}: clustered {len(model.labels_)} {kind} into {used} of {model.n_clusters_} clusters{chosen}; "
          f"skipped {sum(s.is_image for s in model.skipped_)} unreadable.")
    if args.method == "diec":
        print(f"Clustered at {model.layer_}, t={model.timestep_}" + (" (see search.png)" if model.search_result_ else ""))
    print(f"Run folder: {out}  (assignments.csv, skipped.csv, metrics.csv, model {model.weights_name()})")
    last = model.history_[-1] if model.history_ else {}
    final = {key[len("final_"):]: value for key, value in last.items() if key.startswith("final_")} or last
    if "acc" in final:
        print_scores(final, f"Against the labels from {model.label_source_} (used only to score): ")
    if args.report:
        write_report(out, args)
    return 0
