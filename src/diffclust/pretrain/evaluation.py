"""`diffclust pretrain --eval`: the diffusion-classifier check of a saved backbone."""

from __future__ import annotations

from pathlib import Path

from diffclust.backbones.registry import load_backbone
from diffclust.data.collection import scan_images
from diffclust.engine.runtime import make_accelerator
from diffclust.errors import DiffclustError
from diffclust.pretrain.captions import class_captions, held_out_indices
from diffclust.pretrain.classifier import diffusion_classifier_accuracy
from diffclust.pretrain.settings import PretrainSettings


def evaluate_text_pathway(model_dir: str | Path, data: str | Path, max_images: int = 200, n_timesteps: int = 8,
                          device: str = "auto", show_progress: bool = True) -> dict:
    """Zero-shot accuracy on the images held out of pretraining (the same split the run used)."""
    model_dir = Path(model_dir)
    settings_path = model_dir / "training" / "settings.json"
    settings = PretrainSettings.load(settings_path) if settings_path.is_file() else PretrainSettings()
    if not settings.conditional:
        raise DiffclustError(f"{model_dir} is an unconditional model: there is no text pathway to evaluate.")
    collection = scan_images(data)
    if not collection.has_labels:
        raise DiffclustError(f"{data} has no labels: the diffusion classifier needs a labels.csv or class sub-folders.")
    held = held_out_indices(collection, settings.eval_split, settings.eval_fraction, settings.seed)
    if len(held) == 0:
        raise DiffclustError(f"No held-out images in {data} (split '{settings.eval_split}' or {settings.eval_fraction:.0%} of them).")
    backbone = load_backbone(model_dir, device=make_accelerator(device).device, progress=show_progress)
    result = diffusion_classifier_accuracy(backbone, collection.subset(held), class_captions(collection, settings.caption_template),
                                           n_timesteps=n_timesteps, max_images=max_images, seed=settings.seed,
                                           show_progress=show_progress)
    return result


def describe(result: dict) -> str:
    return (f"Diffusion classifier on {result['images']} held-out images, {result['classes']} captions, "
            f"{result['timesteps']} timesteps: accuracy {100 * result['accuracy']:.1f}% (chance {100 * result['chance']:.1f}%)")
