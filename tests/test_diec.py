"""DiEC: one-pass features, the clusterability search, DEC numerics, and runs end to end."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from diffclust.backbones import load_backbone
from diffclust.cli import main
from diffclust.cluster.dec import dec_kl_loss, partition_target, target_distribution
from diffclust.cluster.losses import neighbour_consistency_loss
from diffclust.engine.checkpoint import load_tensors
from diffclust.errors import DiffclustError
from diffclust.methods.diec import DiEC
from diffclust.methods.diec.features import LayerFeatureReader, candidate_layers, image_noise
from diffclust.methods.diec.network import DiECNetwork
from diffclust.methods.diec.search import ClusterabilitySearch, bracketed_search_max, clusterability, even_timesteps, fibonacci_search_max
from diffclust.methods.diec.training import DiECTrainer
from diffclust.methods.registry import load_model
from diffclust.outputs import read_assignments


# ---------------------------------------------------------------------------------- features
def test_blocks_are_listed_in_run_order(tiny_ddpm):
    layers = candidate_layers(load_backbone(tiny_ddpm))
    assert layers == ["down_blocks.0", "down_blocks.1", "mid_block", "up_blocks.0", "up_blocks.1"]


def test_one_pass_reads_every_layer_exactly_as_separate_passes(tiny_ddpm):
    backbone = load_backbone(tiny_ddpm)
    latents = torch.rand(5, 1, 16, 16) * 2 - 1
    layers = candidate_layers(backbone)
    calls = []
    handle = backbone.unet.register_forward_pre_hook(lambda *args: calls.append(1))
    together = LayerFeatureReader(backbone, layers, draws=3, pool_size=2, seed=1)(latents, 250)
    handle.remove()
    assert len(calls) == 3  # one UNet pass per noise draw, all layers at once
    for layer in layers:
        alone = LayerFeatureReader(backbone, [layer], draws=3, pool_size=2, seed=1)(latents, 250)[layer]
        assert torch.equal(together[layer], alone)
    # channels x 2 x 2 after pooling: mid_block has 16 channels
    assert together["mid_block"].shape == (5, 16 * 4)


def test_features_do_not_depend_on_the_batch_and_noise_differs_between_images(tiny_ddpm):
    backbone = load_backbone(tiny_ddpm)
    latents = torch.rand(6, 1, 16, 16) * 2 - 1
    reader = LayerFeatureReader(backbone, ["mid_block"], draws=2, pool_size=1, seed=0)
    whole = reader(latents, 400)["mid_block"]
    parts = torch.cat([reader(latents[:2], 400)["mid_block"], reader(latents[2:], 400)["mid_block"]])
    assert torch.allclose(whole, parts, atol=1e-5)
    noise = image_noise(latents, draw=0, seed=0)
    assert not torch.allclose(noise[0], noise[1])
    assert torch.equal(noise[3], image_noise(latents[3:4], draw=0, seed=0)[0])
    assert not torch.equal(noise, image_noise(latents, draw=1, seed=0))


# ---------------------------------------------------------------------------------- search
def test_fibonacci_search_finds_a_unimodal_maximum_in_log_evaluations():
    calls = []

    def bump(t: int) -> float:
        calls.append(t)
        return -((t - 337) ** 2)

    best, values = fibonacci_search_max(bump, 0, 999)
    assert best == 337
    # F(17) = 1597 >= 1001 points: 17 - 3 = 14 comparisons, the first needs 2 values, the rest 1 each
    assert len(calls) == len(set(calls)) == len(values) == 15
    assert fibonacci_search_max(lambda t: -t, 0, 999)[0] == 0
    assert fibonacci_search_max(lambda t: t, 0, 999)[0] == 999
    assert fibonacci_search_max(lambda t: -abs(t - 5), 5, 5) == (5, {5: 0.0})


def _peak_and_noisy_floor(t: int) -> float:
    """The shape measured on an 8 px DDPM (benchmarks/results/diec_small_data): a peak of 0.77 at
    t = 80, then a floor near 0.25 from t ~ 500 on, with a small noise bump at t = 897."""
    peak = 0.77 - ((t - 80) / 300.0) ** 2
    floor = 0.25 + 0.02 * math.exp(-(((t - 897) / 60.0) ** 2))
    return max(peak, floor)


def test_even_timesteps_include_both_ends_without_repeats():
    assert even_timesteps(0, 999, 8) == [0, 143, 285, 428, 571, 714, 856, 999]
    assert even_timesteps(5, 7, 8) == [5, 6, 7]
    assert even_timesteps(3, 3, 8) == [3]


def test_bracketed_search_finds_the_peak_where_a_plain_fibonacci_search_stays_on_the_floor():
    # the plain search's first probes, t = 609 and 986, both lie on the floor; 986 is nearer the bump
    plain_best, _ = fibonacci_search_max(_peak_and_noisy_floor, 0, 999)
    assert plain_best > 600
    calls = []
    best, values = bracketed_search_max(lambda t: calls.append(t) or _peak_and_noisy_floor(t), 0, 999)
    assert best == 80
    assert len(calls) == len(set(calls)) == len(values) <= 8 + 12
    # a unimodal function keeps working, at either end of the range too
    assert bracketed_search_max(lambda t: -((t - 337) ** 2), 0, 999)[0] == 337
    assert bracketed_search_max(lambda t: -t, 0, 999)[0] == 0
    assert bracketed_search_max(lambda t: t, 0, 999)[0] == 999
    assert bracketed_search_max(lambda t: -abs(t - 5), 5, 5) == (5, {5: 0.0})


def _planted_features(planted: tuple[str, int], n: int = 120, k: int = 4):
    """Blobs whose spread grows with the distance from the planted pair (one fixed noise
    pattern, scaled), so the score is a unimodal function of t with its top at the plant."""
    labels = np.arange(n) % k
    rng = np.random.default_rng(0)
    centres, noise = rng.normal(size=(k, 8)) * 4, rng.normal(size=(n, 8))

    def read(timestep: int, layers):
        return {layer: centres[labels] + noise * (0.2 + abs(timestep - planted[1]) / 50 + (layer != planted[0]))
                for layer in layers}

    return read


def test_grid_search_returns_the_planted_pair():
    layers = ["down_blocks.0", "mid_block", "up_blocks.1"]
    search = ClusterabilitySearch(_planted_features(("up_blocks.1", 300)), 4, "calinski_harabasz", seed=0)
    result = search.grid(layers, [0, 100, 200, 300, 400, 500])
    assert (result.layer, result.timestep) == ("up_blocks.1", 300)
    assert result.n_evaluations == 18 and result.feature_passes == 6
    matrix_layers, timesteps, grid = result.matrix()
    assert grid.shape == (3, 6) and not np.isnan(grid).any()


def test_two_stage_search_probes_layers_then_finds_t():
    layers = ["down_blocks.0", "mid_block", "up_blocks.1"]
    search = ClusterabilitySearch(_planted_features(("mid_block", 437)), 4, "calinski_harabasz", seed=0)
    result = search.two_stage(layers, 0, 999, layer=None, probe_timestep=400)
    assert (result.layer, result.timestep) == ("mid_block", 437)
    assert result.n_evaluations <= 3 + 8 + 12  # the probe's layers, the coarse grid, then log-many timesteps
    stages = {item.timestep: item.stage for item in result.evaluations if item.stage != "layer probe"}
    assert [t for t, stage in sorted(stages.items()) if stage == "timestep grid"] == even_timesteps(0, 999, 8)


def test_clusterability_prefers_separated_blobs():
    rng = np.random.default_rng(0)
    labels = np.arange(90) % 3
    tight = np.eye(3)[labels] * 10 + rng.normal(size=(90, 3))
    loose = np.eye(3)[labels] * 1 + rng.normal(size=(90, 3))
    assert clusterability(tight, 3, 0, "calinski_harabasz") > clusterability(loose, 3, 0, "calinski_harabasz") > 0
    assert clusterability(tight, 3, 0, "silhouette") > 0.7


def _rings_and_a_cigar(n: int = 200):
    """Two concentric rings (two clusters that k-means cannot separate) and one elongated
    Gaussian (no clusters at all, but k-means' two halves of it are far apart)."""
    rng = np.random.default_rng(0)
    angles = rng.uniform(0, 2 * np.pi, n)
    radius = np.repeat([1.0, 3.0], n // 2)
    rings = np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1) + rng.normal(scale=0.05, size=(n, 2))
    return rings, rng.normal(size=(n, 2)) * [4.0, 0.5]


def test_umap_silhouette_prefers_rings_where_the_raw_indices_prefer_a_structureless_cigar():
    """Why the search scores in a UMAP embedding: CH and silhouette of k-means in the features
    rank the single elongated blob above the two rings (measured: CH 321 against 117, silhouette
    0.53 against 0.34); in the UMAP embedding the rings come apart and score higher (0.79 against 0.67)."""
    rings, cigar = _rings_and_a_cigar()
    assert clusterability(cigar, 2, 0, "calinski_harabasz") > 2 * clusterability(rings, 2, 0, "calinski_harabasz")
    assert clusterability(cigar, 2, 0, "silhouette") > clusterability(rings, 2, 0, "silhouette") + 0.1
    assert clusterability(rings, 2, 0, "umap_silhouette") > clusterability(cigar, 2, 0, "umap_silhouette") + 0.05
    # in a search over two "timesteps", the default criterion picks the rings, CH the cigar
    read = lambda timestep, layers: {layer: rings if timestep == 100 else cigar for layer in layers}  # noqa: E731
    assert ClusterabilitySearch(read, 2, seed=0).grid(["mid_block"], [100, 400]).timestep == 100
    assert ClusterabilitySearch(read, 2, "calinski_harabasz", seed=0).grid(["mid_block"], [100, 400]).timestep == 400


# ---------------------------------------------------------------------------------- DEC numerics
def test_dec_target_and_kl_match_hand_computation():
    q = torch.tensor([[0.8, 0.2], [0.4, 0.6]])
    # f = (1.2, 0.8); row 1: (0.64/1.2, 0.04/0.8) = (0.53333, 0.05) -> / 0.58333
    # row 2: (0.16/1.2, 0.36/0.8) = (0.13333, 0.45) -> / 0.58333
    p = target_distribution(q)
    assert torch.allclose(p, torch.tensor([[0.914286, 0.085714], [0.228571, 0.771429]]), atol=1e-5)
    # KL rows: 0.914286 ln(0.914286/0.8) + 0.085714 ln(0.085714/0.2) = 0.049460
    #          0.228571 ln(0.228571/0.4) + 0.771429 ln(0.771429/0.6) = 0.065959
    assert float(dec_kl_loss(q, p)) == pytest.approx((0.049460 + 0.065959) / 2, abs=1e-5)
    assert float(dec_kl_loss(p, p)) == pytest.approx(0.0, abs=1e-7)


def test_partition_target_is_the_label_smoothed_one_hot_by_hand():
    # K = 4, smoothing 0.1: 0.9 + 0.1 / 4 = 0.925 on the item's cluster, 0.025 elsewhere
    target = partition_target(torch.tensor([0, 2]), 4, smoothing=0.1)
    assert torch.allclose(target, torch.tensor([[0.925, 0.025, 0.025, 0.025], [0.025, 0.025, 0.925, 0.025]]))
    assert torch.equal(partition_target(torch.tensor([1]), 3, smoothing=0.0), torch.tensor([[0.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="smoothing"):
        partition_target(torch.tensor([0]), 2, smoothing=1.0)


def _moons_trainer(self_label_epochs: int) -> tuple[DiECTrainer, np.ndarray]:
    """DiEC's head on two moons in 8-d (a rank-2 plane), frozen features, seeded."""
    from accelerate import Accelerator
    from sklearn.datasets import make_moons

    from diffclust.seeding import seed_everything

    points, labels = make_moons(300, noise=0.05, random_state=0)
    plane = np.linalg.qr(np.random.default_rng(0).normal(size=(8, 2)))[0].T
    features = torch.tensor(points @ plane, dtype=torch.float32)
    settings = DiEC(2, finetune_unet=False, epochs=10, self_label_epochs=self_label_epochs, batch_size=32, lr=1e-2,
                    progress=False).get_params(deep=False)
    seed_everything(0)
    trainer = DiECTrainer({**settings, "timestep_": 0}, None, None, None, DiECNetwork(8, 2), Accelerator(cpu=True), labels,
                          None, features)
    trainer.run()
    return trainer, labels


def test_self_labelling_keeps_the_umap_start_where_plain_dec_pulls_it_to_nearest_centres():
    """UMAP + k-means finds both moons exactly; its cluster means sit where nearest-centre
    assignment scores 79%. Fitting q to the start partition first bends the mapping towards the
    moons; plain DEC sharpens the nearest-centre split instead."""
    from sklearn.metrics import adjusted_rand_score

    self_labelled, labels = _moons_trainer(self_label_epochs=10)
    plain, _ = _moons_trainer(self_label_epochs=0)
    assert adjusted_rand_score(labels, self_labelled.start_labels.numpy()) == 1.0  # the same start for both
    assert torch.equal(self_labelled.start_labels, plain.start_labels)
    start_accuracy = self_labelled.log.records[0]["acc"]
    assert start_accuracy == plain.log.records[0]["acc"] < 0.82
    assert self_labelled.log.records[-1]["acc"] > 0.88 > 0.86 > plain.log.records[-1]["acc"]
    # the epoch's target: the smoothed start partition while self-labelling, DEC's after
    q = self_labelled.state[1]
    assert torch.equal(self_labelled.target(9, q), partition_target(self_labelled.start_labels, 2, 0.1))
    assert torch.equal(self_labelled.target(10, q), target_distribution(q))
    with pytest.raises(ValueError, match="unless frozen features are given"):
        DiECTrainer({**self_labelled.p, "finetune_unet": True}, None, None, None, DiECNetwork(8, 2), self_labelled.accelerator,
                    None, None, torch.zeros(3, 8))


def test_graph_consistency_over_several_neighbours_by_hand():
    q = torch.tensor([[0.9, 0.1]])
    neighbours = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    # -mean(log 0.9, log 0.5)
    expected = -(math.log(0.9) + math.log(0.5)) / 2
    assert float(neighbour_consistency_loss(q, neighbours)) == pytest.approx(expected, rel=1e-6)


def test_network_starts_as_kmeans_on_standardised_features():
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    features = torch.tensor(np.eye(3)[labels] * 50 + 100 + rng.normal(size=(60, 3)), dtype=torch.float32)
    network = DiECNetwork(3, 3)
    network.initialise(features, seed=0)
    with torch.no_grad():
        embedding, q = network(features)
    assert torch.allclose(embedding.mean(dim=0), torch.zeros(3), atol=1e-4)  # centred, and the MLP starts at zero
    predicted = q.argmax(dim=1).numpy()
    assert len({(a, b) for a, b in zip(labels, predicted)}) == 3  # a one-to-one match of the blobs
    # in half-gap units a point on its centre is 2 units from the others: q = 1 / (1 + 2 / 5) = 0.714
    assert float(q.max(dim=1).values.min()) > 0.69


@pytest.mark.parametrize("init", ["consensus", "umap"])
def test_partition_starts_put_the_centres_at_the_means_of_their_clusters(init):
    """Two rings: spectral candidates outvote k-means (consensus), and k-means in the UMAP
    embedding finds them (umap), so the centres are the ring means (both near the origin), not
    k-means' two half-planes."""
    angles = np.random.default_rng(0).uniform(0, 2 * np.pi, 200)
    radius = np.repeat([1.0, 3.0], 100)
    rings = torch.tensor(np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1), dtype=torch.float32)
    network = DiECNetwork(2, 2)
    network.initialise(rings, seed=0, init=init)
    embedding = network.embed_all(rings)
    expected = torch.stack([embedding[:100].mean(dim=0), embedding[100:].mean(dim=0)])
    found = network.centres.detach()
    order = [0, 1] if torch.dist(found[0], expected[0]) < torch.dist(found[0], expected[1]) else [1, 0]
    torch.testing.assert_close(found[order], expected, atol=1e-5, rtol=0)
    kmeans = DiECNetwork(2, 2)
    kmeans.initialise(rings, seed=0)
    assert kmeans.centres.norm(dim=1).min() > 3 * found.norm(dim=1).max()  # k-means' centres sit out in the half-planes


# ---------------------------------------------------------------------------------- end to end
DIEC_FAST = ["--method", "diec", "--k", "10", "--search-subset", "40", "--noise-draws", "2", "--pool-size", "2",
             "--batch-size", "16", "--device", "cpu", "--quiet"]


def test_diec_end_to_end_search_fit_resume_predict(usps_subset, tiny_ddpm, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    fit = ["fit", str(usps_subset), "--backbone", str(tiny_ddpm), *DIEC_FAST, "--finetune-unet"]  # the GPU default, forced on CPU
    assert main([*fit, "--epochs", "2", "--out", str(whole)]) == 0
    assigned, skipped = read_assignments(whole / "assignments.csv")
    images = sorted(path.name for path in (usps_subset / "images").iterdir())
    assert sorted(assigned) == images and skipped == 0
    for name in ("search.csv", "search.png", "search.json", "diec.json", "diec.safetensors", "diec-unet.safetensors", "metrics.csv"):
        assert (whole / name).is_file(), name
    comparison = json.loads((whole / "pixel_comparison.json").read_text())
    assert comparison["against"] == "raw pixels" and -1 <= comparison["pixels"] <= 1 and -1 <= comparison["features"] <= 1

    # interrupted after one epoch, then resumed: the same model as the uninterrupted run
    assert main([*fit, "--epochs", "1", "--out", str(split)]) == 0
    assert main([*fit, "--epochs", "1", "--out", str(split)]) == 2  # refuses to overwrite without --resume
    assert main([*fit, "--epochs", "2", "--out", str(split), "--resume"]) == 0
    for name in ("diec.safetensors", "diec-unet.safetensors"):
        first, second = load_tensors(whole / name), load_tensors(split / name)
        assert all(torch.equal(first[key], second[key]) for key in first), name
    assert read_assignments(split / "assignments.csv") == read_assignments(whole / "assignments.csv")

    # a search.json replaced under the run (another timestep) is a changed run: resuming refuses it
    search = json.loads((split / "search.json").read_text())
    search["timestep"] = search["timestep"] + 1
    (split / "search.json").write_text(json.dumps(search))
    with pytest.raises(DiffclustError, match=r"timestep_ \(--timestep, or the search's search.json\): \d+ -> \d+"):
        DiEC(10, backbone=str(tiny_ddpm), search_subset=40, noise_draws=2, pool_size=2, batch_size=16, device="cpu",
             finetune_unet=True, epochs=3, progress=False, output_dir=split).fit(usps_subset, resume=True)

    # the UNet was fine-tuned, and predict (through the saved, fine-tuned UNet) reproduces fit
    original = load_backbone(tiny_ddpm).unet.state_dict()
    tuned = load_tensors(whole / "diec-unet.safetensors")
    assert any(not torch.equal(original[key], tuned[key]) for key in original)
    model = load_model(whole)
    assert isinstance(model, DiEC)
    from diffclust.report import build_report

    html = build_report(whole, names=False).read_text()  # the summary names the features the search chose
    assert f"{model.layer_} at t = {model.timestep_} (chosen by the search, see its plot below)" in html
    out = tmp_path / "predicted.csv"
    assert main(["predict", str(whole), str(usps_subset), "--out", str(out), "--quiet"]) == 0
    assert read_assignments(out)[0] == assigned


def test_when_the_features_are_the_pixels_themselves_the_run_warns_that_the_model_does_not_help(caplog):
    class PixelsAsFeatures:
        def read_all(self, latents, timestep, batch_size):
            return {"mid_block": latents.reshape(len(latents), -1)}

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (3, 16))
    pixels = torch.tensor(np.concatenate([centre + rng.normal(0, 1, (40, 16)) for centre in centres]), dtype=torch.float32)
    with caplog.at_level("INFO"):
        scores = DiEC(3, search_subset=90).compare_with_pixels(PixelsAsFeatures(), pixels.reshape(120, 1, 4, 4), "mid_block", 10, 3, 4)
    assert scores["features"] == scores["pixels"] > 0.5 and scores["images"] == 90 and scores["against"] == "raw pixels"
    assert "The raw pixels cluster at least as well" in caplog.text


def test_frozen_diec_with_a_given_pair_skips_the_search_and_is_deterministic(usps_subset, tiny_ddpm):
    settings = dict(backbone=str(tiny_ddpm), layer="mid_block", timestep=100, finetune_unet=False, epochs=3,
                    batch_size=16, noise_draws=2, pool_size=2, device="cpu", progress=False)
    first = DiEC(10, **settings).fit(usps_subset)
    second = DiEC(10, **settings).fit(usps_subset)
    assert first.search_result_ is None
    assert np.array_equal(first.labels_, second.labels_)
    assert first.labels_.shape == (60,) and first.embedding_.shape == (60, 16 * 4)
    assert [record["epoch"] for record in first.history_] == [0, 1, 2, 3]
    assert "acc" in first.history_[-1] and "denoising_loss" not in first.history_[-1]
    assert np.array_equal(first.predict(usps_subset), first.labels_)


def test_search_command_writes_heatmap_and_table(usps_subset, tiny_ddpm, tmp_path, capsys):
    out = tmp_path / "search"
    assert main(["search", str(usps_subset), "--k", "10", "--backbone", str(tiny_ddpm), "--search", "grid",
                 "--search-timesteps", "0,200,400", "--search-subset", "40", "--noise-draws", "1", "--device", "cpu",
                 "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Chosen:" in printed and "15 evaluations over 3 feature passes" in printed
    with open(out / "search.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 15 and sum(int(row["chosen"]) for row in rows) == 1
    best = max(rows, key=lambda row: float(row["score"]))
    assert best["chosen"] == "1" and best["layer"] in printed
    assert (out / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_diec_refuses_bad_settings_and_prompts(tiny_ddpm, usps_subset):
    with pytest.raises(DiffclustError, match="search must be one of"):
        DiEC(10, backbone=str(tiny_ddpm), search="random").fit(usps_subset)
    with pytest.raises(DiffclustError, match="self_label_epochs must be an integer >= 0, got -1"):
        DiEC(10, backbone=str(tiny_ddpm), self_label_epochs=-1).fit(usps_subset)
    with pytest.raises(DiffclustError, match="timestep_range"):
        DiEC(10, backbone=str(tiny_ddpm), timestep_range=(0, 5000), search_subset=40, device="cpu", progress=False).fit(usps_subset)
    with pytest.raises(DiffclustError, match="not fitted"):
        DiEC(10).predict(usps_subset)
