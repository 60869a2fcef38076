"""CLUDI: EMA teacher, losses by hand, blobs, and features from files and backbones alike."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from diffclust.cli import main
from diffclust.cluster.consensus import NEIGHBOUR_COUNTS, consensus_partition, median_partition
from diffclust.cluster.kmeans import fit_kmeans
from diffclust.cluster.metrics import hungarian_accuracy
from diffclust.engine.checkpoint import load_tensors
from diffclust.engine.runtime import make_accelerator
from diffclust.errors import DiffclustError
from diffclust.methods.cludi import CLUDI
from diffclust.methods.cludi.inputs import read_feature_file
from diffclust.methods.cludi.losses import two_way_cross_entropy
from diffclust.methods.cludi.network import AssignmentEmbedding, CLUDINetwork
from diffclust.methods.cludi.training import START_PARTITION_NAME, CLUDITrainer
from diffclust.methods.diec import DiEC
from diffclust.outputs import read_assignments

#: small and quick, for tests: the published defaults need hundreds of epochs
FAST = dict(batch_size=64, hidden_dim=64, depth=3, embedding_dim=16, teacher_steps=5, predict_samples=2,
            predict_steps=5, monitor_samples=1, lr=1e-3, ema_decay=0.99, device="cpu", progress=False)


def blobs(k: int = 5, n: int = 500, d: int = 32, spread: float = 3.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    return (rng.normal(size=(k, d)) * spread)[labels] + rng.normal(size=(n, d)), labels


# ---------------------------------------------------------------------------------- numerics
def test_two_way_cross_entropy_matches_hand_computation():
    teacher = torch.tensor([[0.0, math.log(3)], [0.0, 0.0]])
    student = torch.tensor([[math.log(2), 0.0], [0.0, 0.0]])
    total, forward, backward = two_way_cross_entropy(teacher, student, row_temperature=1.0, column_temperature=1.0)
    # teacher target: columns over the batch (0.5, 0.5), (0.75, 0.25); rows renormalised (0.4, 0.6), (2/3, 1/3)
    # student prediction: rows (2/3, 1/3), (1/2, 1/2); columns renormalised (4/7, 2/5), (3/7, 3/5); x B/K = 1
    expected_forward = -(0.4 * math.log(4 / 7) + 0.6 * math.log(2 / 5) + 2 / 3 * math.log(3 / 7) + 1 / 3 * math.log(3 / 5)) / 2
    # student target: (4/7, 3/7), (2/5, 3/5); teacher prediction: (1/3, 3/5), (2/3, 2/5)
    expected_backward = -(4 / 7 * math.log(1 / 3) + 3 / 7 * math.log(3 / 5) + 2 / 5 * math.log(2 / 3) + 3 / 5 * math.log(2 / 5)) / 2
    assert float(forward) == pytest.approx(expected_forward, abs=1e-6)  # 0.754381
    assert float(backward) == pytest.approx(expected_backward, abs=1e-6)  # 0.779332
    assert float(total) == pytest.approx((expected_forward + expected_backward) / 2, abs=1e-6)


def test_assignment_embedding_of_one_hot_and_mixed_assignments():
    embedding = AssignmentEmbedding(2, 2)
    with torch.no_grad():
        embedding.centres.copy_(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))  # unit: (0.6, 0.8), (0, 1)
    one_hot = embedding(torch.tensor([[100.0, 0.0]]), temperature=0.1)
    assert torch.allclose(one_hot, torch.tensor([[0.6, 0.8]]), atol=1e-6)
    mixed = embedding(torch.tensor([[0.0, math.log(3)]]), temperature=1.0)  # weights (1/4, 3/4)
    assert torch.allclose(mixed, torch.tensor([[0.15, 0.95]]), atol=1e-6)


def test_teacher_is_the_exponential_moving_average_of_the_student():
    features, _ = blobs(n=96, d=8)
    torch.manual_seed(0)
    network = CLUDINetwork(8, 5, embedding_dim=16, hidden=32, depth=1)
    params = {**CLUDI(5, epochs=1, **{**FAST, "batch_size": 32, "ema_decay": 0.9}).get_params()}
    trainer = CLUDITrainer(params, torch.tensor(features, dtype=torch.float32), network, make_accelerator("cpu"), None, None)
    expected = {name: value.clone() for name, value in network.state_dict().items()}
    step = trainer.optimizer.step

    def step_and_follow(*args, **kwargs):
        result = step(*args, **kwargs)
        for name, value in network.named_parameters():
            expected[name] = 0.9 * expected[name] + 0.1 * value.detach()
        return result

    trainer.optimizer.step = step_and_follow
    trainer.train_epoch(0)  # 3 steps of 32
    teacher = trainer.teacher.model.state_dict()
    moved = 0
    for name, value in network.named_parameters():
        assert torch.allclose(teacher[name], expected[name], atol=1e-6), name
        moved += not torch.allclose(teacher[name], value)
    assert moved > 0  # the teacher is not simply the student


# ---------------------------------------------------------------------------------- clustering
def test_cludi_separates_gaussian_blobs_in_32_dimensions():
    features, labels = blobs()
    model = CLUDI(5, epochs=30, random_state=0, **{**FAST, "batch_size": 128, "hidden_dim": 128})
    model.fit(features, labels)
    assert hungarian_accuracy(labels, model.labels_) >= 0.98
    assert model.labels_.shape == (500,) and model.confidence_.min() > 0.5
    assert model.history_[-1]["phase"] == "self-labelling"  # its row scores the final labels; the teacher's are the row before
    assert model.history_[-1]["acc"] == pytest.approx(hungarian_accuracy(labels, model.labels_)) and model.history_[-2]["final_acc"] >= 0.98
    assert min(record["acc"] for record in model.history_) >= 0.98  # self-distillation keeps what it started from


def test_the_start_partition_is_epoch_zero_of_the_log_scored_like_the_epochs(tmp_path):
    from diffclust.cluster.kmeans import fit_kmeans
    from diffclust.cluster.metrics import clustering_scores

    features, labels = blobs(n=200, d=4, spread=1.5)  # overlapping: k-means starts at 73.5%, so epoch 0 has a score of its own
    model = CLUDI(5, epochs=2, random_state=0, init="kmeans", init_steps=20, start_margin=1.0, output_dir=tmp_path / "run",
                  **FAST).fit(features, labels)  # the start check's row is tested in test_cludi_scale.py
    start = model.history_[0]
    expected = clustering_scores(labels, fit_kmeans(torch.tensor(features, dtype=torch.float32), 5, seed=0)[1])
    assert start["epoch"] == 0 and start["phase"] == "start: kmeans" and start["clusters_used"] == 5 and start["acc"] < 0.9
    assert {key: start[key] for key in expected} == pytest.approx(expected)
    assert [record["epoch"] for record in model.history_] == [0, 1, 2, 3] and model.history_[3]["phase"] == "self-labelling"
    assert (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1].startswith("0,start: kmeans,")
    # the networks copied the start in rounds of init_steps until a round no longer brought them closer
    assert start["init_steps_run"] % 20 == 0 and 20 <= start["init_steps_run"] < 3000 and 0 < start["agreement_with_start"] < 0.99


def test_the_start_copy_goes_on_while_it_gains_and_stops_at_max_init_steps(caplog):
    import logging

    features, labels = blobs(n=300, d=8, spread=3.0)  # separated: every round of 5 steps brings the copy closer
    with caplog.at_level(logging.INFO, logger="diffclust"):
        model = CLUDI(5, epochs=1, random_state=0, init="kmeans", init_steps=5, init_agreement=1.0, max_init_steps=15, **FAST).fit(features, labels)
    start = model.history_[0]
    assert start["init_steps_run"] == 15 and start["agreement_with_start"] < 1.0
    assert any("After 15 steps the networks reproduce the start partition on" in record.message and "max_init_steps" in record.message
               for record in caplog.records)
    with pytest.raises(Exception, match="max_init_steps at least init_steps"):
        CLUDI(5, init_steps=50, max_init_steps=10, **FAST).fit(features)


def test_from_random_weights_the_teacher_student_loop_itself_finds_structure():
    features, labels = blobs()
    model = CLUDI(5, epochs=60, random_state=1, init="random", self_labelling=False, **{**FAST, "batch_size": 128, "hidden_dim": 128, "embedding_dim": 64,
                                                          "teacher_steps": 10, "predict_steps": 10, "predict_samples": 4})
    model.fit(features, labels)
    first, last = model.history_[0]["acc"], model.history_[-1]["final_acc"]
    # measured: 0.44 -> 0.70; it ends with one group split and two merged, which k-means init avoids
    assert first < 0.5 and last > first + 0.2


def test_feature_files_of_every_kind_read_the_same(tmp_path):
    features, labels = blobs(n=20, d=4)
    values = torch.tensor(features, dtype=torch.float32)
    np.save(tmp_path / "f.npy", values.numpy())
    torch.save({"features": values, "labels": torch.tensor(labels)}, tmp_path / "f.pt")
    save_file({"features": values, "labels": torch.tensor(labels)}, str(tmp_path / "f.safetensors"))
    for name in ("f.npy", "f.pt", "f.safetensors"):
        read, read_labels = read_feature_file(tmp_path / name)
        assert torch.equal(read, values), name
        assert read_labels is None if name == "f.npy" else np.array_equal(read_labels, labels)
    np.save(tmp_path / "bad.npy", np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(DiffclustError, match="NaN"):
        read_feature_file(tmp_path / "bad.npy")
    np.save(tmp_path / "flat.npy", np.zeros(5))
    with pytest.raises(DiffclustError, match="matrix"):
        read_feature_file(tmp_path / "flat.npy")


def test_backbone_features_and_a_feature_file_take_the_same_path(usps_subset, tiny_ddpm, tmp_path):
    """Images through the backbone, and the same activations saved to a file, give the same clusters."""
    settings = dict(epochs=2, random_state=3, **FAST)
    reading = dict(backbone=str(tiny_ddpm), layer="mid_block", timestep=100, noise_draws=2, pool_size=2)
    from_images = CLUDI(10, output_dir=tmp_path / "images", **reading, **settings).fit(usps_subset)
    assigned, skipped = read_assignments(tmp_path / "images" / "assignments.csv")
    images = sorted(path.name for path in (usps_subset / "images").iterdir())
    assert sorted(assigned) == images and skipped == 0

    _, features, layer, timestep = DiEC(10, batch_size=64, random_state=3, device="cpu", progress=False, **reading).extract_features(usps_subset)
    assert (layer, timestep) == ("mid_block", 100)
    np.save(tmp_path / "features.npy", features.numpy())
    (tmp_path / "rows.csv").write_text("file,label\n" + "".join(f"{row},{label}\n" for row, label in enumerate(from_images_labels(usps_subset))))
    out = tmp_path / "file"
    assert main(["fit", "--method", "cludi", "--features", str(tmp_path / "features.npy"), "--labels", str(tmp_path / "rows.csv"),
                 "--k", "10", "--out", str(out), "--epochs", "2", "--seed", "3", "--batch-size", "64", "--hidden-dim", "64",
                 "--embedding-dim", "16", "--teacher-steps", "5", "--predict-samples", "2", "--predict-steps", "5",
                 "--lr", "1e-3", "--ema-decay", "0.99", "--device", "cpu", "--quiet"]) == 0
    rows, _ = read_assignments(out / "assignments.csv")
    assert sorted(rows, key=int) == [str(row) for row in range(60)]
    # the same features and seed: the same clusters, row for row
    assert [rows[str(row)] for row in range(60)] == from_images.labels_.tolist()
    assert main(["evaluate", str(out / "assignments.csv"), "--labels", str(tmp_path / "rows.csv")]) == 0
    # predict: images through the saved model read the fitted layer and timestep again
    assert np.array_equal(CLUDI.load(tmp_path / "images").predict(usps_subset), from_images.labels_)
    with pytest.raises(DiffclustError, match="columns"):
        CLUDI.load(out).predict(np.zeros((3, 5)))


def from_images_labels(folder) -> list[int]:
    from diffclust.data import scan_images

    return scan_images(folder).labels.tolist()


def test_cludi_resume_after_a_crash_continues_exactly(tmp_path, monkeypatch):
    features, labels = blobs(n=128, d=8)
    settings = dict(random_state=1, epochs=2, **FAST)
    CLUDI(5, output_dir=tmp_path / "whole", **settings).fit(features, labels)

    original = CLUDITrainer.train_epoch

    def crash_in_second_epoch(self, epoch):
        if epoch == 1:
            raise RuntimeError("power cut")
        return original(self, epoch)

    monkeypatch.setattr(CLUDITrainer, "train_epoch", crash_in_second_epoch)
    with pytest.raises(RuntimeError, match="power cut"):
        CLUDI(5, output_dir=tmp_path / "split", **settings).fit(features, labels)
    monkeypatch.setattr(CLUDITrainer, "train_epoch", original)
    with pytest.raises(DiffclustError, match="already holds a run"):
        CLUDI(5, output_dir=tmp_path / "split", **settings).fit(features, labels)
    CLUDI(5, output_dir=tmp_path / "split", **settings).fit(features, labels, resume=True)
    whole, split = load_tensors(tmp_path / "whole" / "cludi.safetensors"), load_tensors(tmp_path / "split" / "cludi.safetensors")
    assert all(torch.equal(whole[key], split[key]) for key in whole)
    assert read_assignments(tmp_path / "whole" / "assignments.csv") == read_assignments(tmp_path / "split" / "assignments.csv")


def test_cludi_explains_bad_settings_and_inputs(tmp_path):
    features, _ = blobs(n=20, d=4)
    with pytest.raises(DiffclustError, match="ema_decay"):
        CLUDI(3, ema_decay=1.5).fit(features)
    with pytest.raises(DiffclustError, match="backbone"):
        CLUDI(3, **FAST).fit(tmp_path)
    with pytest.raises(DiffclustError, match="only 20 samples"):
        CLUDI(30, **FAST).fit(features)
    assert main(["fit", "--method", "diec", "--features", str(tmp_path / "x.npy"), "--k", "3"]) == 2


def test_a_feature_file_given_as_data_is_read_as_features_by_cludi_only(tmp_path, capsys):
    """`diffclust fit FEATURES.npy --method cludi` fits its rows, as --features does; DiEC and
    DiFiC, which cluster images, name the file and the command that clusters it."""
    features, _ = blobs(n=40, d=4)
    np.save(tmp_path / "rows.npy", features)
    quick = ["--k", "3", "--epochs", "1", "--batch-size", "16", "--hidden-dim", "16", "--embedding-dim", "8", "--teacher-steps", "2",
             "--predict-samples", "1", "--predict-steps", "2", "--init", "kmeans", "--device", "cpu", "--quiet"]
    assert main(["fit", str(tmp_path / "rows.npy"), "--method", "cludi", "--out", str(tmp_path / "run"), *quick]) == 0
    assert sorted(read_assignments(tmp_path / "run" / "assignments.csv")[0], key=int) == [str(row) for row in range(40)]
    for method in ("diec", "difc"):
        assert main(["fit", str(tmp_path / "rows.npy"), "--method", method, "--k", "3"]) == 2
        assert f"--method {method} clusters images" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "rows.npy"), "--method", "cludi", "--features", str(tmp_path / "rows.npy"), "--k", "3"]) == 2
    assert "not both" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- start, neighbours, cost
def _trainer(features, **settings) -> CLUDITrainer:
    torch.manual_seed(0)
    network = CLUDINetwork(features.shape[1], settings.get("n_clusters", 2), embedding_dim=16, hidden=32, depth=1)
    params = CLUDI(settings.pop("n_clusters", 2), **{**FAST, "batch_size": 32, **settings}).get_params()
    return CLUDITrainer(params, torch.tensor(features, dtype=torch.float32), network, make_accelerator("cpu"), None, None)


def test_the_teacher_reads_a_neighbour_of_each_row():
    features, _ = blobs(k=3, n=60, d=4)
    trainer = _trainer(features, n_clusters=3, teacher_neighbours=2)
    seen = []
    sample = trainer.diffusion.sample
    trainer.diffusion.sample = lambda network, rows, *args: seen.append(rows.clone()) or sample(network, rows, *args)
    rows = torch.arange(20)
    trainer._step(rows, torch.Generator().manual_seed(0))
    for row, read in zip(rows.tolist(), seen[0]):
        neighbours = trainer.features[trainer.neighbours[row]]
        assert any(torch.equal(read, neighbour) for neighbour in neighbours) and not torch.equal(read, trainer.features[row])


def test_the_teachers_neighbours_are_euclidean_like_the_starts_graphs():
    """Two rows on one ray from the origin are cosine twins but far apart: the teacher must not
    read one for the other (on features that are not unit vectors cosine neighbours crossed the
    start's clusters, and training undid a 99.8% start on half-moons)."""
    features = np.array([[1.0, 0.0], [1.1, 0.1], [8.0, 0.0], [8.0, 1.0]], dtype=np.float32)
    trainer = _trainer(features, n_clusters=2, teacher_neighbours=1)
    assert trainer.neighbours[:, 0].tolist() == [1, 0, 3, 2]


def test_spectral_start_follows_neighbourhoods_where_kmeans_cuts_across():
    """Two concentric rings: the kNN graph's spectral clustering separates them, k-means cannot."""
    angles = np.random.default_rng(0).uniform(0, 2 * np.pi, 200)
    radius = np.repeat([1.0, 3.0], 100)
    rings = np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)
    labels = np.repeat([0, 1], 100)
    assert hungarian_accuracy(labels, _trainer(rings, init="spectral").start_clusters()) == 1.0
    assert hungarian_accuracy(labels, _trainer(rings, init="kmeans").start_clusters()) < 0.8


def test_median_partition_keeps_the_clustering_the_others_agree_with():
    """A and B agree (NMI 1); C splits every pair of A (NMI 0 to both): A's mean agreement is
    (1 + 0) / 2, as is B's, C's is 0; the first of the tied pair is kept."""
    a = np.array([0, 0, 1, 1, 2, 2])
    candidates = {"A": a, "B": np.array([2, 2, 0, 0, 1, 1]), "C": np.array([0, 1, 0, 1, 0, 1])}
    result = median_partition(candidates)
    assert result.chosen == "A" and np.array_equal(result.labels, a)
    assert result.agreement == pytest.approx({"A": 0.5, "B": 0.5, "C": 0.0}, abs=1e-12)
    with pytest.raises(ValueError):
        median_partition({"A": a})


def test_a_start_whose_candidates_disagree_is_uncertain():
    """A and B agree (NMI 1), C cuts across both (NMI 0): the chosen A agrees at 0.5, under
    UNCERTAIN_AGREEMENT; three candidates that all agree give 1.0, certain."""
    a = np.array([0, 0, 1, 1, 2, 2])
    assert median_partition({"A": a, "B": np.array([2, 2, 0, 0, 1, 1]), "C": np.array([0, 1, 0, 1, 0, 1])}).uncertain
    assert not median_partition({"A": a, "B": np.array([1, 1, 2, 2, 0, 0]), "C": a.copy()}).uncertain


def test_the_consensus_warns_on_overlapping_groups_and_not_on_apart_ones(caplog):
    """Eight Gaussian groups whose centres lie closer than their spread: the candidates' clusters
    change with the graph size and the fit warns; the same groups pulled far apart give one answer."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(8), 50)
    centres, noise = 0.22 * rng.normal(size=(8, 16)), rng.normal(size=(400, 16)) * 3 / 4
    with caplog.at_level(logging.WARNING, logger="diffclust.cluster.consensus"):
        overlapping = consensus_partition(centres[labels] + noise, 8, seed=0)
    assert overlapping.uncertain and "candidate clusterings disagree" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="diffclust.cluster.consensus"):
        apart = consensus_partition(40 * centres[labels] + noise, 8, seed=0)
    assert not apart.uncertain and "disagree" not in caplog.text
    assert hungarian_accuracy(labels, apart.labels) == 1.0


def test_consensus_start_outvotes_kmeans_on_rings(tmp_path):
    """On two rings k-means cuts across and the spectral candidates that separate the rings
    outvote it: the consensus start is a spectral partition, recorded in the run folder, and
    separates the rings."""
    angles = np.random.default_rng(0).uniform(0, 2 * np.pi, 200)
    radius = np.repeat([1.0, 3.0], 100)
    rings = np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)
    trainer = _trainer(rings, init="consensus")
    trainer.run_dir = tmp_path
    assert hungarian_accuracy(np.repeat([0, 1], 100), trainer.start_clusters()) == 1.0
    record = json.loads((tmp_path / START_PARTITION_NAME).read_text())
    assert record == trainer.start_partition and record["chosen"].startswith("spectral")
    assert set(record["mean_nmi_to_others"]) == {"kmeans", *(f"spectral, {count} neighbours" for count in NEIGHBOUR_COUNTS)}
    assert record["mean_nmi_to_others"]["kmeans"] < record["mean_nmi_to_others"][record["chosen"]]
    assert record["uncertain"] is True  # some graph sizes cut the 200 points otherwise (mean NMI 0.50), though the start is right


def test_above_the_exact_row_limit_the_spectral_candidates_share_approximate_neighbours(monkeypatch, caplog):
    """Above MAX_SPECTRAL_ROWS the consensus keeps its spectral candidates (no fall-back to
    k-means): one approximate neighbour search and a sparse eigen-solver; on two rings they
    still separate what k-means cuts across."""
    angles = np.random.default_rng(0).uniform(0, 2 * np.pi, 400)
    rings = np.stack([np.repeat([1.0, 3.0], 200) * np.cos(angles), np.repeat([1.0, 3.0], 200) * np.sin(angles)], axis=1)
    monkeypatch.setattr("diffclust.cluster.consensus.MAX_SPECTRAL_ROWS", 100)
    with caplog.at_level(logging.INFO, logger="diffclust"):
        result = consensus_partition(rings, 2, seed=0, neighbour_counts=(5, 10, 15))
    assert "approximate neighbours and a sparse eigen-solver" in caplog.text
    assert set(result.agreement) == {"kmeans", "spectral, 5 neighbours", "spectral, 10 neighbours", "spectral, 15 neighbours"}
    assert result.chosen.startswith("spectral") and hungarian_accuracy(np.repeat([0, 1], 200), result.labels) == 1.0
    assert hungarian_accuracy(np.repeat([0, 1], 200), fit_kmeans(rings, 2, seed=0)[1]) < 0.8


def test_approximate_neighbours_leave_each_row_out_and_find_its_true_neighbours(monkeypatch):
    from diffclust.cluster import neighbours
    from diffclust.cluster.neighbours import approximate_neighbours, nearest_neighbours

    points = np.random.default_rng(1).normal(size=(300, 5))
    table = approximate_neighbours(points, 6, seed=0)
    assert table.shape == (300, 6) and not (table == np.arange(300)[:, None]).any()
    exact = np.argsort(((points[:, None] - points[None]) ** 2).sum(-1), axis=1)[:, 1:7]
    overlap = np.mean([len(set(a) & set(b)) / 6 for a, b in zip(table, exact)])
    assert overlap > 0.95
    duplicated = np.concatenate([points[:50], points[:50]])  # a row's twin at distance 0 may come first
    table = approximate_neighbours(duplicated, 3, seed=0)
    assert not (table == np.arange(100)[:, None]).any()
    # the cosine search of the neighbour losses turns approximate above its CPU row limit
    exact = nearest_neighbours(points, 6)
    monkeypatch.setattr(neighbours, "EXACT_CPU_MAX_ROWS", 100)
    approximate = nearest_neighbours(points, 6)
    assert np.mean([len(set(a) & set(b)) / 6 for a, b in zip(approximate, exact)]) > 0.95


def test_estimated_time_counts_every_denoiser_pass(monkeypatch):
    """With a clock that ticks 1 s per call, the timed passes cost 1 s / (3 x 32 rows) per row pass."""
    features, _ = blobs(n=64, d=4)
    trainer = _trainer(features, epochs=3, teacher_steps=4, monitor_samples=2, init_steps=5, self_conditioning=0.5)
    ticks = iter(range(100))
    monkeypatch.setattr("diffclust.methods.cludi.training.time.perf_counter", lambda: float(next(ticks)))
    per_row = 1 / (3 * 32)
    student = 3 + 0.5
    expected = per_row * (64 * (3 * (4 + student + 2 * 4) + 6 * 7) + 5 * 32 * student)
    assert trainer.estimated_seconds(predict_samples=6, predict_steps=7) == pytest.approx(expected)


def test_paper_settings_switch_takes_the_published_values_under_explicit_options(tmp_path):
    from diffclust.cli import build_model, build_parser
    from diffclust.methods.cludi.estimator import PAPER_SETTINGS

    args = build_parser().parse_args(["fit", "--method", "cludi", "--features", "f.npy", "--k", "3", "--paper-settings",
                                      "--epochs", "7"])
    model = build_model(args, tmp_path)
    assert model.epochs == 7 and model.teacher_steps == PAPER_SETTINGS["teacher_steps"] == 25
    assert (model.init, model.predict_samples, model.lr) == ("random", 64, 1e-4)
    plain = build_model(build_parser().parse_args(["fit", "--method", "cludi", "--features", "f.npy", "--k", "3"]), tmp_path)
    assert plain.get_params() == CLUDI(3, output_dir=tmp_path).get_params()  # no option given: the estimator's defaults


def test_identical_rows_share_one_cluster_in_fit_and_in_predict():
    features, labels = blobs(n=200, d=4, spread=1.5)  # overlapping groups: the teacher's samples disagree on many rows
    copies = np.repeat(np.arange(0, 200, 5), 6)  # 40 rows, each appearing six more times
    doubled = np.concatenate([features, features[copies]])
    model = CLUDI(5, epochs=1, random_state=0, self_labelling=False, **FAST).fit(doubled)
    for fitted in (model.labels_, model.predict(doubled)):
        assert np.array_equal(fitted[200:], fitted[copies])
    assert len(np.unique(model.labels_)) == 5


def test_a_fit_from_python_shows_diffclusts_info_lines_unless_logging_is_configured_or_progress_is_off(monkeypatch, capsys):
    import logging

    features, _ = blobs(k=3, n=90, d=4)
    for name in ("", "diffclust"):  # a plain script: nobody configured logging (the CLI's tests in this process did)
        monkeypatch.setattr(logging.getLogger(name), "handlers", [])
    monkeypatch.setattr(logging.getLogger("diffclust"), "level", logging.NOTSET)
    CLUDI(3, epochs=1, random_state=0, **{**FAST, "progress": True}).fit(features)
    err = capsys.readouterr().err
    assert "INFO diffclust.methods.cludi.estimator: CLUDI on 90 x 4 features, K = 3" in err
    assert logging.getLogger("diffclust").handlers == [] and logging.getLogger("diffclust").level == logging.NOTSET  # all undone
    CLUDI(3, epochs=1, random_state=0, **FAST).fit(features)  # progress=False: quiet
    assert "INFO" not in capsys.readouterr().err
