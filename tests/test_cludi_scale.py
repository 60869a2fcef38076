"""CLUDI at scale: a fixed step budget per epoch, a bounded prediction, the label-free check of the
final clusters against the start, an honest ETA, and an interrupted fit that keeps its start."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from test_cludi import FAST, blobs

from diffclust.cli import main
from diffclust.cluster.metrics import hungarian_accuracy
from diffclust.cluster.start_choice import choose_against_start, knn_modularity, neighbour_share
from diffclust.engine.checkpoint import checkpoint_path, load_training_state
from diffclust.engine.runtime import make_accelerator
from diffclust.methods.cludi import CLUDI
from diffclust.methods.cludi import training as cludi_training
from diffclust.methods.cludi.estimator import prediction_samples
from diffclust.methods.cludi.network import CLUDINetwork
from diffclust.methods.cludi.training import CLUDITrainer
from diffclust.outputs import read_assignments


# ---------------------------------------------------------------------------------- the label-free check
def test_knn_modularity_by_hand():
    pairs = np.array([[1], [0], [3], [2]])  # each row's one neighbour is its pair
    # the pairs as clusters: every link inside, expected share 0.5 * 0.5 + 0.5 * 0.5
    assert knn_modularity(pairs, np.array([0, 0, 1, 1])) == pytest.approx(0.5)
    assert knn_modularity(pairs, np.array([0, 1, 0, 1])) == pytest.approx(-0.5)  # every link crosses
    assert knn_modularity(pairs, np.array([0, 0, 0, 0])) == pytest.approx(0.0)  # one cluster: nothing beyond its size
    # two neighbours each: 0->1, 1->0, 1->3, 3->1 inside; 0->2, 2->0, 2->1, 3->2 cross. Out-shares
    # (6/8, 2/8): three rows of cluster 0; in-shares (6/8, 2/8): six links end in cluster 0
    neighbours = np.array([[1, 2], [0, 3], [0, 1], [2, 1]])
    labels = np.array([0, 0, 1, 0])
    assert knn_modularity(neighbours, labels) == pytest.approx(4 / 8 - (6 / 8 * 6 / 8 + 2 / 8 * 2 / 8))  # -0.125
    assert neighbour_share(neighbours, labels).tolist() == [0.5, 1.0, 0.0, 0.5]


def test_the_start_is_kept_only_when_training_moved_far_and_the_start_follows_the_graph_better():
    neighbours = np.array([[1], [0], [3], [2], [5], [4]])
    start = np.array([0, 0, 1, 1, 2, 2])
    crossing = np.array([0, 1, 1, 2, 2, 0])  # matched one to one, agrees with the start on 3 of 6 rows; cuts every pair
    unchecked = choose_against_start(neighbours, start, crossing, margin=0.6)  # within the margin: not compared
    assert unchecked.kept == "trained" and unchecked.modularity is None
    choice = choose_against_start(neighbours, start, crossing, margin=0.1)
    assert choice.kept == "start" and choice.agreement == pytest.approx(3 / 6)
    assert choice.record()["knn_modularity_start"] > choice.record()["knn_modularity_trained"]
    assert choose_against_start(neighbours, crossing, start, margin=0.1).kept == "trained"  # the better one wins either way round


def test_a_fit_whose_training_destroys_its_start_keeps_the_start_and_says_so(tmp_path, monkeypatch, caplog):
    features, labels = blobs(k=4, n=200, d=8, spread=4.0)
    original = CLUDITrainer.train_epoch

    def destroy(self, epoch):  # training that throws the copied start away
        result = original(self, epoch)
        torch.manual_seed(epoch)
        for module in (self.teacher.model, self.network):
            for parameter in module.parameters():
                parameter.data.normal_()
        return result

    monkeypatch.setattr(CLUDITrainer, "train_epoch", destroy)
    with caplog.at_level(logging.WARNING):
        model = CLUDI(4, epochs=1, init="kmeans", output_dir=tmp_path / "run", **FAST).fit(features, labels)
    assert model.kept_partition_ == "start" and model.start_agreement_ < 0.9
    assert hungarian_accuracy(labels, model.labels_) == pytest.approx(model.history_[0]["acc"])  # the start's clusters
    assert ((model.confidence_ >= 0) & (model.confidence_ <= 1)).all()
    assert any("Kept the start partition" in record.message for record in caplog.records)
    last = model.history_[-1]
    assert last["phase"] == "kept the start partition" and last["acc"] == model.history_[0]["acc"]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["kept_partition"] == "start" and run["start_agreement"] == pytest.approx(model.start_agreement_, abs=1e-4)
    assigned, skipped = read_assignments(tmp_path / "run" / "assignments.csv")
    assert skipped == 0 and [assigned[name] for name in model.files_] == model.labels_.tolist()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        CLUDI.load(tmp_path / "run").predict(features[:10])
    assert any("kept its start partition" in record.message for record in caplog.records)


def test_a_margin_of_one_always_keeps_the_trained_partition(monkeypatch):
    features, labels = blobs(k=4, n=200, d=8, spread=4.0)
    monkeypatch.setattr(CLUDITrainer, "train_epoch", lambda self, epoch: {})  # an untrained copy: whatever it gives stays
    model = CLUDI(4, epochs=1, init="kmeans", start_margin=1.0, init_steps=1, max_init_steps=1, **FAST).fit(features)
    assert model.kept_partition_ == "trained" and all("kept the" not in str(row.get("phase")) for row in model.history_)


# ---------------------------------------------------------------------------------- fixed budgets
def _trainer(rows: int, **settings) -> CLUDITrainer:
    features = torch.randn(rows, 4)
    params = CLUDI(3, **{**FAST, "batch_size": 32, **settings}).get_params()
    return CLUDITrainer(params, features, CLUDINetwork(4, 3, embedding_dim=8, hidden=16, depth=1), make_accelerator("cpu"), None, None)


def test_an_epoch_is_a_fixed_number_of_steps_on_many_rows_and_a_whole_pass_on_few(monkeypatch):
    assert _trainer(2000, epoch_steps=5).steps_per_epoch == 5
    assert _trainer(2000, epoch_steps=0).steps_per_epoch == 63  # ceil(2000 / 32): every row once, as published
    assert _trainer(100, epoch_steps=5).steps_per_epoch == 4  # fewer rows than the budget: one whole pass
    trainer = _trainer(2000, epoch_steps=5)
    seen = []
    monkeypatch.setattr(CLUDITrainer, "optimise", lambda self, loss, parameters: None)
    original_step = CLUDITrainer._step

    def counting(self, rows, generator, given_logits=None):
        seen.append(rows.clone())
        return original_step(self, rows, generator, given_logits)

    monkeypatch.setattr(CLUDITrainer, "_step", counting)
    trainer.train_epoch(0)
    first = torch.cat(seen)
    seen.clear()
    trainer.train_epoch(1)
    assert len(first) == 5 * 32 and len(torch.cat(seen)) == 5 * 32
    assert len(set(first.tolist())) == 160 and set(first.tolist()) != set(torch.cat(seen).tolist())  # a fresh sample each epoch


def test_prediction_samples_auto_bounds_rows_times_samples():
    assert prediction_samples("auto", 500) == 16
    assert prediction_samples("auto", 10_000) == 16
    assert prediction_samples("auto", 40_000) == 4  # 160,000 row samples
    assert prediction_samples("auto", 1_000_000) == 2  # never fewer than two
    assert prediction_samples(8, 1_000_000) == 8  # a number given is kept
    with pytest.raises(Exception, match="predict_samples"):
        CLUDI(3, predict_samples="many").fit(np.zeros((10, 2)))


def test_each_epoch_logs_a_sample_of_rows_on_many_rows(monkeypatch):
    monkeypatch.setattr(cludi_training, "MONITOR_ROWS", 50)
    features, labels = blobs(k=4, n=200, d=8, spread=4.0)
    model = CLUDI(4, epochs=1, init="kmeans", init_steps=5, max_init_steps=5, **FAST).fit(features, labels)
    epoch = next(row for row in model.history_ if row["epoch"] == 1)
    assert epoch["monitored_rows"] == 50 and 0 <= epoch["acc"] <= 1
    assert len(model.labels_) == 200


def test_the_eta_after_epoch_one_includes_the_final_assignment(caplog, monkeypatch):
    monkeypatch.setattr(CLUDITrainer, "prediction_seconds", lambda self, rows, samples, steps: 600.0)
    features, _ = blobs(k=4, n=200, d=8)
    with caplog.at_level(logging.INFO, logger="diffclust"):
        CLUDI(4, epochs=2, init="kmeans", init_steps=5, max_init_steps=5, **FAST).fit(features)
    lines = [record.message for record in caplog.records if record.message.startswith("Epoch 1 took")]
    assert len(lines) == 1 and "the 1 epochs left and the final assignment will take about 10 min" in lines[0]


# ---------------------------------------------------------------------------------- interruption
def test_an_interrupted_fit_keeps_its_start_and_resumes_or_finishes_without_recomputing_it(tmp_path, monkeypatch, caplog):
    features, labels = blobs(k=4, n=200, d=8, spread=4.0)
    settings = dict(epochs=3, init="kmeans", init_steps=20, output_dir=tmp_path / "run", **FAST)
    original = CLUDITrainer.train_epoch

    def interrupt_in_second_epoch(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(CLUDITrainer, "train_epoch", interrupt_in_second_epoch)
    with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
        CLUDI(4, **settings).fit(features, labels)
    assert any("--resume --epochs 1 it finishes now" in record.message for record in caplog.records)
    monkeypatch.setattr(CLUDITrainer, "train_epoch", original)

    def no_second_start(self):
        raise AssertionError("the start was computed again")

    monkeypatch.setattr(CLUDITrainer, "start_clusters", no_second_start)
    finished = CLUDI(4, **{**settings, "epochs": 1}).fit(features, labels, resume=True)  # finish now, from epoch 1
    assert [row["epoch"] for row in finished.history_][:2] == [0, 1] and len(finished.labels_) == 200
    assert finished.start_agreement_ is not None  # the start came back from the checkpoint


def test_an_interruption_during_epoch_one_keeps_the_start_for_resume(tmp_path, monkeypatch):
    features, labels = blobs(k=4, n=200, d=8, spread=4.0)
    settings = dict(epochs=2, init="kmeans", init_steps=20, output_dir=tmp_path / "run", **FAST)

    def interrupt(self, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(CLUDITrainer, "train_epoch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        CLUDI(4, **settings).fit(features, labels)
    monkeypatch.undo()
    state = load_training_state(checkpoint_path(tmp_path / "run"))
    assert int(state["epochs_done"]) == 0 and len(state["start_labels"]) == 200
    monkeypatch.setattr(CLUDITrainer, "start_clusters", lambda self: (_ for _ in ()).throw(AssertionError("start again")))
    model = CLUDI(4, **settings).fit(features, labels, resume=True)
    assert [row["epoch"] for row in model.history_][:3] == [0, 1, 2]


# ---------------------------------------------------------------------------------- command line
def test_the_command_line_takes_the_new_settings_and_refuses_bad_ones(tmp_path, capsys):
    features, _ = blobs(k=3, n=90, d=4)
    np.save(tmp_path / "x.npy", features.astype(np.float32))
    quick = ["--epochs", "1", "--batch-size", "32", "--hidden-dim", "16", "--embedding-dim", "8", "--teacher-steps", "2",
             "--predict-steps", "2", "--device", "cpu", "--quiet", "--init", "kmeans"]
    assert main(["fit", "--method", "cludi", "--features", str(tmp_path / "x.npy"), "--k", "3", "--out", str(tmp_path / "run"),
                 "--predict-samples", "auto", "--epoch-steps", "0", "--start-margin", "0.2", *quick]) == 0
    saved = json.loads((tmp_path / "run" / "cludi.json").read_text())["settings"]
    assert (saved["predict_samples"], saved["epoch_steps"], saved["start_margin"]) == ("auto", 0, 0.2)
    for option, value in (("--start-margin", "2"), ("--epoch-steps", "-1"), ("--predict-samples", "0")):
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--method", "cludi", "--features", str(tmp_path / "x.npy"), "--k", "3", option, value])
        assert exit_info.value.code == 2
        assert option in capsys.readouterr().err
