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


def test_a_partition_is_the_median_of_several_umap_draws_so_one_bad_draw_is_outvoted(monkeypatch):
    from diffclust.cluster import manifold

    rings, truth = _rings()
    seeds, real = [], manifold.fit_kmeans

    def kmeans_with_one_bad_draw(data, k, seed):
        seeds.append(seed)
        centres, labels = real(data, k, seed=seed)
        if seed == 8:  # this draw lumps all but five rows together, as a merge would
            labels = np.zeros_like(labels)
            labels[:5] = 1
        return centres, labels

    monkeypatch.setattr(manifold, "fit_kmeans", kmeans_with_one_bad_draw)
    assert adjusted_rand_score(truth, umap_partition(rings, 2, seed=7, draws=5)) == 1.0
    assert seeds == [7, 8, 9, 10, 11]
    seeds.clear()  # a single draw is that draw, bad or not
    assert adjusted_rand_score(truth, umap_partition(rings, 2, seed=8, draws=1)) < 0.1 and seeds == [8]


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


def test_exact_neighbours_put_each_row_first_and_match_a_full_distance_table():
    from diffclust.cluster.manifold import exact_neighbours

    points = np.random.default_rng(1).normal(size=(60, 5)).astype(np.float32)
    indices, distances = exact_neighbours(points, 4)
    table = np.linalg.norm(points[:, None] - points[None], axis=2)
    assert (indices[:, 0] == np.arange(60)).all() and (distances[:, 0] == 0).all()
    assert (np.sort(indices, axis=1) == np.sort(np.argsort(table, axis=1)[:, :4], axis=1)).all()
    assert np.allclose(distances, np.sort(table, axis=1)[:, :4], atol=1e-4)


def test_umaps_graph_from_diffclusts_exact_neighbours_does_not_depend_on_the_scale_of_the_rows():
    """A row's distance to itself is rounding noise in |x|^2 - 2 x.y + |y|^2 (most rows of this set
    got a tiny positive one from scikit-learn); UMAP took it for the nearest neighbour's distance
    and built another graph for the same rows at another scale."""
    from umap.umap_ import fuzzy_simplicial_set

    from diffclust.cluster.manifold import exact_neighbours

    points = np.random.default_rng(0).normal(size=(300, 64)).astype(np.float32)
    graphs = []
    for scale in (1.0, 0.1, 10.0):
        indices, distances = exact_neighbours(points * scale, 15)
        graphs.append(fuzzy_simplicial_set(points * scale, 15, 0, "euclidean", knn_indices=indices, knn_dists=distances)[0].toarray())
    assert np.allclose(graphs[0], graphs[1], atol=1e-5) and np.allclose(graphs[0], graphs[2], atol=1e-5)


def test_from_umaps_own_exact_range_to_the_cap_diffclust_gives_umap_exact_neighbours(monkeypatch):
    import numba
    import umap.umap_

    from diffclust.cluster import manifold

    searched, given = [], []
    exact = manifold.exact_neighbours
    monkeypatch.setattr(manifold, "exact_neighbours", lambda rows, k: searched.append((len(rows), k)) or exact(rows, k))
    fit = umap.UMAP.fit
    monkeypatch.setattr(umap.UMAP, "fit", lambda self, X, *a, **kw: given.append(self.precomputed_knn[0] is not None) or fit(self, X, *a, **kw))
    rings, truth = _rings()
    draws = manifold.UMAP_PARTITION_DRAWS
    umap_partition(rings, 2, seed=0)
    assert searched == [] and given == [False] * draws  # below 4,096 rows umap-learn's own search is exact already
    monkeypatch.setattr(manifold, "UMAP_EXACT_BELOW", 50)  # the path taken from 4,096 rows, at a test's size
    assert adjusted_rand_score(truth, umap_partition(rings, 2, seed=0)) == 1.0
    assert searched == [(200, 15)] and given == [False] * draws + [True] * draws  # one search serves every draw
    monkeypatch.setattr(manifold, "EXACT_NEIGHBOURS_MAX_ROWS", 100)  # above the cap: pynndescent's search again
    umap_partition(rings, 2, seed=0)
    assert searched == [(200, 15)] and given == [False] * draws + [True] * draws + [False] * draws
    assert not isinstance(umap.umap_.smooth_knn_dist._cache, numba.core.caching.NullCache)  # compiled once, kept on disk
