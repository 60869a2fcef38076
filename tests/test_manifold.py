"""k-means in a UMAP embedding (cluster.manifold): what it finds that k-means cannot, and its edges."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from diffclust.choices import SEARCH_SCORES
from diffclust.cluster.kmeans import fit_kmeans
from diffclust.cluster.manifold import umap_embedding, umap_partition
from diffclust.errors import DiffclustError
from diffclust.methods.diec.search import SCORES


def _rings(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    angles = rng.uniform(0, 2 * np.pi, n)
    truth = np.repeat([0, 1], n // 2)
    radius = np.where(truth == 0, 1.0, 3.0)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1) + rng.normal(scale=0.05, size=(n, 2)), truth


def test_umap_partition_finds_the_rings_that_kmeans_cuts_in_half_and_repeats_with_its_seed():
    rings, truth = _rings()
    found = umap_partition(rings, 2, seed=0)
    assert adjusted_rand_score(truth, found) == 1.0
    assert abs(adjusted_rand_score(truth, fit_kmeans(rings, 2, seed=0)[1])) < 0.05  # k-means: two half-planes
    assert np.array_equal(found, umap_partition(rings, 2, seed=0))


def test_too_few_rows_for_a_neighbourhood_graph_come_back_unchanged():
    rows = np.arange(22, dtype=np.float32).reshape(11, 2)
    assert np.array_equal(umap_embedding(rows, seed=0), rows)
    assert umap_embedding(_rings(40)[0], seed=0).shape == (40, 10)


def test_without_umap_learn_the_error_names_the_setting_and_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # import fails as if not installed
    with pytest.raises(DiffclustError, match=r"DiEC's init='umap' \(--init umap\) needs umap-learn.*: pip install umap-learn"):
        umap_partition(_rings()[0], 2, seed=0, needed_by="DiEC's init='umap' (--init umap)")


def test_the_command_line_lists_exactly_the_search_scores_the_search_knows():
    assert tuple(SCORES) == SEARCH_SCORES
