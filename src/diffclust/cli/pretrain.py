"""`diffclust pretrain`: train a compact diffusion backbone (or score one with --eval)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from diffclust.cli.options import add_quiet, positive_number, whole
from diffclust.errors import DiffclustError


def add_parser(commands) -> None:
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
    pretrain.add_argument("--text-max-length", type=whole(2), default=48, help="tokens per caption (longer captions are an error)")
    pretrain.add_argument("--write-caption-embeddings", type=Path, default=None, metavar="DIR",
                          help="only encode every caption of DATA into DIR (for --caption-embeddings where the text encoder is not installed)")
    pretrain.add_argument("--caption-embeddings", default=None, metavar="DIR", help="train from captions encoded beforehand (no text encoder loaded)")
    pretrain.add_argument("--resolution", type=whole(4), default=32, help="image size in pixels (pixel space, no VAE)")
    pretrain.add_argument("--channels-per-level", default="32,64,128,128", help="UNet widths per level (4 levels for text-conditioned models)")
    pretrain.add_argument("--layers-per-block", type=int, default=2, help="resnet layers per UNet block")
    pretrain.add_argument("--steps", type=whole(1), default=10_000, help="optimisation steps")
    pretrain.add_argument("--time-budget", type=positive_number, default=None, metavar="SECONDS",
                          help="train for about this long: the step count is set from the speed of the first 30 s (replaces --steps)")
    pretrain.add_argument("--batch-size", type=whole(1), default=64, help="images per step and process")
    pretrain.add_argument("--lr", type=positive_number, default=2e-4, help="AdamW learning rate")
    pretrain.add_argument("--warmup-steps", type=whole(0), default=200, help="steps of linear learning-rate warm-up")
    pretrain.add_argument("--checkpoint-every", type=whole(1), default=1000, help="steps between checkpoints, exports and sample grids")
    pretrain.add_argument("--log-every", type=whole(1), default=50, help="steps between loss records in training/metrics.csv")
    pretrain.add_argument("--caption-dropout", type=float, default=0.1, help="fraction of empty captions (classifier-free guidance)")
    pretrain.add_argument("--no-hflip", dest="hflip", action="store_false",
                          help="no random horizontal flips (for digits and text, where a flip changes the class)")
    pretrain.add_argument("--eval-images", type=whole(0), default=200, help="held-out images scored by the diffusion classifier (0: skip it)")
    pretrain.add_argument("--eval-timesteps", type=whole(1), default=8, help="noise levels per image and caption in the diffusion classifier")
    pretrain.add_argument("--eval-seconds", type=positive_number, default=None, help="stop the diffusion classifier after this long")
    pretrain.add_argument("--sample-steps", type=whole(1), default=50, help="DDIM steps of the sample grids")
    pretrain.add_argument("--export-dtype", choices=["fp32", "fp16", "bf16"], default="fp32", help="precision of the exported UNet weights")
    pretrain.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="where to run")
    pretrain.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no", help="autocast precision on GPU")
    pretrain.add_argument("--seed", type=int, default=0, help="random seed")
    pretrain.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add_quiet(pretrain)


def run(args) -> int:
    from accelerate import PartialState

    from diffclust.data import scan_images
    from diffclust.data.collection import CAPTIONS_MARKER, MODEL_MARKER
    from diffclust.engine.atomic import check_output_folder, claim_output_folder
    from diffclust.engine.run_lock import LOCK_FILES, RunFolderLock
    from diffclust.engine.runtime import is_main_launch_process
    from diffclust.pretrain import Pretrainer, PretrainSettings
    from diffclust.pretrain.evaluation import describe, evaluate_text_pathway

    if args.eval_dir is not None:
        print(describe(evaluate_text_pathway(args.eval_dir, args.data, args.eval_images, device=args.device, show_progress=not args.quiet)))
        return 0
    if args.write_caption_embeddings is not None:
        from diffclust.pretrain.caption_embeddings import write_caption_embeddings

        claim_output_folder(args.write_caption_embeddings, CAPTIONS_MARKER, "--write-caption-embeddings", "the caption embeddings")

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
    main_process = is_main_launch_process()
    # never someone else's folder (checked before the lock writes anything), one pretraining per folder (two would mix
    # their files), and marked as a model's: never read back as data. An earlier version's model has a training record.
    folder = dict(marker=MODEL_MARKER, setting="--out", what="the pretrained model", earlier=("training/record.json", "training/checkpoint.pt"),
                  ignore=LOCK_FILES)
    if main_process:
        check_output_folder(args.out, **folder)
    with RunFolderLock(args.out) if main_process else nullcontext():
        if main_process:
            claim_output_folder(args.out, **folder)
        trainer = Pretrainer(settings, scan_images(args.data), args.out, show_progress=not args.quiet)
        out = trainer.run(resume=args.resume)
    if not PartialState().is_main_process:
        return 0
    print(f"Saved the backbone to {out} (use it with --backbone {out}); samples in {out / 'samples'}.")
    if trainer.record.get("classifier"):
        print(describe(trainer.record["classifier"]))
    return 0
