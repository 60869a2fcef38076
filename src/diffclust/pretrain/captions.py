"""Captions for pretraining, and which images are held out to evaluate the text pathway."""

from __future__ import annotations

import numpy as np

from diffclust.data.collection import ImageCollection, ImageRecord
from diffclust.errors import DiffclustError


def caption_for(record: ImageRecord, template: str) -> str:
    """The manifest's caption column if present, else the template over class_name / label."""
    if record.caption:
        return record.caption
    if record.class_name is None and "{class_name}" in template:
        raise DiffclustError(
            f"'{record.file}' has no class_name (nor caption) to fill the caption template '{template}': "
            "give the data a labels.csv with a class_name or caption column, use class sub-folders, "
            "or pretrain with --unconditional."
        )
    return template.format(class_name=record.class_name, label=record.label)


def class_captions(collection: ImageCollection, template: str) -> dict[int, str]:
    """One caption per class label (for the diffusion classifier): the caption the class was
    trained with, so a manifest's caption column (one template per source) is asked as written."""
    captions: dict[int, str] = {}
    for record in collection.records:
        if record.label is not None and record.label not in captions:
            captions[record.label] = caption_for(record, template)
    return captions


def held_out_indices(collection: ImageCollection, split: str, fraction: float, seed: int) -> np.ndarray:
    """Rows of `split` if the data has any, else a seeded random `fraction` of the images."""
    marked = np.array([i for i, record in enumerate(collection.records) if record.split == split], dtype=np.int64)
    if len(marked):
        return marked
    count = int(round(len(collection) * fraction))
    return np.sort(np.random.default_rng(seed).permutation(len(collection))[:count]).astype(np.int64)
