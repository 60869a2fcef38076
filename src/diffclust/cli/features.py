"""`diffclust features`: encode images with a vision transformer into a feature file, resumably."""

from __future__ import annotations

from pathlib import Path

from diffclust.cli.options import add_encoder_options, add_quiet, whole
from diffclust.errors import DiffclustError


def add_parser(commands) -> None:
    features = commands.add_parser("features", help="encode images with a vision transformer into a feature file (for CLUDI)",
                                   description="Encode every image under DATA with --encoder and write --out (N x D, one row per "
                                               "image), OUT.files.csv (row, file, and labels when known) and OUT.skipped.csv. "
                                               "Shards are kept in OUT.npy.parts/ while it runs: run it again to continue.")
    features.add_argument("data", help="image folder: flat, one sub-folder per class, or with a labels.csv; or a built-in data set (usps)")
    features.add_argument("--out", type=Path, required=True, help="feature file to write (.npy)")
    add_encoder_options(features)
    features.add_argument("--batch-size", type=whole(1), default=64, help="images per encoder batch")
    features.add_argument("--shard-size", type=whole(1), default=1024, help="rows per shard (the unit an interrupted run keeps)")
    features.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="where to run")
    features.add_argument("--strict", action="store_true", help="stop with an error on unreadable images instead of skipping them")
    features.add_argument("--no-folder-labels", dest="folder_labels", action="store_false", help="read sub-folders as unlabelled")
    add_quiet(features)


def run(args) -> int:
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
