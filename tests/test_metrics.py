"""Clustering scores on small cases worked by hand."""

import math

import pytest
import torch

from diffclust.cluster.kmeans import kmeans_confidences
from diffclust.cluster.metrics import clustering_scores, hungarian_accuracy, many_to_one_accuracy


def test_hungarian_accuracy_matches_hand_count():
    # clusters 1->class 0 (2 right), 0->class 1 (2 right), 2->class 2 (1 right): 5 of 6
    assert hungarian_accuracy([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 0, 2]) == pytest.approx(5 / 6)


def test_over_clustering_one_to_one_versus_many_to_one():
    truth, clusters = [0, 0, 0, 1, 1, 1], [0, 0, 1, 2, 2, 3]
    assert hungarian_accuracy(truth, clusters) == pytest.approx(4 / 6)  # only two clusters can be matched
    assert many_to_one_accuracy(truth, clusters) == pytest.approx(1.0)  # every cluster is pure


def test_relabelled_perfect_clustering_scores_one():
    scores = clustering_scores([0, 0, 1, 1, 2], [2, 2, 0, 0, 1])
    assert scores == pytest.approx({"acc": 1.0, "acc_many_to_one": 1.0, "nmi": 1.0, "ari": 1.0})


def test_crossed_clustering_has_zero_nmi_and_negative_ari():
    # contingency all ones: sum C(n_ij,2) = 0, expected index 2*2/6, max 2 -> ARI = -0.5
    scores = clustering_scores([0, 0, 1, 1], [0, 1, 0, 1])
    assert scores["ari"] == pytest.approx(-0.5)
    assert scores["nmi"] == pytest.approx(0.0, abs=1e-12)
    assert scores["acc"] == pytest.approx(0.5)


def test_nmi_and_ari_equal_scikit_learns_on_random_and_edge_cases():
    import numpy as np
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from diffclust.cluster.metrics import adjusted_rand_index, normalized_mutual_information

    rng = np.random.default_rng(0)
    cases = [([0], [5]), ([0, 0, 0], [1, 1, 1]), ([0, 1, 2], [0, 1, 2]), ([0, 1, 2], [0, 0, 0]), (["a", "b", "b"], [3, 3, 1])]
    for _ in range(300):
        size = int(rng.integers(2, 50))
        cases.append((rng.integers(0, rng.integers(1, 7), size), rng.integers(0, rng.integers(1, 7), size)))
    for truth, found in cases:
        assert normalized_mutual_information(truth, found) == pytest.approx(normalized_mutual_info_score(truth, found), abs=1e-12)
        assert adjusted_rand_index(truth, found) == pytest.approx(adjusted_rand_score(truth, found), abs=1e-12)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError):
        hungarian_accuracy([0, 1], [0])
    with pytest.raises(ValueError):
        hungarian_accuracy([], [])
    assert math.isfinite(hungarian_accuracy([3], [7]))


@pytest.mark.parametrize("spacing", [1.0, 1000.0])
def test_kmeans_confidence_is_measured_in_gaps_between_centres(spacing):
    centres = torch.tensor([[0.0, 0.0], [2.0, 0.0]]) * spacing
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0]]) * spacing
    confidence = kmeans_confidences(points, centres).max(dim=1).values
    # at a centre: squared distances 0 and 4 half-gaps -> 1 / (1 + 1/5); midway: 0.5, at any scale
    assert confidence.tolist() == pytest.approx([1 / 1.2, 0.5])
