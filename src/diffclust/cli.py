"""`diffclust` command line: a thin layer over the library (fit, predict, evaluate, pretrain)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from diffclust.backbones.registry import BUILTIN_BACKBONES, SD15_HUB_ID
from diffclust.cluster.metrics import clustering_scores
from diffclust.errors import DiffclustError
from diffclust.outputs import read_assignments, read_labels, write_assignments

logger = logging.getLogger("diffclust")

BACKBONE_HELP = (
    f"backbone: a built-in name ({', '.join(BUILTIN_BACKBONES)}), a local folder in the diffusers SD-1.x layout "
    f"(unet/, vae/, text_encoder/, tokenizer/, scheduler/), or a Hugging Face hub id (default: {SD15_HUB_ID}; "
    "needs network or a filled HF cache; set HF_HUB_OFFLINE=1 to use the cache only)"
)


def _add_fit_parser(commands) -> None:
    fit = commands.add_parser("fit", help="cluster a folder of images with DiFiC",
                              description="Cluster the images under DATA into K groups with DiFiC and write a run folder.")
    fit.add_argument("data", help="image folder: flat, one sub-folder per class, or with a labels.csv (file,label[,class_name,split])")
    fit.add_argument("--k", type=int, required=True, help="number of clusters (2 <= K <= number of images)")
    fit.add_argument("--backbone", default=SD15_HUB_ID, help=BACKBONE_HELP)
    fit.add_argument("--out", type=Path, default=None, help="run folder for checkpoints, logs, assignments.csv and the model (default: runs/<data folder name>)")
    fit.add_argument("--epochs", type=int, default=250, help="training epochs in all (paper: 250)")
    fit.add_argument("--warmup-epochs", type=int, default=100, help="epochs of distillation before the cluster head trains; k-means on S* predicts meanwhile (paper: 100)")
    fit.add_argument("--batch-size", type=int, default=32, help="images per step and process (paper: 32)")
    fit.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate (paper: 2e-4)")
    fit.add_argument("--resolution", type=int, default=None, help="image size in pixels (default: the backbone's own, 512 for SD v1.5)")
    fit.add_argument("--feature-layer", default="up_blocks.2.attentions.0", help="UNet module whose output is z (paper's block 19 = up_blocks.2.attentions.0)")
    fit.add_argument("--t-hat", dest="feature_timestep", type=int, default=150, help="timestep at which z is read (paper: 150)")
    fit.add_argument("--t-tilde", dest="mask_timestep", type=int, default=50, help="timestep of the attention map behind the object mask (paper: 50)")
    fit.add_argument("--no-object-concentration", dest="object_concentration", action="store_false", help="ablation: diffusion loss over the whole image instead of the object mask")
    fit.add_argument("--no-cluster-guidance", dest="cluster_guidance", action="store_false", help="ablation: no cluster head; clusters are k-means on the proxy words")
    fit.add_argument("--timestep-sampling", choices=["cosine", "uniform"], default="cosine", help="p(t) for the diffusion loss: 1 + cos(pi t / T) (paper) or uniform")
    fit.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="where to run (several GPUs: launch with `accelerate launch`)")
    fit.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no", help="autocast precision on GPU")
    fit.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same clusters")
    fit.add_argument("--resume", action="store_true", help="continue the interrupted run in --out from its last checkpoint")
    fit.add_argument("--strict", action="store_true", help="stop with an error on unreadable images instead of skipping them")
    fit.add_argument("--num-workers", type=int, default=0, help="image-loading worker processes")
    fit.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_predict_parser(commands) -> None:
    predict = commands.add_parser("predict", help="assign new images to the clusters of a fitted run",
                                  description="Assign the images under DATA to the clusters learned in RUN_DIR.")
    predict.add_argument("run_dir", type=Path, help="a finished `diffclust fit` run folder (or a saved model folder)")
    predict.add_argument("data", help="image folder to assign")
    predict.add_argument("--out", type=Path, required=True, help="CSV to write (file, cluster, confidence, status)")
    predict.add_argument("--backbone", default=None, help="override the backbone recorded in the run (e.g. the SD folder moved)")
    predict.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=None, help="where to run (default: as fitted)")
    predict.add_argument("--batch-size", type=int, default=None, help="images per batch (default: as fitted)")
    predict.add_argument("--strict", action="store_true", help="stop with an error on unreadable images")
    predict.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_evaluate_parser(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="score assignments against known labels (ACC, NMI, ARI)",
                                   description="Score an assignments CSV against a labels.csv; labels are only for scoring.")
    evaluate.add_argument("assignments", type=Path, help="assignments.csv from fit or predict")
    evaluate.add_argument("--labels", type=Path, required=True, help="labels.csv (file,label[,class_name,split]) or the folder holding it")
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
    pretrain.add_argument("--resolution", type=int, default=32, help="image size in pixels (pixel space, no VAE)")
    pretrain.add_argument("--channels-per-level", default="32,64,128,128", help="UNet widths per level (4 levels for text-conditioned models)")
    pretrain.add_argument("--layers-per-block", type=int, default=2, help="resnet layers per UNet block")
    pretrain.add_argument("--steps", type=int, default=10_000, help="optimisation steps")
    pretrain.add_argument("--batch-size", type=int, default=64, help="images per step and process")
    pretrain.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate")
    pretrain.add_argument("--warmup-steps", type=int, default=200, help="steps of linear learning-rate warm-up")
    pretrain.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints, exports and sample grids")
    pretrain.add_argument("--log-every", type=int, default=50, help="steps between loss records in training/metrics.csv")
    pretrain.add_argument("--caption-dropout", type=float, default=0.1, help="fraction of empty captions (classifier-free guidance)")
    pretrain.add_argument("--eval-images", type=int, default=200, help="held-out images scored by the diffusion classifier")
    pretrain.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="where to run")
    pretrain.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no", help="autocast precision on GPU")
    pretrain.add_argument("--seed", type=int, default=0, help="random seed")
    pretrain.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    pretrain.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffclust", description="Cluster images without labels using pretrained diffusion models.")
    parser.add_argument("--verbose", action="store_true", help="log debugging detail")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_fit_parser(commands)
    _add_predict_parser(commands)
    _add_evaluate_parser(commands)
    _add_pretrain_parser(commands)
    return parser


def _print_scores(scores: dict[str, float], prefix: str = "") -> None:
    print(f"{prefix}ACC {100 * scores['acc']:.2f}%  NMI {scores['nmi']:.4f}  ARI {scores['ari']:.4f}  "
          f"(many-to-one ACC {100 * scores['acc_many_to_one']:.2f}%)")


def run_fit(args) -> int:
    from diffclust.methods.difc import DiFiC

    out = args.out or Path("runs") / Path(args.data).resolve().name
    model = DiFiC(
        args.k, backbone=args.backbone, resolution=args.resolution, feature_layer=args.feature_layer,
        feature_timestep=args.feature_timestep, mask_timestep=args.mask_timestep,
        object_concentration=args.object_concentration, cluster_guidance=args.cluster_guidance,
        timestep_sampling=args.timestep_sampling, epochs=args.epochs, warmup_epochs=args.warmup_epochs,
        batch_size=args.batch_size, lr=args.lr, device=args.device, mixed_precision=args.mixed_precision,
        seed=args.seed, output_dir=out, num_workers=args.num_workers, strict=args.strict, progress=not args.quiet,
    )
    model.fit(args.data, resume=args.resume)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return 0
    used = len(np.unique(model.labels_))
    print(f"Clustered {len(model.labels_)} images into {used} of {args.k} clusters; skipped {sum(s.is_image for s in model.skipped_)} unreadable.")
    print(f"Run folder: {out}  (assignments.csv, skipped.csv, metrics.csv, model difc.safetensors)")
    last = model.history_[-1] if model.history_ else {}
    if "acc" in last:
        _print_scores(last, "Against the labels found in the data: ")
    return 0


def run_predict(args) -> int:
    from diffclust.methods.difc import DiFiC

    model = DiFiC.load(args.run_dir, backbone=args.backbone, device=args.device)
    model.progress = not args.quiet
    model.strict = args.strict
    if args.batch_size:
        model.batch_size = args.batch_size
    labels, confidence, collection = model.predict_with_confidence(args.data)
    write_assignments(args.out, collection.files, labels, confidence, collection.skipped)
    print(f"Assigned {len(labels)} images ({sum(s.is_image for s in collection.skipped)} unreadable skipped) -> {args.out}")
    return 0


def run_evaluate(args) -> int:
    assigned, skipped = read_assignments(args.assignments)
    labels = read_labels(args.labels, split=args.split)
    common = sorted(set(assigned) & set(labels))
    if not common:
        raise DiffclustError(f"No file in {args.assignments} appears in {args.labels}" + (f" (split {args.split})" if args.split else "") + ".")
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
    if args.out is None:
        raise DiffclustError("pretrain needs --out DIR (or --eval DIR to score a saved model).")
    try:
        widths = tuple(int(width) for width in args.channels_per_level.split(","))
    except ValueError:
        raise DiffclustError(f"--channels-per-level must be integers separated by commas, got '{args.channels_per_level}'.") from None
    settings = PretrainSettings(
        conditional=not args.unconditional, caption_template=args.captions, text_encoder=args.text_encoder,
        text_max_length=args.text_max_length, caption_dropout=args.caption_dropout, resolution=args.resolution,
        block_out_channels=widths, layers_per_block=args.layers_per_block, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every, seed=args.seed, device=args.device,
        mixed_precision=args.mixed_precision,
    )
    out = Pretrainer(settings, scan_images(args.data), args.out, show_progress=not args.quiet).run(resume=args.resume)
    if not PartialState().is_main_process:
        return 0
    print(f"Saved the backbone to {out} (use it with --backbone {out}); samples in {out / 'samples'}.")
    if settings.conditional:
        print(describe(evaluate_text_pathway(out, args.data, args.eval_images, device=args.device, show_progress=not args.quiet)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("diffusers", "transformers", "accelerate", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING if args.verbose else logging.ERROR)
    runners = {"fit": run_fit, "predict": run_predict, "evaluate": run_evaluate, "pretrain": run_pretrain}
    try:
        return runners[args.command](args)
    except DiffclustError as error:
        print(f"diffclust {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
