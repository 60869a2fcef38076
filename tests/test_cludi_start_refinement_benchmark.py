"""The start-refinement probe's own parts (issue 29): its synthetic sets and one pass of every refinement."""

from __future__ import annotations

import sys

import numpy as np

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from cludi_start_refinement import REPEATS, ROWS, overlapping_gaussians, refinements, skewed_blobs  # noqa: E402

from diffclust.cluster.metrics import hungarian_accuracy  # noqa: E402


def test_the_overlapping_gaussians_have_the_asked_sizes_and_depend_only_on_the_draw():
    features, labels = overlapping_gaussians("equal", 0, groups=4, dims=8, rows=200)
    assert features.shape == (200, 8) and np.bincount(labels).tolist() == [50, 50, 50, 50]
    _, unequal = overlapping_gaussians("unequal", 0, groups=4, dims=8, rows=200)
    assert np.all((np.bincount(unequal) >= 15) & (np.bincount(unequal) <= 85)) and len(set(np.bincount(unequal))) > 1
    np.testing.assert_array_equal(features, overlapping_gaussians("equal", 0, groups=4, dims=8, rows=200)[0])
    assert not np.array_equal(features, overlapping_gaussians("equal", 1, groups=4, dims=8, rows=200)[0])


def test_the_skewed_blobs_run_from_50_to_1000_rows():
    features, labels = skewed_blobs()
    sizes = np.bincount(labels)
    assert sizes[0] == 50 and sizes[-1] == 1000 and np.all(np.diff(sizes) > 0) and features.shape == (sizes.sum(), 64)


def test_every_refinement_labels_every_row_and_keeps_a_clean_partition():
    """Four well-apart groups: the start is right, and no refinement that keeps the sizes breaks it."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 40)
    features = (8 * rng.normal(size=(4, 16))[labels] + rng.normal(size=(160, 16))).astype(np.float32)
    result = refinements(features, 4, seed=0)
    assert list(result) == list(ROWS)
    assert all(len(partition) == 160 and set(np.unique(partition)) <= set(range(4)) for partition in result.values())
    for row in ("consensus start", "self-labelling (diffclust.cluster.self_labelling)",
                "self-labelling, each cluster's sure rows weighing one in all", f"self-labelling repeated ({REPEATS} rounds)",
                "self-labelling + equal sizes"):
        assert hungarian_accuracy(labels, result[row]) == 1.0, row
