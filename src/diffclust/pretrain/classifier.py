"""Does the text pathway work? Zero-shot accuracy of the model as a diffusion classifier.

Each image is noised with a fixed set of (noise, timestep) pairs; every class caption is asked
to denoise it, and the caption with the lowest mean error is the prediction. A model that
ignores its text scores chance (1 / number of classes).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from diffclust.backbones.base import DiffusionBackbone, PromptEncoding
from diffclust.data.collection import ImageCollection
from diffclust.data.images import load_image_tensor
from diffclust.engine.runtime import progress


@torch.no_grad()
def diffusion_classifier_accuracy(backbone: DiffusionBackbone, collection: ImageCollection, captions: dict[int, str] | dict[int, torch.Tensor],
                                  n_timesteps: int = 8, max_images: int = 200, seed: int = 0, chunk: int = 512,
                                  show_progress: bool = True, max_seconds: float | None = None) -> dict:
    """Accuracy over (up to) `max_images` labelled images of `collection`, with chance beside it.

    `captions` maps each label to its caption, or to the caption's text-encoder output (1, L, D)
    when the encoder is not at hand. After `max_seconds` it stops at the current image and says
    how many it scored, so the check after a time-limited training run stays bounded.
    """
    labels = sorted(captions)
    contexts = torch.cat([captions[label] if isinstance(captions[label], torch.Tensor)
                          else backbone.encode_prompt(captions[label], 1).embeddings for label in labels]).to(backbone.device)
    generator = torch.Generator().manual_seed(seed)
    rows = np.random.default_rng(seed).permutation(len(collection))[:max_images]
    resolution = backbone.resolution
    shape = backbone.latent_shape(resolution)
    timesteps = torch.linspace(0.1, 0.9, n_timesteps).mul(backbone.num_train_timesteps).long()
    noises = torch.randn((n_timesteps, *shape), generator=generator)
    device = backbone.device
    # every (class, timestep) pair of one image is one batch, in chunks
    pairs_class = torch.arange(len(labels)).repeat_interleave(n_timesteps)
    pairs_time = torch.arange(n_timesteps).repeat(len(labels))
    correct = scored = 0
    started = time.perf_counter()
    for row in progress(rows, enabled=show_progress, desc="diffusion classifier", unit="image"):
        if max_seconds is not None and scored and time.perf_counter() - started > max_seconds:
            break
        record = collection.records[int(row)]
        latent = backbone.encode_images(load_image_tensor(record.path, resolution)[None])
        noisy = backbone.add_noise(latent.expand(n_timesteps, *shape), noises.to(device), timesteps.to(device))
        target = backbone.prediction_target(latent.expand(n_timesteps, *shape), noises.to(device), timesteps.to(device))
        errors = torch.empty(len(pairs_class))
        for start in range(0, len(pairs_class), chunk):
            part = slice(start, start + chunk)
            cls, tim = pairs_class[part], pairs_time[part]
            prompt = PromptEncoding(contexts[cls].to(device), end_index=0)
            prediction = backbone.run_unet(noisy[tim], timesteps[tim].to(device), prompt).prediction
            errors[part] = (prediction.float() - target[tim].float()).pow(2).flatten(1).mean(dim=1).cpu()
        guess = labels[int(errors.view(len(labels), n_timesteps).mean(dim=1).argmin())]
        correct += int(guess == record.label)
        scored += 1
    return {"accuracy": correct / max(1, scored), "chance": 1 / len(labels), "images": scored, "images_asked": int(len(rows)),
            "classes": len(labels), "timesteps": n_timesteps, "seconds": round(time.perf_counter() - started, 2)}
