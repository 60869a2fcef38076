"""What the cluster head starts from and whose neighbours it follows: the UNet feature z.

The proxy words S* are distilled to let the frozen model redraw each image, not to group it,
and their neighbourhoods are poorer than those of the feature z they are computed from (their
neighbour purity and the partitions each gives are measured in docs/benchmarks/difc.md). So with ``head_init="manifold"`` the head starts
from the UMAP partition of z, and with ``neighbour_space="features"`` its consistency loss
pairs each image with one of its nearest neighbours in z. z never changes during training,
so both are computed once.

SD-1.5's z is 640 x 32 x 32 per image; rows wider than MAX_ROW_DIMS are mapped to that many
dimensions by a seeded sparse random projection (scikit-learn), which keeps distances (and
so neighbourhoods) closely, where pooling would drop the layout that tells the groups apart.
"""

from __future__ import annotations

import numpy as np
import torch

from diffclust.cluster.manifold import umap_partition

#: z rows wider than this are randomly projected down to it
MAX_ROW_DIMS = 4096
#: rows read from the cache per projection step
ROWS_PER_READ = 256


def feature_rows(store, seed: int, max_dims: int = MAX_ROW_DIMS) -> np.ndarray:
    """(N, D) float32: every image's cached z, flattened; randomly projected to `max_dims`
    when wider (seeded, so every process and a resumed run get the same rows)."""
    count = len(store)
    width = int(np.prod(store.shape("features")))
    projection = None
    if width > max_dims:
        from sklearn.random_projection import SparseRandomProjection

        projection = SparseRandomProjection(max_dims, dense_output=True, random_state=seed).fit(np.zeros((1, width), np.float32))
    parts = []
    for rows in torch.arange(count).split(ROWS_PER_READ):
        block = store.batch("features", rows).float().reshape(len(rows), -1).numpy()
        parts.append(projection.transform(block).astype(np.float32) if projection is not None else block)
    return np.concatenate(parts)


def manifold_start(rows: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """The head's start: k-means in seeded UMAP embeddings of z (median of the draws)."""
    return umap_partition(rows, n_clusters, seed, "DiFiC's head_init='manifold' (--head-init)")
