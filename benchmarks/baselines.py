"""The two raw-pixel rows every clustering table of this project starts with: what any user
gets without a diffusion model (k-means, and UMAP + k-means, on the pixels)."""

from __future__ import annotations

import numpy as np

KMEANS_PIXELS = "k-means on raw pixels"
UMAP_PIXELS = "UMAP + k-means on raw pixels"


def pixel_rows(pixels, labels, k: int, seed: int) -> dict[str, dict]:
    """{row name: clustering scores} for k-means and UMAP + k-means on `pixels` (one row per image)."""
    from diffclust.cluster.kmeans import fit_kmeans
    from diffclust.cluster.manifold import umap_partition
    from diffclust.cluster.metrics import clustering_scores

    flat = np.asarray(pixels, dtype=np.float32).reshape(len(pixels), -1)
    return {KMEANS_PIXELS: clustering_scores(labels, fit_kmeans(flat, k, seed=seed)[1]),
            UMAP_PIXELS: clustering_scores(labels, umap_partition(flat, k, seed))}
