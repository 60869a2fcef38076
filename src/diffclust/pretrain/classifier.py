"""Does the text pathway work? Zero-shot accuracy of the model as a diffusion classifier.

Each image is noised with a fixed set of (noise, timestep) pairs; every class caption is asked
to denoise it, and the caption with the lowest mean error is the prediction. A model that
ignores its text scores chance (1 / number of classes).
"""

from __future__ import annotations

import numpy as np
import torch

from diffclust.backbones.base import DiffusionBackbone, PromptEncoding
from diffclust.data.collection import ImageCollection
from diffclust.data.images import load_image_tensor
from diffclust.engine.runtime import progress


@torch.no_grad()
def diffusion_classifier_accuracy(backbone: DiffusionBackbone, collection: ImageCollection, captions: dict[int, str],
                                  n_timesteps: int = 8, max_images: int = 200, seed: int = 0, chunk: int = 512,
                                  show_progress: bool = True) -> dict:
    """Accuracy over (up to) `max_images` labelled images of `collection`, with chance beside it."""
    labels = sorted(captions)
    contexts = torch.cat([backbone.encode_prompt(captions[label], 1).embeddings for label in labels])
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
    correct = 0
    for row in progress(rows, enabled=show_progress, desc="diffusion classifier", unit="image"):
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
    return {"accuracy": correct / max(1, len(rows)), "chance": 1 / len(labels), "images": int(len(rows)),
            "classes": len(labels), "timesteps": n_timesteps}
