"""`diffclust` command line: a thin layer over the library (fit, predict, evaluate, pretrain, search).

Only the standard library is imported up front, so `--help` and argument errors answer at
once; torch, diffusers and transformers load when a command runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path

from diffclust import __version__
from diffclust.backbones.names import BUILTIN_BACKBONES, SD15_HUB_ID
from diffclust.choices import CLUDI_INITS, DIEC_INITS, K_CRITERIA, SEARCH_SCORES
from diffclust.errors import DiffclustError

logger = logging.getLogger("diffclust")

BACKBONE_HELP = (
    f"backbone: a built-in name ({', '.join(BUILTIN_BACKBONES)}), a local folder in the diffusers SD-1.x layout "
    f"(unet/, vae/, text_encoder/, tokenizer/, scheduler/), or a Hugging Face hub id (default for DiFiC and DiEC: {SD15_HUB_ID}; "
    "needs network or a filled HF cache; set HF_HUB_OFFLINE=1 to use the cache only)"
)


METHOD_NAMES = {"difc": "DiFiC", "diec": "DiEC", "cludi": "CLUDI"}


def _comma_list(kind):
    """argparse type: 'a,b,c' -> [kind(a), kind(b), kind(c)]."""
    def parse(text: str):
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got '{text}'") from None

    return parse


def _whole(low: int):
    """argparse type: an integer >= low (argparse then reports a bad value with exit code 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _k_value(text: str):
    """argparse type for --k: 'auto' or an integer >= 2."""
    return text if text == "auto" else _whole(2)(text)


def _k_range(text: str) -> tuple[int, int]:
    from diffclust.cluster.k_selection import parse_k_range

    try:
        return parse_k_range(text)
    except DiffclustError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _auto_or_int(text: str):
    """argparse type: 'auto' or an integer >= 0."""
    return text if text == "auto" else _whole(0)(text)


def _auto_or_switch(text: str):
    """argparse type: 'auto', 'on' or 'off'."""
    choices = {"auto": "auto", "on": True, "off": False}
    if text not in choices:
        raise argparse.ArgumentTypeError(f"expected auto, on or off, got '{text}'")
    return choices[text]


def _add_backbone_and_device(parser) -> None:
    parser.add_argument("--backbone", default=None, help=BACKBONE_HELP)
    parser.add_argument("--resolution", type=_whole(1), default=None, help="image size in pixels (default: the backbone's own, 512 for SD v1.5)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="where to run (several GPUs: launch with `accelerate launch`)")
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no", help="autocast precision on GPU")
    parser.add_argument("--seed", "--random-state", dest="seed", type=_whole(0), default=0, help="random seed (random_state in the API): the same seed gives the same clusters")
    parser.add_argument("--strict", action="store_true", help="stop with an error on unreadable images instead of skipping them")
    parser.add_argument("--no-folder-labels", dest="folder_labels", action="store_false", help="read a folder of sub-folders (e.g. photos/2023, photos/2024) as unlabelled instead of one class per sub-folder")
    parser.add_argument("--num-workers", type=_whole(0), default=0, help="image-loading worker processes")
    _add_quiet(parser)


def _add_quiet(parser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars (diffclust's, and the model libraries' loading bars)")


def _add_search_settings(parser) -> None:
    """DiEC's search settings, shared by `fit --method diec` and `search`."""
    group = parser.add_argument_group("UNet features and DiEC's search (--method diec; cludi on images; `diffclust search`)")
    group.add_argument("--layer", default="auto", help="UNet block whose pooled output is the feature ('auto': search)")
    group.add_argument("--timestep", type=_auto_or_int, default="auto", help="timestep at which it is read ('auto': search)")
    group.add_argument("--search", choices=["two-stage", "grid"], default="two-stage", help="two-stage: fix the layer, then a Fibonacci (golden-section) search over t; grid: every layer x --search-timesteps")
    group.add_argument("--search-layer", default="bottleneck", help="two-stage layer: 'bottleneck' (mid_block), 'probe' (best block at --probe-timestep), or a module path")
    group.add_argument("--probe-timestep", type=int, default=None, help="timestep at which 'probe' compares the blocks (default: a tenth into the range)")
    group.add_argument("--search-layers", type=_comma_list(str), default=None, help="candidate blocks, comma-separated (default: every top-level UNet block)")
    group.add_argument("--search-timesteps", type=_comma_list(int), default=None, help="grid timesteps, comma-separated (default: 10 evenly spaced over the range)")
    group.add_argument("--timestep-range", type=_comma_list(int), default=None, help="LOW,HIGH timesteps searched (default: 0,T-1)")
    group.add_argument("--search-score", choices=list(SEARCH_SCORES), default=None,
                       help="internal index of k-means on the subset: its silhouette in a UMAP embedding (default), or CH / silhouette "
                            "in the features (CH: the DiEC paper's)")
    group.add_argument("--search-subset", type=int, default=1000, help="random images the search scores")
    group.add_argument("--noise-draws", type=int, default=4, help="noise draws averaged per feature")
    group.add_argument("--pool-size", type=int, default=4, help="activations are average-pooled to this size squared, then flattened")


def _add_fit_parser(commands) -> None:
    fit = commands.add_parser("fit", help="cluster a folder of images (DiFiC, DiEC) or a feature matrix (CLUDI)",
                              description="Cluster the images under DATA (or, with --method cludi, the rows of --features) "
                                          "into K groups and write a run folder.")
    fit.add_argument("data", nargs="?", default=None, help="image folder: flat, one sub-folder per class, or with a labels.csv (file,label[,class_name,split])")
    fit.add_argument("--k", type=_k_value, required=True, help="number of clusters (2 <= K <= number of items), or 'auto': "
                                                              "chosen without labels, see --k-range and --k-criterion")
    fit.add_argument("--method", choices=sorted(METHOD_NAMES), default="difc", help="difc: proxy words (fine-grained, needs a text-to-image backbone); diec: best layer x timestep (any UNet); cludi: diffusion teacher-student on features")
    fit.add_argument("--out", type=Path, default=None, help="run folder for checkpoints, logs, assignments.csv and the model (default: runs/<data folder name>)")
    fit.add_argument("--epochs", type=_whole(0), default=None, help="training epochs in all (default: DiFiC 250 as in the paper, DiEC 50, CLUDI 30, or 200 with --paper-settings)")
    fit.add_argument("--batch-size", type=_whole(1), default=None, help="images per step and process (default: DiFiC 32, DiEC 256, CLUDI 256)")
    fit.add_argument("--lr", type=_positive_number, default=None, help="AdamW learning rate (default: DiFiC 2e-4, DiEC 1e-3, CLUDI 1e-3 with a cosine to 1e-6)")
    fit.add_argument("--k-range", type=_k_range, default=None, help="with --k auto: the Ks scanned, MIN:MAX (default 2 to N/5, at most 100)")
    fit.add_argument("--k-criterion", default="silhouette",
                     choices=list(K_CRITERIA), help="with --k auto: the label-free criterion that chooses K (see README)")
    fit.add_argument("--resume", action="store_true", help="continue the interrupted run in --out from its last checkpoint")
    fit.add_argument("--report", action="store_true", help="write RUN_DIR/report/index.html at the end (see `diffclust report`)")
    _add_backbone_and_device(fit)
    difc = fit.add_argument_group("DiFiC (--method difc)")
    difc.add_argument("--warmup-epochs", type=_auto_or_int, default="auto", help="epochs of distillation before the cluster head trains; k-means on S* predicts meanwhile (default 'auto': the paper's 100 of 250, scaled to --epochs)")
    difc.add_argument("--feature-layer", default="up_blocks.2.attentions.0", help="UNet module whose output is z (paper's block 19 = up_blocks.2.attentions.0)")
    difc.add_argument("--t-hat", dest="feature_timestep", type=_whole(0), default=150, help="timestep at which z is read (paper: 150)")
    difc.add_argument("--t-tilde", dest="mask_timestep", type=_whole(0), default=50, help="timestep of the attention map behind the object mask (paper: 50)")
    difc.add_argument("--no-object-concentration", dest="object_concentration", action="store_false", help="ablation: diffusion loss over the whole image instead of the object mask")
    difc.add_argument("--no-cluster-guidance", dest="cluster_guidance", action="store_false", help="ablation: no cluster head; clusters are k-means on the proxy words")
    difc.add_argument("--timestep-sampling", choices=["cosine", "uniform"], default="cosine", help="p(t) for the diffusion loss: 1 + cos(pi t / T) (paper) or uniform")
    speed = fit.add_argument_group("DiFiC training passes: memory and speed ('auto' saves memory on CUDA, keeps speed on CPU)")
    speed.add_argument("--weights-dtype", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                       help="storage type of the frozen UNet and text encoder during training (auto: bf16 on CUDA, fp32 elsewhere)")
    speed.add_argument("--gradient-checkpointing", type=_auto_or_switch, default="auto",
                       help="recompute UNet blocks and the text encoder in the backward pass (auto: on with CUDA)")
    speed.add_argument("--keep-vae", dest="offload_vae", action="store_false", help="keep the VAE on the GPU during training (default: offloaded)")
    speed.add_argument("--channels-last", type=_auto_or_switch, default="auto", help="UNet in channels_last memory format (auto: on with CUDA)")
    speed.add_argument("--no-fused-attention", dest="fused_attention", action="store_false",
                       help="explicit attention instead of PyTorch's fused SDPA kernels")
    speed.add_argument("--compile-unet", action="store_true", help="torch.compile the UNet for training (minutes of compiling first)")
    speed.add_argument("--no-tf32", dest="tf32", action="store_false", help="full float32 matmuls on Ampere and newer GPUs")
    speed.add_argument("--cache-precision", choices=["fp16", "int8"], default="fp16",
                       help="how the cached z is stored: fp16, or int8 with a scale per image and channel (half the disk)")
    speed.add_argument("--cache-dir", type=Path, default=None,
                       help="where DiFiC keeps its per-image constants (default: RUN_DIR/cache; a larger or faster disk helps)")
    diec = fit.add_argument_group("DiEC (--method diec)")
    fit.add_argument("--init", choices=list(dict.fromkeys([*DIEC_INITS, *CLUDI_INITS])), default=None,
                     help="DiEC and CLUDI start: k-means in a UMAP embedding (DiEC's default), the median of k-means and spectral "
                          "clusterings (CLUDI's default), spectral clustering of the kNN graph (CLUDI), k-means (DEC's start), "
                          "or random weights (CLUDI, published)")
    diec.add_argument("--frozen", dest="finetune_unet", action="store_const", const=False, default=None,
                      help="keep the UNet frozen (no denoising loss; features computed once); the default on a CPU")
    diec.add_argument("--finetune-unet", dest="finetune_unet", action="store_const", const=True,
                      help="fine-tune the UNet with a parallel denoising loss (the paper's; the default on a GPU)")
    diec.add_argument("--unet-lr", type=_positive_number, default=1e-5, help="learning rate of the fine-tuned UNet")
    diec.add_argument("--self-label-epochs", type=_whole(0), default=None,
                      help="epochs whose target is the start partition (self-labelling) before DEC's sharpened target "
                           "(default 10; 0: plain DEC)")
    diec.add_argument("--graph-weight", type=float, default=1.0, help="weight of the neighbour-agreement (graph) regulariser")
    diec.add_argument("--entropy-weight", type=float, default=1.0, help="weight of the entropy regulariser against empty clusters")
    diec.add_argument("--denoising-weight", type=float, default=1.0, help="weight of the parallel denoising loss (fine-tuning only)")
    cludi = fit.add_argument_group("CLUDI (--method cludi)")
    cludi.add_argument("--features", type=Path, default=None, help="feature matrix N x d (.npy, .pt, .safetensors) to cluster instead of images "
                                                                  "(rows named by FEATURES.files.csv when `diffclust features` wrote it)")
    _add_encoder_options(cludi)
    cludi.add_argument("--labels", type=Path, default=None, help="labels of the feature rows, for the metrics log only (.npy, or labels.csv with file = row index)")
    fit.add_argument("--paper-settings", action="store_true",
                     help="DiEC and CLUDI: the published procedure, under any option given explicitly. DiEC: CH search index, "
                          "k-means start, plain DEC targets. CLUDI: 200 epochs, lr 1e-4, teacher 25 steps, prediction 64 x 50, "
                          "random start (hours on a CPU, for GPUs). DiFiC's defaults already are the paper's")
    cludi.add_argument("--teacher-neighbours", type=_whole(0), default=None, help="the teacher reads one of each row's k nearest "
                                                                                  "neighbours (0: the row itself, published)")
    cludi.add_argument("--ema-decay", type=float, default=None, help="teacher = EMA of the student with this decay")
    cludi.add_argument("--teacher-steps", type=_whole(1), default=None, help="DDIM steps of the teacher's samples (eta 1)")
    cludi.add_argument("--ce-weight", type=float, default=None, help="weight of the two-way cross-entropy against the embedding MSE")
    cludi.add_argument("--predict-samples", type=_whole(1), default=None, help="sampled embeddings averaged per prediction")
    cludi.add_argument("--predict-steps", type=_whole(1), default=None, help="DDIM steps of each prediction sample")
    cludi.add_argument("--embedding-dim", type=_whole(1), default=None, help="size of the assignment embeddings")
    cludi.add_argument("--hidden-dim", type=_whole(1), default=None, help="width of the denoiser MLP")
    _add_search_settings(fit)
    _add_report_options(fit)


def _add_encoder_options(group) -> None:
    group.add_argument("--encoder", default=None, help="vision transformer that turns images into features (ViT, DINO, DINOv2, CLIP): "
                                                      "a folder saved with transformers, or a hub id such as facebook/dinov2-small")
    group.add_argument("--pooling", choices=["cls", "mean"], default="cls", help="the image's vector: the CLS token (CLIP: its image "
                                                                                 "embedding) or the mean of the patch tokens; L2-normalised")


def _add_features_parser(commands) -> None:
    features = commands.add_parser("features", help="encode images with a vision transformer into a feature file (for CLUDI)",
                                   description="Encode every image under DATA with --encoder and write --out (N x D, one row per "
                                               "image), OUT.files.csv (row, file, and labels when known) and OUT.skipped.csv. "
                                               "Shards are kept in OUT.npy.parts/ while it runs: run it again to continue.")
    features.add_argument("data", help="image folder: flat, one sub-folder per class, or with a labels.csv")
    features.add_argument("--out", type=Path, required=True, help="feature file to write (.npy)")
    _add_encoder_options(features)
    features.add_argument("--batch-size", type=_whole(1), default=64, help="images per encoder batch")
    features.add_argument("--shard-size", type=_whole(1), default=1024, help="rows per shard (the unit an interrupted run keeps)")
    features.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="where to run")
    features.add_argument("--strict", action="store_true", help="stop with an error on unreadable images instead of skipping them")
    features.add_argument("--no-folder-labels", dest="folder_labels", action="store_false", help="read sub-folders as unlabelled")
    _add_quiet(features)


def _add_search_parser(commands) -> None:
    search = commands.add_parser("search", help="find the clustering-optimal UNet layer and timestep (DiEC's search)",
                                 description="Score UNet layers x timesteps by k-means clusterability on a subset of DATA; "
                                             "print the chosen pair and write search.csv, search.png (score against t, a line per layer) and search.json to --out.")
    search.add_argument("data", help="image folder (labels are not used)")
    search.add_argument("--k", type=_whole(2), required=True, help="number of clusters k-means looks for")
    search.add_argument("--out", type=Path, default=None, help="folder for search.csv/png/json (default: runs/<data folder name>-search)")
    search.add_argument("--batch-size", type=_whole(1), default=256, help="images per UNet batch")
    _add_backbone_and_device(search)
    _add_search_settings(search)


def _add_predict_parser(commands) -> None:
    predict = commands.add_parser("predict", help="assign new images to the clusters of a fitted run",
                                  description="Assign the images under DATA to the clusters learned in RUN_DIR.")
    predict.add_argument("run_dir", type=Path, help="a finished `diffclust fit` run folder (or a saved model folder)")
    predict.add_argument("data", nargs="+", help="what to assign: an image folder, a labels.csv, or one or more image files "
                                                 "(for a CLUDI run on features: a feature file)")
    predict.add_argument("--out", type=Path, default=None, help="CSV to write (file, cluster, confidence, status); default RUN_DIR/predictions.csv")
    predict.add_argument("--backbone", default=None, help="override the backbone recorded in the run (e.g. the SD folder moved)")
    predict.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=None, help="where to run (default: as fitted)")
    predict.add_argument("--batch-size", type=_whole(1), default=None, help="images per batch (default: as fitted)")
    predict.add_argument("--strict", action="store_true", help="stop with an error on unreadable images")
    _add_quiet(predict)


def _add_report_parser(commands) -> None:
    report = commands.add_parser("report", help="write a browsable HTML report of a run (galleries, map, names, scores)",
                                 description="Write RUN_DIR/report/index.html (offline: images and script beside it) and "
                                             "RUN_DIR/clusters.csv (cluster, size, mean confidence, names).")
    report.add_argument("run_dir", type=Path, help="a finished `diffclust fit` run folder")
    _add_report_options(report)
    report.add_argument("--out", type=Path, default=None, help="report folder (default: RUN_DIR/report/)")


def _add_report_options(parser) -> None:
    group = parser.add_argument_group("report")
    group.add_argument("--sort", choices=["size", "confidence"], default="size", help="order of the clusters")
    group.add_argument("--per-cluster", type=_whole(1), default=8, help="most and least confident images shown per cluster")
    group.add_argument("--map-points", type=_whole(5), default=2000, help="at most this many items on the 2-D map (a seeded sample)")
    group.add_argument("--no-names", dest="names", action="store_false", help="skip DiFiC's cluster names (they load the text encoder)")
    group.add_argument("--prototypes", action=argparse.BooleanOptionalAction, default=None,
                       help="DiFiC: an image generated from each cluster's mean proxy word (default: on with a GPU, off on CPU)")


def _add_evaluate_parser(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="score assignments against known labels (ACC, NMI, ARI)",
                                   description="Score an assignments CSV against a labels.csv; labels are only for scoring.")
    evaluate.add_argument("assignments", type=Path, help="assignments.csv from fit or predict, or a run folder")
    evaluate.add_argument("--labels", type=Path, default=None, help="labels.csv (file,label[,class_name,split]), or the data folder fit read "
                                                                      "(with a labels.csv, or one sub-folder per class); default for a run folder: the data it read")
    evaluate.add_argument("--split", default=None, help="score only rows of labels.csv with this split (e.g. test)")
    evaluate.add_argument("--json", action="store_true", help="print the scores as JSON")


def _add_pretrain_parser(commands) -> None:
    pretrain = commands.add_parser(
        "pretrain", help="train a compact diffusion backbone (text-conditioned or unconditional)",
        description="Train a compact pixel-space diffusion backbone on DATA and save it where --backbone can load it. "
                    "With --eval DIR, only score the saved model DIR as a zero-shot diffusion classifier on DATA.")
    pretrain.add_argument("data", help="image folder; captions come from labels.csv (class_name or caption column) or class sub-folders")
    pretrain.add_argument("--out", type=Path, help="model folder to write (unet/, scheduler/, text_encoder/, tokenizer/, samples/, training/)")
    pretrain.add_argument("--eval", dest="eval_dir", type=Path, default=None, help="evaluate this saved model instead of training")
    pretrain.add_argument("--unconditional", action="store_true", help="train a UNet2DModel DDPM on the images alone (no captions)")
    pretrain.add_argument("--captions", default="a photo of a {class_name}", help="caption template over labels.csv's class_name (a 'caption' column wins)")
    pretrain.add_argument("--text-encoder", default=None, help="folder with a transformers text encoder and tokenizer (default: the bundled all-MiniLM-L6-v2)")
    pretrain.add_argument("--text-max-length", type=int, default=48, help="tokens per caption (longer captions are an error)")
    pretrain.add_argument("--write-caption-embeddings", type=Path, default=None, metavar="DIR",
                          help="only encode every caption of DATA into DIR (for --caption-embeddings where the text encoder is not installed)")
    pretrain.add_argument("--caption-embeddings", default=None, metavar="DIR", help="train from captions encoded beforehand (no text encoder loaded)")
    pretrain.add_argument("--resolution", type=int, default=32, help="image size in pixels (pixel space, no VAE)")
    pretrain.add_argument("--channels-per-level", default="32,64,128,128", help="UNet widths per level (4 levels for text-conditioned models)")
    pretrain.add_argument("--layers-per-block", type=int, default=2, help="resnet layers per UNet block")
    pretrain.add_argument("--steps", type=int, default=10_000, help="optimisation steps")
    pretrain.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                          help="train for about this long: the step count is set from the speed of the first 30 s (replaces --steps)")
    pretrain.add_argument("--batch-size", type=int, default=64, help="images per step and process")
    pretrain.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate")
    pretrain.add_argument("--warmup-steps", type=int, default=200, help="steps of linear learning-rate warm-up")
    pretrain.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints, exports and sample grids")
    pretrain.add_argument("--log-every", type=int, default=50, help="steps between loss records in training/metrics.csv")
    pretrain.add_argument("--caption-dropout", type=float, default=0.1, help="fraction of empty captions (classifier-free guidance)")
    pretrain.add_argument("--no-hflip", dest="hflip", action="store_false", help="no random horizontal flips (for digits and text, where a flip changes the class)")
    pretrain.add_argument("--eval-images", type=int, default=200, help="held-out images scored by the diffusion classifier (0: skip it)")
    pretrain.add_argument("--eval-timesteps", type=int, default=8, help="noise levels per image and caption in the diffusion classifier")
    pretrain.add_argument("--eval-seconds", type=float, default=None, help="stop the diffusion classifier after this long")
    pretrain.add_argument("--sample-steps", type=int, default=50, help="DDIM steps of the sample grids")
    pretrain.add_argument("--export-dtype", choices=["fp32", "fp16", "bf16"], default="fp32", help="precision of the exported UNet weights")
    pretrain.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="where to run")
    pretrain.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no", help="autocast precision on GPU")
    pretrain.add_argument("--seed", type=int, default=0, help="random seed")
    pretrain.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    _add_quiet(pretrain)


class OneLineParser(argparse.ArgumentParser):
    """Argument mistakes in one line, as every other error (not 48 lines of usage)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="diffclust", description="Cluster images without labels using pretrained diffusion models.")
    parser.add_argument("--version", action="version", version=f"diffclust {__version__}")
    parser.add_argument("--verbose", action="store_true", help="log debugging detail")
    parser.add_argument("--debug", action="store_true", help="on an error, print the full traceback too (or set DIFFCLUST_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_fit_parser(commands)
    _add_features_parser(commands)
    _add_predict_parser(commands)
    _add_evaluate_parser(commands)
    _add_report_parser(commands)
    _add_pretrain_parser(commands)
    _add_search_parser(commands)
    for command in commands.choices.values():  # the global switches work after the command too (diffclust fit ... --verbose)
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help="log debugging detail")
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="on an error, print the full traceback too")
        if not any("--quiet" in action.option_strings for action in command._actions):
            command.add_argument("--quiet", action="store_true", help="no progress bars or library loading bars")
    return parser


def _print_scores(scores: dict[str, float], prefix: str = "") -> None:
    print(f"{prefix}ACC {100 * scores['acc']:.2f}%  NMI {scores['nmi']:.4f}  ARI {scores['ari']:.4f}  "
          f"(many-to-one ACC {100 * scores['acc_many_to_one']:.2f}%)")


def _search_settings(args) -> dict:
    return dict(
        layer=args.layer, timestep=args.timestep, search=args.search, search_layer=args.search_layer, probe_timestep=args.probe_timestep,
        search_layers=args.search_layers, search_timesteps=args.search_timesteps,
        timestep_range=tuple(args.timestep_range) if args.timestep_range else None,
        search_subset=args.search_subset, noise_draws=args.noise_draws, pool_size=args.pool_size,
        **({} if args.search_score is None else {"search_score": args.search_score}),
    )


def _common_settings(args) -> dict:
    # --backbone left out: each method's own default (SD v1.5 for DiFiC and DiEC; none for CLUDI, which reads features)
    backbone = {} if args.backbone is None else {"backbone": args.backbone}
    return dict(**backbone, resolution=args.resolution, device=args.device, mixed_precision=args.mixed_precision,
                random_state=args.seed, num_workers=args.num_workers, strict=args.strict, folder_labels=args.folder_labels,
                progress=not args.quiet)


def _method_settings(args) -> dict:
    """The chosen method's settings from the command line. Only its own option groups are read
    (DiEC's --entropy-weight must not reach DiFiC's lambda), and unset ones keep its defaults."""
    given = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "k_range": args.k_range}
    settings = {**_common_settings(args), "k_criterion": args.k_criterion,
                **{key: value for key, value in given.items() if value is not None}}
    if args.method == "difc":
        settings.update(warmup_epochs=args.warmup_epochs, feature_layer=args.feature_layer, feature_timestep=args.feature_timestep,
                        mask_timestep=args.mask_timestep, object_concentration=args.object_concentration,
                        cluster_guidance=args.cluster_guidance, timestep_sampling=args.timestep_sampling,
                        weights_dtype=args.weights_dtype, gradient_checkpointing=args.gradient_checkpointing, offload_vae=args.offload_vae,
                        channels_last=args.channels_last, fused_attention=args.fused_attention, compile_unet=args.compile_unet,
                        tf32=args.tf32, cache_precision=args.cache_precision, cache_dir=args.cache_dir)
    else:  # DiEC, and CLUDI on images, read UNet features
        settings.update(_search_settings(args))
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
                     predict_steps=args.predict_steps, embedding_dim=args.embedding_dim, hidden_dim=args.hidden_dim)
    if args.method in ("diec", "cludi"):
        # the published settings, under any option given explicitly (--epochs and --search-score included)
        paper = {key: value for key, value in PAPER_SETTINGS.items() if key not in settings} if args.paper_settings else {}
        settings.update(paper)
        settings.update({key: value for key, value in given.items() if value is not None})
    return settings


def build_model(args, out: Path):
    """The estimator `diffclust fit` runs: the chosen method with the command line's settings."""
    from diffclust.methods.registry import METHODS

    estimator = METHODS[args.method]
    wanted = set(estimator._get_param_names())
    return estimator(args.k, output_dir=out, **{key: value for key, value in _method_settings(args).items() if key in wanted})


def _fit_input(args):
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


def default_run_folder(data, name: str, suffix: str = "") -> Path:
    """runs/NAME in the working folder, unless that lies inside the data (`cd photos; diffclust
    fit .`): then beside the data, so no run is ever read back as images."""
    folder = Path("runs") / (name + suffix)
    if data is not None and Path(data).is_dir():
        root = Path(data).resolve()
        if folder.resolve().is_relative_to(root):
            folder = root.parent / "runs" / (name + suffix)
    return folder


def run_fit(args) -> int:
    data, labels, name = _fit_input(args)
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
        _print_scores(final, f"Against the labels from {model.label_source_} (used only to score): ")
    if args.report:
        _write_report(out, args)
    return 0


def _write_report(run_dir: Path, args, report_folder: Path | None = None) -> None:
    from diffclust.report import build_report

    page = build_report(run_dir, report_folder, sort=args.sort, per_cluster=args.per_cluster, map_points=args.map_points,
                        names=args.names, prototypes=args.prototypes)
    print(f"Report: {page}  (open it in a browser; it works offline); cluster names and sizes in {run_dir / 'clusters.csv'}")


def run_report(args) -> int:
    _write_report(args.run_dir, args, args.out)
    return 0


def run_features(args) -> int:
    from diffclust.data.collection import collect_images
    from diffclust.encoders.extraction import check_feature_output, extract_features, sidecar
    from diffclust.encoders.vision import VisionEncoder
    from diffclust.engine.runtime import make_accelerator

    if args.encoder is None:
        raise DiffclustError("features needs --encoder NAME_OR_PATH (a ViT, DINO, DINOv2 or CLIP folder, or a hub id).")
    check_feature_output(args.out)  # before any image is read or encoded
    collection = collect_images(args.data, strict=args.strict, folder_labels=args.folder_labels)
    encoder = VisionEncoder.load(args.encoder, args.pooling, make_accelerator(args.device).device, progress=not args.quiet)
    features = extract_features(encoder, collection, args.out, args.batch_size, args.shard_size, show_progress=not args.quiet)
    print(f"Encoded {len(features)} images into {features.shape[1]}-d features ({encoder.model_type}, {args.pooling}) -> {args.out}; "
          f"rows in {sidecar(args.out, 'files')}, {sum(s.is_image for s in collection.skipped)} unreadable skipped "
          f"({sidecar(args.out, 'skipped')}).")
    print(f"Cluster them: diffclust fit --method cludi --features {args.out} --k auto")
    return 0


def run_search(args) -> int:
    from diffclust.methods.diec import DiEC

    out = args.out or default_run_folder(args.data, Path(args.data).resolve().name, "-search")
    model = DiEC(args.k, batch_size=args.batch_size, output_dir=out, **_common_settings(args), **_search_settings(args))
    result = model.search_pair(args.data)
    print(f"Chosen: {result.layer} at t={result.timestep} ({result.score_name} {result.score:.4g}); "
          f"{result.strategy} search, {result.n_evaluations} evaluations over {result.feature_passes} feature passes.")
    print(f"Use it: diffclust fit {args.data} --method diec --k {args.k} --layer {result.layer} --timestep {result.timestep}")
    print(f"Wrote {out / 'search.csv'}, {out / 'search.png'} and {out / 'search.json'}.")
    return 0


def run_predict(args) -> int:
    from diffclust.methods.registry import load_model
    from diffclust.outputs import check_output_file, write_assignments

    args.out = args.out or args.run_dir / "predictions.csv"
    check_output_file(args.out, "--out")  # before any model loads: nothing is overwritten that we did not write

    model = load_model(args.run_dir, backbone=args.backbone, device=args.device)
    model.progress = not args.quiet
    model.strict = args.strict
    if args.batch_size:
        model.batch_size = args.batch_size
    data = args.data[0] if len(args.data) == 1 else args.data  # one folder, CSV, image or feature file; or image files
    labels, confidence, collection = model.predict_with_confidence(data)
    write_assignments(args.out, collection.files, labels, confidence, collection.skipped)
    print(f"Assigned {len(labels)} images ({sum(s.is_image for s in collection.skipped)} unreadable skipped) -> {args.out}")
    return 0


def _evaluation_inputs(assignments: Path, labels: Path | None) -> tuple[Path, Path]:
    """(assignments.csv, labels) for `evaluate`: a run folder gives its assignments.csv and,
    unless --labels is given, the data it was fitted on."""
    if assignments.is_dir():
        run_dir, assignments = assignments, assignments / "assignments.csv"
        if not assignments.is_file():
            raise DiffclustError(f"'{run_dir}' holds no assignments.csv: is it a finished `diffclust fit` run folder?")
        if labels is None:
            try:
                data = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("data")
            except (OSError, ValueError, AttributeError):
                data = None
            if not data:
                raise DiffclustError(f"'{run_dir}' does not record the data it read: pass --labels labels.csv (or the data folder).")
            labels = Path(data)
    if labels is None:
        raise DiffclustError("evaluate needs --labels labels.csv (or the data folder) for an assignments file.")
    return assignments, labels


def run_evaluate(args) -> int:
    from diffclust.cluster.metrics import clustering_scores
    from diffclust.outputs import read_assignments, read_labels

    assignments, labels_source = _evaluation_inputs(args.assignments, args.labels)
    assigned, skipped = read_assignments(assignments)
    labels = read_labels(labels_source, split=args.split)
    common = sorted(set(assigned) & set(labels))
    if not common:
        raise DiffclustError(f"No file in {assignments} appears in {labels_source}" + (f" (split {args.split})" if args.split else "") + ".")
    missing = len(labels) - len(common)
    scores = clustering_scores([labels[f] for f in common], [assigned[f] for f in common])
    scores.update(scored=len(common), labelled_without_assignment=missing, skipped_rows=skipped)
    if args.json:
        print(json.dumps(scores, indent=2))
        return 0
    print(f"Scored {len(common)} images" + (f" (split {args.split})" if args.split else "")
          + (f"; {missing} labelled images have no assignment" if missing else "") + ".")
    _print_scores(scores)
    return 0


def run_pretrain(args) -> int:
    from accelerate import PartialState

    from diffclust.data import scan_images
    from diffclust.pretrain import PretrainSettings, Pretrainer
    from diffclust.pretrain.evaluation import describe, evaluate_text_pathway

    if args.eval_dir is not None:
        print(describe(evaluate_text_pathway(args.eval_dir, args.data, args.eval_images, device=args.device, show_progress=not args.quiet)))
        return 0
    if args.write_caption_embeddings is not None:
        from diffclust.pretrain.caption_embeddings import write_caption_embeddings

        table = write_caption_embeddings(scan_images(args.data), args.captions, args.write_caption_embeddings, args.text_encoder,
                                         args.text_max_length, show_progress=not args.quiet)
        print(f"Wrote {len(table.captions)} caption embeddings ({tuple(table.embeddings.shape)}) and the empty caption's "
              f"to {args.write_caption_embeddings}.")
        return 0
    if args.out is None:
        raise DiffclustError("pretrain needs --out DIR (or --eval DIR to score a saved model).")
    try:
        widths = tuple(int(width) for width in args.channels_per_level.split(","))
    except ValueError:
        raise DiffclustError(f"--channels-per-level must be integers separated by commas, got '{args.channels_per_level}'.") from None
    settings = PretrainSettings(
        conditional=not args.unconditional, caption_template=args.captions, text_encoder=args.text_encoder,
        text_max_length=args.text_max_length, caption_dropout=args.caption_dropout, resolution=args.resolution,
        caption_embeddings=args.caption_embeddings, time_budget=args.time_budget, eval_images=args.eval_images,
        eval_timesteps=args.eval_timesteps, eval_seconds=args.eval_seconds, sample_steps=args.sample_steps, export_dtype=args.export_dtype,
        block_out_channels=widths, layers_per_block=args.layers_per_block, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every, hflip=args.hflip, seed=args.seed, device=args.device,
        mixed_precision=args.mixed_precision,
    )
    trainer = Pretrainer(settings, scan_images(args.data), args.out, show_progress=not args.quiet)
    out = trainer.run(resume=args.resume)
    if not PartialState().is_main_process:
        return 0
    print(f"Saved the backbone to {out} (use it with --backbone {out}); samples in {out / 'samples'}.")
    if trainer.record.get("classifier"):
        print(describe(trainer.record["classifier"]))
    return 0


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (pytest and notebooks swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(verbose: bool, quiet: bool) -> None:
    """diffclust's messages on stderr, each once: one handler on the 'diffclust' logger (none on
    the root logger, where it would repeat every library's own lines), and the model
    libraries' chatter and loading bars kept down."""
    for handler in [h for h in logger.handlers if isinstance(h, _CurrentStderr)]:
        logger.removeHandler(handler)
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("diffusers", "transformers", "accelerate", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)
    if quiet:  # read by huggingface_hub, transformers and diffusers when they are first imported
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"


#: options whose values may start with '-' (argparse would read '-3:5' as an option and say "expected one argument")
DASH_VALUE_OPTIONS = ("--k-range", "--timestep-range")


def _join_dash_values(argv: list[str]) -> list[str]:
    """'--k-range -3:5' -> '--k-range=-3:5', so the value reaches its own check and error."""
    joined, index = [], 0
    while index < len(argv):
        if argv[index] in DASH_VALUE_OPTIONS and index + 1 < len(argv) and argv[index + 1].startswith("-") and argv[index + 1][1:2].isdigit():
            joined.append(f"{argv[index]}={argv[index + 1]}")
            index += 2
        else:
            joined.append(argv[index])
            index += 1
    return joined


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_join_dash_values(list(sys.argv[1:] if argv is None else argv)))
    configure_logging(args.verbose, getattr(args, "quiet", False))
    runners = {"fit": run_fit, "features": run_features, "predict": run_predict, "evaluate": run_evaluate, "pretrain": run_pretrain, "search": run_search,
               "report": run_report}
    try:
        return runners[args.command](args)
    except (Exception, KeyboardInterrupt) as error:  # every failure ends in one line (and a traceback only with --debug)
        from diffclust.failures import debug_requested, explain

        message, code = explain(error, args.command, args)
        if debug_requested(args):
            import traceback

            traceback.print_exc()
        print(f"diffclust {args.command}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
