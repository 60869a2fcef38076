"""A torch Dataset over an ImageCollection that yields (index, pixels)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from diffclust.data.collection import ImageCollection
from diffclust.data.images import image_to_tensor, resize_center_crop


class ImageTensorDataset(Dataset):
    """Images preprocessed to `resolution`; the index travels with them so results can be gathered."""

    def __init__(self, collection: ImageCollection, resolution: int):
        self.collection = collection
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.collection)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return index, image_to_tensor(resize_center_crop(self.collection.records[index].rgb(self.resolution), self.resolution))
