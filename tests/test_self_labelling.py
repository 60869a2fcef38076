"""Self-labelling (SCAN's last step) and CLUDI's use of it."""

import csv

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from diffclust.cli import main
from diffclust.cluster.metrics import hungarian_accuracy
from diffclust.cluster.self_labelling import MIN_TRAINING_AGREEMENT, NEIGHBOURS, fit_self_labeller, size_offsets, sure_rows
from diffclust.methods.cludi import CLUDI

FAST = dict(batch_size=64, hidden_dim=64, depth=2, embedding_dim=16, teacher_steps=3, predict_samples=2, predict_steps=3,
            monitor_samples=1, epochs=2, device="cpu", progress=False)


def two_blobs(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n // 2)
    return (np.array([[-4.0, 0.0], [4.0, 0.0]])[labels] + rng.normal(size=(n, 2))).astype(np.float32), labels


def test_sure_rows_follow_the_neighbours_vote_and_keep_every_cluster():
    """A row is sure when at least half of its neighbours share its cluster; cluster 2 (row 6)
    has no sure row, so its rows are all kept."""
    labels = np.array([0, 0, 0, 1, 1, 1, 2])
    table = np.array([[1, 2, 3, 4],   # clusters 0, 0, 1, 1: 2 of 4 agree -> sure (the boundary)
                      [3, 4, 5, 0],   # 1, 1, 1, 0: 1 of 4
                      [3, 4, 5, 6],   # 1, 1, 1, 2: 0 of 4
                      [4, 5, 0, 1],   # 1, 1, 0, 0: 2 of 4 -> sure
                      [0, 1, 2, 6],   # 0 of 4
                      [3, 0, 1, 2],   # 1 of 4
                      [0, 1, 2, 3]])  # 0 of 4, but the only row of cluster 2
    assert sure_rows(labels, table).tolist() == [True, False, False, True, False, False, True]


def test_a_few_rows_clustered_against_their_surroundings_are_moved_back():
    features, truth = two_blobs()
    wrong = truth.copy()
    deep_in_a = np.flatnonzero((truth == 0) & (features[:, 0] < -4.5))[:6]
    wrong[deep_in_a] = 1
    labeller, share, reproduced = fit_self_labeller(features, wrong, 2, seed=0)
    labels, confidence = labeller.predict(features)
    assert hungarian_accuracy(truth, wrong) == pytest.approx(1 - 6 / 200)
    assert hungarian_accuracy(truth, labels) == 1.0 and np.array_equal(labels[deep_in_a], np.zeros(6))
    assert 0.9 < share < 1.0 and reproduced == 1.0  # the six moved rows had neighbours of the other cluster
    assert confidence.min() >= 0.5 and confidence.max() <= 1.0


@pytest.mark.parametrize("clusters", [2, 4])
def test_the_labellers_probabilities_are_the_regressions(clusters):
    """Stored as K weight rows (two classes included, where scikit-learn keeps one row), the
    probabilities equal LogisticRegression.predict_proba; an unused cluster gets probability 0."""
    rng = np.random.default_rng(1)
    features = rng.normal(size=(120, 3)).astype(np.float32)
    features[:, :2] += 0.5 * np.sign(features[:, :2])  # a margin around the quadrants' edges
    labels = (features[:, 0] > 0) + (2 * (features[:, 1] > 0) if clusters == 4 else 0)
    table = np.array([np.flatnonzero(labels == label)[:NEIGHBOURS] for label in labels])  # every row sure
    labeller, share, reproduced = fit_self_labeller(features, labels, clusters + 1, seed=0, neighbour_table=table)
    reference = LogisticRegression(max_iter=1000, random_state=0).fit(features, labels).predict_proba(features)
    probabilities = labeller.probabilities(features)
    assert share == 1.0 and reproduced == 1.0 and probabilities.shape == (120, clusters + 1)
    np.testing.assert_allclose(probabilities[:, :clusters], reference, atol=1e-6)
    assert np.all(probabilities[:, clusters] == 0)


def test_clusters_a_line_cannot_separate_are_left_as_they_are():
    """Two interleaved half-moons, clustered right: a linear classifier reproduces only about 88%
    of them, below MIN_TRAINING_AGREEMENT, so no labeller is returned."""
    from sklearn.datasets import make_moons

    features, labels = make_moons(400, noise=0.05, random_state=0)
    labeller, share, reproduced = fit_self_labeller(features, labels, 2, seed=0)
    assert labeller is None and share > 0.95 and 0.8 < reproduced < MIN_TRAINING_AGREEMENT


def test_one_cluster_is_left_as_it_is():
    features, _ = two_blobs(40)
    assert fit_self_labeller(features, np.zeros(40, dtype=int), 1, seed=0) == (None, 0.0, 0.0)


def test_cludi_self_labels_logs_it_and_predicts_with_it(tmp_path):
    features, truth = two_blobs(256)
    model = CLUDI(2, random_state=0, output_dir=tmp_path / "run", **FAST).fit(features, truth)
    last = model.history_[-1]
    assert last["phase"] == "self-labelling" and last["epoch"] == FAST["epochs"] + 1
    assert last["acc"] == pytest.approx(hungarian_accuracy(truth, model.labels_)) and last["acc"] == 1.0
    assert "final_acc" in model.history_[-2]  # the teacher's own assignment, scored before it
    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        assert list(csv.DictReader(handle))[-1]["phase"] == "self-labelling"
    loaded = CLUDI.load(tmp_path / "run")
    assert np.array_equal(loaded.predict(features), model.labels_)
    assert np.array_equal(loaded.predict(features[:7] + 0.01), model.self_labeller_.predict(
        ((features[:7] + 0.01) - model.feature_mean_.numpy()) / model.feature_std_.numpy())[0])

    plain = CLUDI(2, random_state=0, self_labelling=False, **FAST).fit(features)
    assert plain.self_labeller_ is None and all(record.get("phase") != "self-labelling" for record in plain.history_)


def test_the_command_line_can_turn_self_labelling_off(tmp_path):
    features, _ = two_blobs(128)
    np.save(tmp_path / "x.npy", features)
    common = ["fit", "--method", "cludi", "--features", str(tmp_path / "x.npy"), "--k", "2", "--epochs", "1", "--batch-size", "64",
              "--hidden-dim", "32", "--embedding-dim", "8", "--teacher-steps", "2", "--predict-samples", "1", "--predict-steps", "2",
              "--device", "cpu", "--quiet"]
    assert main(common + ["--out", str(tmp_path / "off"), "--no-self-labelling"]) == 0
    assert main(common + ["--out", str(tmp_path / "on")]) == 0
    assert not CLUDI.load(tmp_path / "off").self_labelling and CLUDI.load(tmp_path / "off").self_labeller_ is None
    assert CLUDI.load(tmp_path / "on").self_labeller_ is not None
    with pytest.raises(Exception, match="self_labelling"):
        CLUDI(2, self_labelling="yes", **FAST).fit(features)


def test_cludi_keeps_the_teachers_clusters_where_a_line_cannot_draw_them(tmp_path):
    from sklearn.datasets import make_moons

    features, truth = make_moons(300, noise=0.05, random_state=0)
    model = CLUDI(2, random_state=0, **FAST).fit(features.astype(np.float32), truth)
    last = model.history_[-1]
    assert last["phase"].startswith("self-labelling skipped") and last["moved_rows"] == 0 and last["sure_rows_reproduced"] < 0.99
    assert model.self_labeller_ is None and last["acc"] == pytest.approx(model.history_[-2]["final_acc"])
    # without labels too, the skipped step's row reaches metrics.csv
    CLUDI(2, random_state=0, output_dir=tmp_path / "run", **FAST).fit(features.astype(np.float32))
    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        assert list(csv.DictReader(handle))[-1]["phase"].startswith("self-labelling skipped")


def test_size_offsets_balance_the_columns():
    """Three rows prefer cluster 0 and one prefers 1: after the offsets each cluster holds half
    of the mass (2 rows' worth), and the hard assignment splits 2 / 2 where it was 3 / 1."""
    scores = np.log(np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]]))
    offsets = size_offsets(scores)
    shifted = scores - offsets
    mass = (np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)).sum(axis=0)
    np.testing.assert_allclose(mass, [2.0, 2.0], atol=1e-6)
    assert scores.argmax(axis=1).tolist() == [0, 0, 0, 1] and shifted.argmax(axis=1).tolist() == [0, 0, 1, 1]


def test_equal_sizes_split_a_cluster_that_took_rows_of_its_neighbour():
    """Two equal blobs, the partition gives 30 rows of blob 1 (those nearest blob 0) to cluster 0:
    the plain labeller keeps a boundary near there; with equal sizes the clusters come out
    100 / 100 and the blobs are recovered."""
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], 100)
    features = (np.array([[-3.0, 0.0], [3.0, 0.0]])[truth] + rng.normal(size=(200, 2))).astype(np.float32)
    skewed = truth.copy()
    skewed[np.flatnonzero(truth == 1)[np.argsort(features[truth == 1, 0])[:30]]] = 0
    plain = fit_self_labeller(features, skewed, 2, seed=0)[0].predict(features)[0]
    equal = fit_self_labeller(features, skewed, 2, seed=0, equal_sizes=True)[0].predict(features)[0]
    assert np.bincount(plain).tolist() != [100, 100] and hungarian_accuracy(truth, plain) < hungarian_accuracy(truth, equal)
    assert abs(np.bincount(equal)[0] - 100) <= 3 and hungarian_accuracy(truth, equal) >= 0.95


def test_balanced_needs_self_labelling():
    features, _ = two_blobs(64)
    with pytest.raises(Exception, match="balanced"):
        CLUDI(2, balanced=True, self_labelling=False, **FAST).fit(features)
