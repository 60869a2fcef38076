"""The distillation machinery learns proxy words that separate known groups."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from diffclust import DiFiC, hungarian_accuracy
from diffclust.data import scan_images
from diffclust.engine.checkpoint import load_training_state
from diffclust.methods.difc import training

from gaussian_backbone import GaussianMixtureBackbone

GROUPS = 4
PER_GROUP = 30


@pytest.fixture(scope="module")
def mixture_folder(tmp_path_factory):
    """18x18 images whose 6x6 latents are W (c_group + small noise) + N n: the closed-form model's
    own data plus strong nuisance n, so that k-means on raw features confuses the groups."""
    folder = tmp_path_factory.mktemp("mixture")
    rng = np.random.default_rng(0)
    backbone = GaussianMixtureBackbone()
    mixing, nuisance = backbone.mixing.numpy(), backbone.nuisance.numpy()
    rows = ["file,label"]
    for group in range(GROUPS):
        centre = rng.normal(0, 0.4, size=32)
        for index in range(PER_GROUP):
            latent = mixing @ (centre + rng.normal(0, 0.05, size=32)) + nuisance @ rng.normal(0, 0.3, size=nuisance.shape[1])
            pixels = np.kron(latent.reshape(3, 6, 6).transpose(1, 2, 0), np.ones((3, 3, 1)))  # 3x3 average pooling inverts this
            name = f"g{group}_{index:02d}.png"
            Image.fromarray(np.clip((pixels + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)).save(folder / name)
            rows.append(f"{name},{group}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def _fit(folder, tmp_path, n_clusters=GROUPS, resume=False, **settings):
    model = DiFiC(n_clusters, backbone=GaussianMixtureBackbone(), feature_layer="latent", device="cpu", batch_size=16,
                  lr=1e-3, n_neighbours=5, memory_bank_size=64, object_concentration=False, progress=False,
                  cache_dir=tmp_path / "cache", random_state=0, **settings)
    return model.fit(folder, resume=resume)


def test_difc_recovers_the_mixture_components(mixture_folder, tmp_path):
    model = _fit(mixture_folder, tmp_path, epochs=30, warmup_epochs=15, cluster_gradient_ratio=1.0)  # the capped path (default 0: none)
    labels = scan_images(mixture_folder).labels
    history = model.history_
    assert history[0]["acc"] < 0.9  # the nuisance confuses k-means on untrained proxy words...
    assert history[-1]["diffusion_loss"] < 0.85 * history[0]["diffusion_loss"]  # ...distillation learns (the nuisance part stays)...
    assert history[-1]["phase"] == "guided" and model.kmeans_centres_ is None  # ...and the head decides
    # guided epochs log the mean scale on the cluster gradient reaching f (capped at the diffusion gradient's norm)
    assert all(0 < record["cluster_gradient_scale"] <= 1 for record in history if record["phase"] == "guided")
    assert all("cluster_gradient_scale" not in record for record in history if record["phase"] == "warm-up")
    assert hungarian_accuracy(labels, model.labels_) >= 0.95
    assert model.proxy_words_.shape == (GROUPS * PER_GROUP, 32)


def test_int8_cached_z_keeps_the_accuracy(mixture_folder, tmp_path):
    """z stored as int8 codes with per-image, per-channel scales: the same recovery as fp16."""
    model = _fit(mixture_folder, tmp_path, epochs=30, warmup_epochs=15, cache_precision="int8")
    assert hungarian_accuracy(scan_images(mixture_folder).labels, model.labels_) >= 0.95
    (cache,) = [path.parent for path in (tmp_path / "cache").rglob("features.npy")]
    assert np.load(cache / "features.npy").dtype == np.int8 and np.load(cache / "feature_scales.npy").shape == (GROUPS * PER_GROUP, 3)


def test_distillation_alone_recovers_the_components_with_kmeans(mixture_folder, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="diffclust"):
        model = _fit(mixture_folder, tmp_path, epochs=15, warmup_epochs=15, cluster_guidance=False)
    estimates = [record.message for record in caplog.records if "epochs left will take about" in record.message]
    assert len(estimates) == 1 and estimates[0].startswith("Epoch 1 took ") and "the 14 epochs left" in estimates[0]
    labels = scan_images(mixture_folder).labels
    assert model.kmeans_centres_ is not None and model.network_.head is None
    assert {record["phase"] for record in model.history_} == {"distillation"}  # no head, so no warm-up before one
    assert model.history_[0]["acc"] < 0.9
    assert hungarian_accuracy(labels, model.labels_) >= 0.95


AUTO = dict(n_clusters="auto", k_range=(2, 8), epochs=30, warmup_epochs=15)


@pytest.fixture(scope="module")
def auto_run(mixture_folder, tmp_path_factory):
    """An uninterrupted n_clusters="auto" run and its folder."""
    folder = tmp_path_factory.mktemp("auto")
    return _fit(mixture_folder, folder, output_dir=folder / "run", **AUTO), folder / "run"


def test_auto_k_is_chosen_on_z_before_training(auto_run, mixture_folder):
    from diffclust.cluster.k_selection import choose_k
    from diffclust.methods.difc.constants import ConstantStore
    from diffclust.methods.difc.hand_over import feature_rows

    model, run = auto_run
    assert model.n_clusters_ == GROUPS and model.k_selection_.k == GROUPS and model.k_selection_.criterion == "umap_hdbscan"
    assert model.k_selection_.candidates == list(range(2, 9))
    # the scan is of every image's cached z, the rows the head's start partition is drawn from
    (arrays,) = {path.parent for path in (run.parent / "cache").rglob("features.npy")}
    store = ConstantStore({path.stem: np.load(path, mmap_mode="r", allow_pickle=False) for path in arrays.glob("*.npy")})
    on_z = choose_k(feature_rows(store, 0), (2, 8), "umap_hdbscan", 0)
    assert model.k_selection_.scores == on_z.scores
    assert model.network_.head.layers[-1].out_features == GROUPS
    # K is known from the first epoch on: warm-up epochs cluster with it, as with a given K
    assert all(record["clusters_used"] <= GROUPS and "acc" in record for record in model.history_)
    assert model.history_[14]["phase"] == "warm-up" and model.history_[-1]["phase"] == "guided" and model.kmeans_centres_ is None
    assert hungarian_accuracy(scan_images(mixture_folder).labels, model.labels_) >= 0.95
    table = (run / "k_selection.csv").read_text().splitlines()
    assert table[0].startswith("k,umap_hdbscan,silhouette") and len(table) == 1 + 7
    assert DiFiC.load(run).n_clusters_ == GROUPS


def _interrupted_auto_run(mixture_folder, tmp_path, monkeypatch, crash_after: int, resume: bool = False):
    """An n_clusters="auto" run (or its resume) stopped by a simulated crash after epoch `crash_after`'s checkpoint."""
    original = training.DiFiCTrainer.save_checkpoint

    def crash(self, epochs_done):
        original(self, epochs_done)
        if epochs_done == crash_after:
            raise KeyboardInterrupt("simulated crash")

    with monkeypatch.context() as patch:
        patch.setattr(training.DiFiCTrainer, "save_checkpoint", crash)
        with pytest.raises(KeyboardInterrupt):
            _fit(mixture_folder, tmp_path, output_dir=tmp_path / "run", resume=resume, **AUTO)
    return tmp_path / "run" / "checkpoint.pt"


def test_auto_k_run_resumes_to_the_same_result(auto_run, mixture_folder, tmp_path, monkeypatch, caplog):
    """Crashed in warm-up, at the hand-over and during guidance, one resume after another: each
    resume takes K from the checkpoint, and the last ends where the uninterrupted run ended."""
    for number, crash_after in enumerate((8, 15, 20)):  # in warm-up, at the hand-over, during guidance
        checkpoint = _interrupted_auto_run(mixture_folder, tmp_path, monkeypatch, crash_after, resume=number > 0)
        state = load_training_state(checkpoint)
        assert state["n_clusters"] == GROUPS and state["epochs_done"] == crash_after  # K is kept from the first checkpoint on
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="diffclust"):
        resumed = _fit(mixture_folder, tmp_path, output_dir=tmp_path / "run", resume=True, **AUTO)
    assert resumed.n_clusters_ == GROUPS and caplog.text.count(f"K = {GROUPS}, as the interrupted run chose it") == 1
    assert [record["epoch"] for record in resumed.history_] == list(range(1, 31))
    np.testing.assert_array_equal(resumed.labels_, auto_run[0].labels_)
    np.testing.assert_allclose(resumed.proxy_words_, auto_run[0].proxy_words_, rtol=1e-4, atol=1e-5)
    # the hand-over partition travels in the checkpoint, so a resume past it still checks against it
    assert auto_run[0].start_agreement_ is not None
    assert (resumed.start_agreement_, resumed.kept_partition_) == (auto_run[0].start_agreement_, auto_run[0].kept_partition_)


def test_a_warm_up_checkpoint_without_a_head_is_refused_with_the_reason(mixture_folder, tmp_path, monkeypatch):
    """Earlier versions chose K after warm-up and saved warm-up checkpoints of an "auto" run
    without the head; such a run cannot continue, and the error says what to do."""
    from diffclust.engine.checkpoint import atomic_torch_save
    from diffclust.errors import DiffclustError

    path = _interrupted_auto_run(mixture_folder, tmp_path, monkeypatch, 2)
    state = load_training_state(path)
    state["network"] = {name: value for name, value in state["network"].items() if not name.startswith("head.")}
    del state["n_clusters"]  # as an earlier version wrote it before K was chosen
    atomic_torch_save(path, state)
    with pytest.raises(DiffclustError, match=r"warm-up of a `--k auto` run of an earlier diffclust.*without --resume"):
        _fit(mixture_folder, tmp_path, output_dir=tmp_path / "run", resume=True, **AUTO)


def test_the_size_prior_keeps_an_imbalanced_partition_where_equal_sizes_break_it(mixture_folder, tmp_path):
    """One group of 30 and three of 8. The hand-over finds all four; with the cluster loss
    reaching f (ratio 1), the paper's entropy (equal sizes) then moves points of the large
    group into a small one, while the size prior (the hand-over's shares, saved with the
    checkpoint) keeps the partition."""
    folder = tmp_path / "imbalanced"
    folder.mkdir()
    rows = ["file,label"]
    for path in sorted(mixture_folder.glob("*.png")):
        group, index = int(path.name[1]), int(path.stem.split("_")[1])
        if group == 0 or index < 8:
            (folder / path.name).write_bytes(path.read_bytes())
            rows.append(f"{path.name},{group}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    labels = scan_images(folder).labels
    runs = {prior: _fit(folder, tmp_path / prior, epochs=60, warmup_epochs=40, size_prior=prior, output_dir=tmp_path / prior / "run",
                        cluster_gradient_ratio=1.0)
            for prior in ("start", "uniform")}
    for model in runs.values():
        assert model.history_[39]["acc"] == 1.0  # the end of warm-up: every group found
    assert hungarian_accuracy(labels, runs["start"].labels_) == 1.0
    assert sorted(np.bincount(runs["start"].labels_, minlength=GROUPS).tolist()) == [8, 8, 8, 30]
    assert hungarian_accuracy(labels, runs["uniform"].labels_) < 0.95  # measured: 0.89, the large group split
    shares = load_training_state(tmp_path / "start" / "run" / "checkpoint.pt")["size_shares"]
    assert sorted(round(value, 4) for value in shares.tolist()) == [round(9 / 58, 4)] * 3 + [round(31 / 58, 4)]
    assert "size_shares" not in load_training_state(tmp_path / "uniform" / "run" / "checkpoint.pt")


@pytest.mark.parametrize("head_init, neighbour_space", [("manifold", "features"), ("kmeans", "proxies")])
def test_the_head_starts_and_finds_neighbours_where_the_settings_say(mixture_folder, tmp_path, monkeypatch, head_init, neighbour_space):
    """manifold / features (the defaults): one UMAP partition of z at the hand-over and one
    neighbour search in z for all guided epochs (z never changes); kmeans / proxies: k-means
    and a neighbour search on the proxy words S*, the search again each guided epoch."""
    calls = []
    for name in ("manifold_start", "fit_kmeans", "nearest_neighbours"):
        real = getattr(training, name)
        monkeypatch.setattr(training, name,
                            lambda data, *args, _name=name, _real=real, **kw: calls.append((_name, tuple(data.shape))) or _real(data, *args, **kw))
    passes = []  # passes of f over every image: one per epoch for its assignment, and one per guided epoch that needs S*
    real_passes = training.DiFiCTrainer.all_proxies
    monkeypatch.setattr(training.DiFiCTrainer, "all_proxies", lambda self, *a, **kw: passes.append(1) or real_passes(self, *a, **kw))
    model = _fit(mixture_folder, tmp_path, epochs=6, warmup_epochs=3, head_init=head_init, neighbour_space=neighbour_space)
    assert len(passes) == 6 + (1 if neighbour_space == "features" else 3)  # in z, only the first guided epoch (head, bank) reads S*
    rows, z_width, word = GROUPS * PER_GROUP, 3 * 6 * 6, 32
    warm_up = [("fit_kmeans", (rows, word))] * 3  # the warm-up's per-epoch k-means on S*
    if head_init == "manifold":
        assert calls == warm_up + [("manifold_start", (rows, z_width)), ("nearest_neighbours", (rows, z_width))]
    else:
        assert calls == warm_up + [("fit_kmeans", (rows, word))] + [("nearest_neighbours", (rows, word))] * 3
    assert hungarian_accuracy(scan_images(mixture_folder).labels, model.labels_) >= 0.95
    assert 0.9 <= model.start_agreement_ <= 1  # the groups are found from the start and kept


@pytest.mark.parametrize("margin", [0.1, 1.0])
def test_a_head_that_leaves_its_start_gives_way_to_it_unless_the_margin_is_one(mixture_folder, tmp_path, monkeypatch, caplog, margin):
    """Training made to scramble the head after the hand-over: with the default margin the fit
    keeps the start (UMAP + k-means of z, the groups), says so in the log, the metrics log,
    run.json and difc.json, and predict warns; with margin 1 the scrambled head's clusters stay."""
    import json

    import torch

    original = training.DiFiCTrainer.train_epoch

    def scramble(self, model, optimizer, epoch):
        result = original(self, model, optimizer, epoch)
        if self.guided(epoch):
            torch.manual_seed(epoch)
            for parameter in self.accelerator.unwrap_model(self.network).head.parameters():
                parameter.data.normal_(0, 3)
        return result

    monkeypatch.setattr(training.DiFiCTrainer, "train_epoch", scramble)
    with caplog.at_level(logging.INFO, logger="diffclust"):
        model = _fit(mixture_folder, tmp_path, epochs=5, warmup_epochs=3, start_margin=margin, output_dir=tmp_path / "run")
    truth = scan_images(mixture_folder).labels
    assert model.start_agreement_ < 0.9  # the scrambled head moved many images
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["start_agreement"] == pytest.approx(model.start_agreement_, abs=1e-4)
    if margin == 1.0:
        assert model.kept_partition_ == "trained" and hungarian_accuracy(truth, model.labels_) < 0.9
        assert all("kept the" not in str(row.get("phase")) for row in model.history_)
        return
    assert model.kept_partition_ == "start" and run["kept_partition"] == "start"
    assert hungarian_accuracy(truth, model.labels_) == 1.0  # the start found every group
    assert any("Kept the start partition" in record.message for record in caplog.records)
    last = model.history_[-1]
    assert last["phase"] == "kept the start partition" and last["knn_modularity_start"] > last["knn_modularity_trained"]
    assert ((model.confidence_ >= 0) & (model.confidence_ <= 1)).all()
    assert json.loads((tmp_path / "run" / "difc.json").read_text())["state"]["kept_partition"] == "start"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="diffclust"):
        DiFiC.load(tmp_path / "run", backbone=GaussianMixtureBackbone()).predict(mixture_folder)
    assert any("kept its start partition" in record.message for record in caplog.records)
    assigned = dict(line.split(",")[:2] for line in (tmp_path / "run" / "assignments.csv").read_text().splitlines()[1:])
    assert [int(assigned[name]) for name in model.files_] == model.labels_.tolist()  # the kept partition is what the run wrote

