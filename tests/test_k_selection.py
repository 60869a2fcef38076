"""Choosing K without labels: hand cases, Gaussian blobs of known K, and CLUDI's n_clusters="auto"."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from diffclust.cli import main
from diffclust.cluster.k_selection import KSelection, choose_k, default_k_range, parse_k_range
from diffclust.errors import DiffclustError
from diffclust.methods.cludi import CLUDI

from conftest import SMALL_CLUDI

FAST = dict(batch_size=64, hidden_dim=64, embedding_dim=16, teacher_steps=3, predict_samples=2, predict_steps=3,
            monitor_samples=1, lr=1e-3, ema_decay=0.99, init_steps=60, device="cpu", progress=False)


def blobs(k: int, per_cluster: int, spread: float, imbalance: bool = False, d: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = np.round(per_cluster * (np.linspace(0.5, 1.5, k) if imbalance else np.ones(k))).astype(int)
    labels = np.repeat(np.arange(k), sizes)
    return rng.normal(size=(k, d))[labels] * spread + rng.normal(size=(len(labels), d)), labels


def close_pairs():
    """Six tight groups of 40 in three pairs: each pair's groups 3 apart, the pairs about 60."""
    rng = np.random.default_rng(0)
    pairs = rng.normal(size=(3, 16)) * 40
    centres = np.concatenate([pairs + offset for offset in (0.0, 3.0)])
    labels = np.repeat(np.arange(6), 40)
    return centres[labels] + 0.3 * rng.normal(size=(len(labels), 16)), labels


def test_each_criterion_picks_by_its_own_rule():
    selection = KSelection(0, "silhouette", [2, 3, 4, 5], {
        "silhouette": [0.2, 0.6, 0.5, 0.1], "davies_bouldin": [1.0, 0.4, 0.7, 0.9],
        "prediction_strength": [0.95, 0.9, 0.85, 0.3]})
    assert selection.pick("silhouette") == 3 and selection.pick("davies_bouldin") == 3
    assert selection.pick("prediction_strength") == 4  # the largest K still above 0.8
    assert default_k_range(1250) == (2, 100) and default_k_range(60) == (2, 12)
    assert parse_k_range("3:40") == (3, 40)
    with pytest.raises(DiffclustError, match="MIN:MAX"):
        parse_k_range("40")


@pytest.mark.parametrize("k", [3, 10, 30, 50])
def test_k_is_exact_on_well_separated_blobs(k):
    features, _ = blobs(k, 20, spread=10.0)
    assert choose_k(features, (2, k + 10), criteria=("silhouette",)).k == k


def test_umap_silhouette_finds_the_blobs_and_scores_only_when_asked():
    features, _ = blobs(10, 30, spread=2.5, imbalance=True, seed=1)
    selection = choose_k(features, (2, 20), "umap_silhouette", criteria=("umap_silhouette",))
    assert list(selection.scores) == ["umap_silhouette"] and abs(selection.k - 10) <= 2, selection.k
    assert "umap_silhouette" not in choose_k(features, (2, 4)).scores  # default record: the six cheaper criteria


def test_knn_modularity_keeps_close_groups_apart_where_silhouette_merges_them():
    """Three pairs of tight groups, each pair close together and far from the others: silhouette
    prefers the three pairs; the kNN graph's modularity, blind to distances between groups that
    share no neighbours, finds the six groups."""
    features, _ = close_pairs()
    selection = choose_k(features, (2, 12), "knn_modularity", criteria=("silhouette",))
    assert selection.k == 6 and selection.pick("silhouette") == 3
    assert list(selection.scores) == ["knn_modularity", "silhouette"]
    best = selection.scores["knn_modularity"][selection.candidates.index(6)]
    assert best == pytest.approx(5 / 6, abs=0.01)  # every link inside its group: 1 - 6 x (1/6)^2


def test_umap_hdbscan_counts_the_close_groups_and_prefers_the_nearest_k():
    """The same three close pairs: HDBSCAN in the UMAP embeddings finds the six groups, and the
    criterion's curve is minus each K's distance from that count."""
    features, _ = close_pairs()
    selection = choose_k(features, (2, 12), "umap_hdbscan", criteria=("silhouette",))
    assert selection.k == 6 and selection.pick("silhouette") == 3
    assert selection.scores["umap_hdbscan"] == [-abs(k - 6) for k in range(2, 13)]
    assert "HDBSCAN found 6, 6, 6 clusters of at least 5 items" in selection.notes["umap_hdbscan"]


def test_umap_criteria_on_huge_rows_choose_as_on_the_same_rows_at_unit_size():
    """UMAP computes in float32, where the squared distances of rows of size 1e30 overflow (umap-learn
    then crashed); they are scaled down by a power of two first, which leaves the neighbours as they were."""
    features, _ = close_pairs()
    huge = choose_k(features * 1e30, (2, 12), "umap_hdbscan", criteria=("umap_silhouette",))
    plain = choose_k(features, (2, 12), "umap_hdbscan", criteria=("umap_silhouette",))
    assert huge.k == plain.k == 6 and huge.pick("umap_silhouette") == plain.pick("umap_silhouette")


def test_umap_hdbscan_without_density_clusters_lets_silhouette_choose():
    features, _ = blobs(3, 3, spread=10.0)  # 9 items: too few for two clusters of five
    selection = choose_k(features, (2, 3), "umap_hdbscan", criteria=())
    assert selection.criterion == "silhouette" and selection.k == 3
    assert selection.notes["umap_hdbscan"] == ("9 items are too few for density clusters of at least 5 items; "
                                               "fewer than two, so silhouette chose K")
    assert np.isnan(selection.scores["umap_hdbscan"]).all()


def test_umap_silhouette_without_umap_learn_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # import fails as if not installed
    with pytest.raises(DiffclustError, match="pip install umap-learn"):
        choose_k(blobs(3, 10, spread=5.0)[0], (2, 4), "umap_silhouette")


@pytest.mark.parametrize("k", [10, 30])
def test_k_is_within_a_fifth_on_close_imbalanced_blobs(k):
    features, _ = blobs(k, 30, spread=2.5, imbalance=True, seed=1)
    chosen = choose_k(features, (2, 2 * k), criteria=("silhouette",)).k
    assert abs(chosen - k) <= 0.2 * k, chosen


def test_cludi_chooses_k_and_keeps_it(tmp_path):
    features, labels = blobs(5, 40, spread=8.0)
    model = CLUDI("auto", k_range=(2, 12), epochs=3, output_dir=tmp_path / "run", **FAST).fit(features)
    assert model.n_clusters_ == 5 and len(np.unique(model.labels_)) == 5
    table = (tmp_path / "run" / "k_selection.csv").read_text().splitlines()
    assert table[0].startswith("k,silhouette,") and len(table) == 1 + 11
    assert (tmp_path / "run" / "k_selection.png").read_bytes()[:4] == b"\x89PNG"
    loaded = CLUDI.load(tmp_path / "run")
    assert loaded.n_clusters_ == 5 and np.array_equal(loaded.predict(features), model.predict(features))


def test_k_auto_on_the_command_line(tmp_path, capsys):
    features, _ = blobs(4, 30, spread=8.0)
    np.save(tmp_path / "f.npy", features)
    assert main(["fit", "--method", "cludi", "--features", str(tmp_path / "f.npy"), "--k", "auto", "--k-range", "2:9",
                 "--epochs", "1", *SMALL_CLUDI, "--predict-samples", "2", "--predict-steps", "3", "--teacher-steps", "3", "--batch-size", "64",
                 "--device", "cpu", "--quiet", "--report", "--out", str(tmp_path / "run")]) == 0
    assert "into 4 of 4 clusters (K chosen by silhouette" in capsys.readouterr().out
    assert 'src="k_selection.png"' in (tmp_path / "run" / "report" / "index.html").read_text()


def test_difc_k_auto_on_the_command_line(usps_subset, tmp_path, capsys):
    """DiFiC chooses K on z before training (the API's behaviour is tested on a known mixture in
    test_difc_recovers_mixture): here the CLI path, its files and its message."""
    run = tmp_path / "difc"
    assert main(["fit", str(usps_subset), "--k", "auto", "--k-range", "2:5", "--backbone", "tiny-random", "--resolution", "32",
                 "--epochs", "2", "--batch-size", "20", "--device", "cpu", "--quiet", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    chosen = int(out.split(" of ")[1].split(" clusters")[0])
    assert 2 <= chosen <= 5 and "clustered 60 images into" in out and "(K chosen by umap_hdbscan" in out
    assert len((run / "k_selection.csv").read_text().splitlines()) == 1 + 4
    assert json.loads((run / "run.json").read_text())["n_clusters"] == chosen


def test_diec_chooses_k_on_the_features_at_its_pair(tiny_ddpm, usps_subset, tmp_path):
    from diffclust.methods.diec import DiEC

    settings = dict(backbone=str(tiny_ddpm), layer="mid_block", timestep=100, finetune_unet=False, epochs=1, batch_size=64,
                    pool_size=2, noise_draws=1, device="cpu", progress=False)
    model = DiEC("auto", k_range=(2, 12), output_dir=tmp_path / "run", **settings).fit(usps_subset)
    assert 2 <= model.n_clusters_ <= 12 and model.k_selection_.candidates == list(range(2, 13))
    assert "umap_hdbscan" in model.k_selection_.scores and "HDBSCAN found" in model.k_selection_.notes["umap_hdbscan"]  # DiEC's default
    assert model.network_.centres.shape[0] == model.n_clusters_
    assert len((tmp_path / "run" / "k_selection.csv").read_text().splitlines()) == 12
    loaded = DiEC.load(tmp_path / "run")
    assert loaded.n_clusters_ == model.n_clusters_
    assert np.array_equal(loaded.predict(usps_subset), model.labels_)


def test_the_digit_benchmark_names_the_classes_that_share_one_dense_group():
    """Two classes drawn from one blob are one dense group; the benchmark says which two."""
    from conftest import REPO

    sys.path.insert(0, str(REPO / "benchmarks"))
    from k_digits import classes_sharing_a_dense_group

    from diffclust.cluster.k_selection import MAX_SCANNED_ITEMS, density_labels, scanned_rows

    features, blob = blobs(3, 80, spread=12.0)
    labels = np.where(blob == 0, np.arange(len(blob)) % 2, blob + 1)  # blob 0 holds classes 0 and 1; blobs 1, 2 hold 2, 3
    assert len(set(density_labels(scanned_rows(features, MAX_SCANNED_ITEMS, 0), 0).tolist()) - {-1}) == 3
    assert classes_sharing_a_dense_group(features, labels) == [[0, 1]]
    assert classes_sharing_a_dense_group(features, blob) == []  # one class per blob: nothing shared


def test_choose_k_scans_a_seeded_draw_of_at_most_max_items():
    from diffclust.cluster.k_selection import scanned_items, scanned_rows

    assert scanned_items(5, 10, 0).tolist() == [0, 1, 2, 3, 4]
    draw = scanned_items(100, 10, 3)
    assert len(draw) == 10 and (np.diff(draw) > 0).all() and draw.tolist() == scanned_items(100, 10, 3).tolist()
    rows = np.random.default_rng(0).normal(size=(100, 4))
    np.testing.assert_array_equal(scanned_rows(rows, 10, 3), rows[draw])  # 4 columns: no PCA
