"""What several commands share: argument types, option groups, settings and the default run folder."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from diffclust.backbones.names import BUILTIN_BACKBONES, SD15_HUB_ID
from diffclust.choices import SEARCH_SCORES
from diffclust.errors import DiffclustError

BACKBONE_HELP = (
    f"backbone: a built-in name ({', '.join(BUILTIN_BACKBONES)}), a local folder in the diffusers SD-1.x layout "
    f"(unet/, vae/, text_encoder/, tokenizer/, scheduler/), or a Hugging Face hub id (default for DiFiC and DiEC: {SD15_HUB_ID}; "
    "needs network or a filled HF cache; set HF_HUB_OFFLINE=1 to use the cache only)"
)


METHOD_NAMES = {"difc": "DiFiC", "diec": "DiEC", "cludi": "CLUDI"}


def comma_list(kind):
    """argparse type: 'a,b,c' -> [kind(a), kind(b), kind(c)]."""
    def parse(text: str):
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got '{text}'") from None

    return parse


def whole(low: int):
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


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def ratio_or_none(text: str) -> float | str:
    """argparse type for a ratio >= 0, or 'none' for no cap (kept as the string, so that an
    option left alone, None, stays distinct from one set to 'none')."""
    if text.lower() == "none":
        return "none"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'none', got '{text}'") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 or 'none', got {text}")
    return value


def auto_or_whole(low: int):
    """argparse type: 'auto' or an integer >= low."""
    def parse(text: str):
        return text if text == "auto" else whole(low)(text)

    return parse


#: --k: 'auto' or an integer >= 2
k_value = auto_or_whole(2)


def share(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got '{text}'") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def k_range_type(text: str) -> tuple[int, int]:
    from diffclust.cluster.k_selection import parse_k_range

    try:
        return parse_k_range(text)
    except DiffclustError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


#: 'auto' or an integer >= 0
auto_or_int = auto_or_whole(0)


def auto_or_switch(text: str):
    """argparse type: 'auto', 'on' or 'off'."""
    choices = {"auto": "auto", "on": True, "off": False}
    if text not in choices:
        raise argparse.ArgumentTypeError(f"expected auto, on or off, got '{text}'")
    return choices[text]


def add_backbone_and_device(parser) -> None:
    parser.add_argument("--backbone", default=None, help=BACKBONE_HELP)
    parser.add_argument("--resolution", type=whole(1), default=None, help="image size in pixels (default: the backbone's own, 512 for SD v1.5)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="where to run (several GPUs: launch with `accelerate launch`)")
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no", help="autocast precision on GPU")
    parser.add_argument("--seed", "--random-state", dest="seed", type=whole(0), default=0,
                        help="random seed (random_state in the API): the same seed gives the same clusters")
    parser.add_argument("--strict", action="store_true", help="stop with an error on unreadable images instead of skipping them")
    parser.add_argument("--no-folder-labels", dest="folder_labels", action="store_false",
                        help="read a folder of sub-folders (e.g. photos/2023, photos/2024) as unlabelled instead of one class per sub-folder")
    parser.add_argument("--num-workers", type=whole(0), default=0, help="image-loading worker processes")
    add_quiet(parser)


def add_quiet(parser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars (diffclust's, and the model libraries' loading bars)")


def add_search_settings(parser) -> None:
    """DiEC's search settings, shared by `fit --method diec` and `search`."""
    group = parser.add_argument_group("UNet features and DiEC's search (--method diec; cludi on images; `diffclust search`)")
    group.add_argument("--layer", default="auto", help="UNet block whose pooled output is the feature ('auto': search)")
    group.add_argument("--timestep", type=auto_or_int, default="auto", help="timestep at which it is read ('auto': search)")
    group.add_argument("--search", choices=["two-stage", "grid"], default="two-stage",
                       help="two-stage: fix the layer, then a Fibonacci (golden-section) search over t; grid: every layer x --search-timesteps")
    group.add_argument("--search-layer", default="bottleneck",
                       help="two-stage layer: 'bottleneck' (mid_block), 'probe' (best block at --probe-timestep), or a module path")
    group.add_argument("--probe-timestep", type=int, default=None, help="timestep at which 'probe' compares the blocks (default: a tenth into the range)")
    group.add_argument("--search-layers", type=comma_list(str), default=None, help="candidate blocks, comma-separated (default: every top-level UNet block)")
    group.add_argument("--search-timesteps", type=comma_list(int), default=None,
                       help="grid timesteps, comma-separated (default: 10 evenly spaced over the range)")
    group.add_argument("--timestep-range", type=comma_list(int), default=None, help="LOW,HIGH timesteps searched (default: 0,T-1)")
    group.add_argument("--search-score", choices=list(SEARCH_SCORES), default=None,
                       help="internal index of k-means on the subset: its silhouette in a UMAP embedding (default), or CH / silhouette "
                            "in the features (CH: the DiEC paper's)")
    group.add_argument("--search-subset", type=int, default=1000, help="random images the search scores")
    group.add_argument("--noise-draws", type=int, default=4, help="noise draws averaged per feature")
    group.add_argument("--pool-size", type=int, default=4, help="activations are average-pooled to this size squared, then flattened")


def add_encoder_options(group) -> None:
    group.add_argument("--encoder", default=None, help="vision transformer that turns images into features (ViT, DINO, DINOv2, CLIP): "
                                                      "a folder saved with transformers, or a hub id such as facebook/dinov2-small")
    group.add_argument("--pooling", choices=["cls", "mean"], default="cls", help="the image's vector: the CLS token (CLIP: its image "
                                                                                 "embedding) or the mean of the patch tokens; L2-normalised")


def add_report_options(parser) -> None:
    group = parser.add_argument_group("report")
    group.add_argument("--sort", choices=["size", "confidence"], default="size", help="order of the clusters")
    group.add_argument("--per-cluster", type=whole(1), default=8, help="most and least confident images shown per cluster")
    group.add_argument("--map-points", type=whole(5), default=2000, help="at most this many items on the 2-D map (a seeded sample)")
    group.add_argument("--no-names", dest="names", action="store_false", help="skip DiFiC's cluster names (they load the text encoder)")
    group.add_argument("--prototypes", action=argparse.BooleanOptionalAction, default=None,
                       help="DiFiC: an image generated from each cluster's mean proxy word (default: on with a GPU or a backbone of at most "
                            "32 px; off for larger ones on a CPU)")


def print_scores(scores: dict[str, float], prefix: str = "") -> None:
    print(f"{prefix}ACC {100 * scores['acc']:.2f}%  NMI {scores['nmi']:.4f}  ARI {scores['ari']:.4f}  "
          f"(many-to-one ACC {100 * scores['acc_many_to_one']:.2f}%)")


def search_settings(args) -> dict:
    return dict(
        layer=args.layer, timestep=args.timestep, search=args.search, search_layer=args.search_layer, probe_timestep=args.probe_timestep,
        search_layers=args.search_layers, search_timesteps=args.search_timesteps,
        timestep_range=tuple(args.timestep_range) if args.timestep_range else None,
        search_subset=args.search_subset, noise_draws=args.noise_draws, pool_size=args.pool_size,
        **({} if args.search_score is None else {"search_score": args.search_score}),
    )


def common_settings(args) -> dict:
    # --backbone left out: each method's own default (SD v1.5 for DiFiC and DiEC; none for CLUDI, which reads features)
    backbone = {} if args.backbone is None else {"backbone": args.backbone}
    return dict(**backbone, resolution=args.resolution, device=args.device, mixed_precision=args.mixed_precision,
                random_state=args.seed, num_workers=args.num_workers, strict=args.strict, folder_labels=args.folder_labels,
                progress=not args.quiet)


def check_images_and_backbone(data, backbone: str | None, folder_labels: bool = True) -> None:
    """A folder without images, and a backbone that cannot load, answered before torch is
    imported: the files are listed (not decoded) and the backbone reference looked up."""
    from diffclust.backbones.hub import check_backbone_reference
    from diffclust.data.collection import scan_images

    scan_images(data, verify=False, folder_labels=folder_labels)
    if backbone is not None:
        check_backbone_reference(str(backbone))


def default_run_folder(data, name: str, suffix: str = "") -> Path:
    """runs/NAME in the working folder, unless that lies inside the data (`cd photos; diffclust
    fit .`): then beside the data, so no run is ever read back as images."""
    folder = Path("runs") / (name + suffix)
    if data is not None and Path(data).is_dir():
        root = Path(data).resolve()
        if folder.resolve().is_relative_to(root):
            folder = root.parent / "runs" / (name + suffix)
    return folder
