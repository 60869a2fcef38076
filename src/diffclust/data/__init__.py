"""Reading data sets: folders, class sub-folders and labels.csv manifests (loaded on first use)."""

from diffclust._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "IMAGE_EXTENSIONS": "diffclust.data.images",
    "ImageCollection": "diffclust.data.collection",
    "ImageRecord": "diffclust.data.collection",
    "ImageTensorDataset": "diffclust.data.dataset",
    "SkippedFile": "diffclust.data.collection",
    "load_image_tensor": "diffclust.data.images",
    "load_rgb": "diffclust.data.images",
    "resize_center_crop": "diffclust.data.images",
    "scan_images": "diffclust.data.collection",
    "to_rgb": "diffclust.data.images",
})

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
