"""`diffclust predict`: assign new images (or feature rows) to a fitted run's clusters."""

from __future__ import annotations

from pathlib import Path

from diffclust.cli.options import add_quiet, whole


def add_parser(commands) -> None:
    predict = commands.add_parser("predict", help="assign new images to the clusters of a fitted run",
                                  description="Assign the images under DATA to the clusters learned in RUN_DIR.")
    predict.add_argument("run_dir", type=Path, help="a finished `diffclust fit` run folder (or a saved model folder)")
    predict.add_argument("data", nargs="+", help="what to assign: an image folder, a labels.csv, or one or more image files "
                                                 "(for a CLUDI run on features: a feature file)")
    predict.add_argument("--out", type=Path, default=None, help="CSV to write (file, cluster, confidence, status); default RUN_DIR/predictions.csv")
    predict.add_argument("--backbone", default=None, help="override the backbone recorded in the run (e.g. the SD folder moved)")
    predict.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=None, help="where to run (default: as fitted)")
    predict.add_argument("--batch-size", type=whole(1), default=None, help="images per batch (default: as fitted)")
    predict.add_argument("--strict", action="store_true", help="stop with an error on unreadable images")
    add_quiet(predict)


def run(args) -> int:
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
