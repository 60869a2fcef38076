"""Reading data sets: folders, class sub-folders and labels.csv manifests."""

from diffclust.data.collection import ImageCollection, ImageRecord, SkippedFile, scan_images
from diffclust.data.dataset import ImageTensorDataset
from diffclust.data.images import IMAGE_EXTENSIONS, load_image_tensor, load_rgb, resize_center_crop, to_rgb

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageCollection",
    "ImageRecord",
    "ImageTensorDataset",
    "SkippedFile",
    "load_image_tensor",
    "load_rgb",
    "resize_center_crop",
    "scan_images",
    "to_rgb",
]
