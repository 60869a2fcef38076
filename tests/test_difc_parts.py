"""Each DiFiC module against values worked by hand."""

import json
import math

import numpy as np
import pytest
import torch

from diffclust.cluster.losses import AssignmentMemoryBank, cluster_guidance_loss, cluster_shares, entropy, neighbour_consistency_loss
from diffclust.cluster.neighbours import nearest_neighbours
from diffclust.methods.difc.extractor import SemanticExtractor
from diffclust.methods.difc.losses import masked_diffusion_loss
from diffclust.methods.difc.masks import gmm_foreground_mask, gmm_threshold
from diffclust.methods.difc.timesteps import TimestepSampler, cosine_timestep_probabilities

from conftest import SD15_CONFIG


def test_extractor_maps_sd15_feature_to_a_768_token():
    extractor = SemanticExtractor(640, 768)
    assert extractor.project.in_features == 3072  # 768 channels x 2 x 2, as in the paper
    assert extractor(torch.randn(2, 640, 32, 32)).shape == (2, 768)


def test_sd15_config_gives_640_channel_block_19_and_768_tokens():
    config = json.loads((SD15_CONFIG / "unet" / "config.json").read_text())
    # up_blocks are the reversed block_out_channels: up_blocks.2 has block_out_channels[1]
    assert list(reversed(config["block_out_channels"]))[2] == 640
    assert json.loads((SD15_CONFIG / "text_encoder" / "config.json").read_text())["hidden_size"] == 768


@pytest.mark.slow
def test_full_sd15_unet_gives_z_of_640x32x32_at_512px():
    from diffusers import UNet2DConditionModel

    from diffclust.backbones.capture import ActivationCapture

    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SD15_CONFIG / "unet")).eval()
    with torch.no_grad(), ActivationCapture(unet, ["up_blocks.2.attentions.0"], stop_after_capture=True) as capture:
        unet(torch.randn(1, 4, 64, 64), torch.tensor([150]), encoder_hidden_states=torch.randn(1, 77, 768))
    z = capture.outputs["up_blocks.2.attentions.0"]
    assert z.shape == (1, 640, 32, 32)
    assert SemanticExtractor(640, 768)(z).shape == (1, 768)


def test_cosine_timestep_probabilities_match_the_formula():
    probabilities = cosine_timestep_probabilities(1000)
    # sum_t cos(pi t / T) over t = 0..T-1 is 1 (pairs t, T-t cancel), so Z = T + 1
    assert probabilities[0].item() == pytest.approx(2 / 1001)
    assert probabilities[500].item() == pytest.approx(1 / 1001)
    assert probabilities.sum().item() == pytest.approx(1.0)
    assert (probabilities[:-1] >= probabilities[1:]).all()


def test_timestep_sampler_draws_from_that_distribution():
    T = 10
    draws = TimestepSampler(cosine_timestep_probabilities(T))(200_000, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws, minlength=T).double() / len(draws)
    expected = torch.tensor([(1 + math.cos(math.pi * t / T)) / (T + 1) for t in range(T)], dtype=torch.float64)
    assert torch.allclose(frequencies, expected, atol=0.004)


def test_gmm_mask_recovers_a_known_foreground():
    rng = np.random.default_rng(0)
    attention = 0.1 + rng.normal(0, 0.01, size=(16, 16))
    truth = np.zeros((16, 16), dtype=bool)
    truth[4:10, 6:13] = True
    attention[truth] = 0.5 + rng.normal(0, 0.02, size=truth.sum())
    assert gmm_threshold(attention) == pytest.approx(0.3, abs=0.01)  # midpoint of the two means
    assert (gmm_foreground_mask(attention) == truth).all()


def test_flat_attention_map_keeps_every_pixel():
    assert gmm_foreground_mask(np.full((8, 8), 0.25)).all()


def test_masked_diffusion_loss_by_hand():
    prediction = torch.zeros(2, 2, 2, 2)
    target = torch.zeros(2, 2, 2, 2)
    target[0, :, 0, 0] = torch.tensor([1.0, 3.0])  # pixel (0,0) of image 0: mean sq. error (1 + 9) / 2 = 5
    target[0, :, 1, 1] = 10.0  # outside image 0's mask: must not count
    target[1] = 2.0  # image 1: error 4 everywhere
    mask = torch.zeros(2, 2, 2)
    mask[0, 0, 0] = 1
    mask[0, 0, 1] = 1  # image 0: pixels with errors 5 and 0 -> 2.5
    mask[1] = 1  # image 1: -> 4
    assert masked_diffusion_loss(prediction, target, mask).item() == pytest.approx((2.5 + 4) / 2)
    assert masked_diffusion_loss(prediction, target, None).item() == pytest.approx(target.pow(2).mean().item())


def test_neighbour_consistency_by_hand():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    q = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    assert neighbour_consistency_loss(p, q).item() == pytest.approx(-math.log(0.5))
    assert neighbour_consistency_loss(p[:1], p[:1]).item() == pytest.approx(0.0, abs=1e-6)


def test_memory_bank_keeps_the_latest_entries_and_enters_the_entropy():
    bank = AssignmentMemoryBank(size=2, n_clusters=2)
    bank.push(torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]))
    assert torch.equal(bank.entries, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    batch = torch.tensor([[0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    total, consistency, spread = cluster_guidance_loss(batch, batch, bank, entropy_weight=5.0)
    assert spread.item() == pytest.approx(math.log(2))  # mean over bank + batch is (0.5, 0.5)
    assert consistency.item() == pytest.approx(0.0, abs=1e-6)
    # lambda = 5 (U + N) / N = 5 * 4 / 2 = 10
    assert total.item() == pytest.approx(consistency.item() - 10 * math.log(2))
    total.backward()
    assert batch.grad is not None and bank.entries.grad is None


def test_a_size_prior_turns_the_entropy_into_minus_kl_to_the_prior_by_hand():
    batch = torch.tensor([[0.9, 0.1], [0.5, 0.5]], requires_grad=True)
    mean = torch.tensor([0.7, 0.3])
    empty = AssignmentMemoryBank(size=0, n_clusters=2)
    # prior = the mean itself: KL = 0, so the total is the consistency alone
    total, consistency, spread = cluster_guidance_loss(batch, batch, empty, 5.0, size_prior=mean)
    assert total.item() == pytest.approx(consistency.item(), abs=1e-6)
    assert spread.item() == pytest.approx(-(0.7 * math.log(0.7) + 0.3 * math.log(0.3)))  # still the plain entropy, for the log
    # another prior: total = consistency + 5 * KL(mean || prior)
    prior = torch.tensor([0.2, 0.8])
    total, consistency, _ = cluster_guidance_loss(batch, batch, empty, 5.0, size_prior=prior)
    kl = 0.7 * math.log(0.7 / 0.2) + 0.3 * math.log(0.3 / 0.8)
    assert total.item() == pytest.approx(consistency.item() + 5 * kl, rel=1e-5)
    # a uniform prior is the paper's loss plus a constant (5 log 2), with the same gradient on the head's logits
    logits = torch.tensor([[2.0, -1.0], [0.3, 0.1]], requires_grad=True)
    probs = logits.softmax(dim=1)
    paper, _, _ = cluster_guidance_loss(probs, probs, empty, 5.0)
    uniform, _, _ = cluster_guidance_loss(probs, probs, empty, 5.0, size_prior=torch.tensor([0.5, 0.5]))
    assert uniform.item() == pytest.approx(paper.item() + 5 * math.log(2), rel=1e-6)
    assert torch.allclose(torch.autograd.grad(paper, logits, retain_graph=True)[0], torch.autograd.grad(uniform, logits)[0], atol=1e-6)


def test_cluster_shares_are_add_one_smoothed_counts():
    assert torch.allclose(cluster_shares(np.array([0, 0, 1]), 3), torch.tensor([3 / 6, 2 / 6, 1 / 6]))
    assert cluster_shares([2, 2], 3).min() > 0 and cluster_shares([2, 2], 3).sum().item() == pytest.approx(1.0)


def test_entropy_of_uniform_and_one_hot():
    assert entropy(torch.full((4,), 0.25)).item() == pytest.approx(math.log(4))
    assert entropy(torch.tensor([1.0, 0.0, 0.0])).item() == pytest.approx(0.0, abs=1e-6)


def test_nearest_neighbours_exclude_self_and_use_cosine():
    points = np.array([[1.0, 0.0], [10.0, 0.5], [0.0, 1.0], [0.1, 5.0]])
    neighbours = nearest_neighbours(points, 1)
    assert neighbours[:, 0].tolist() == [1, 0, 3, 2]  # direction, not length, decides
    # Euclidean: [1, 0] is nearest [0, 1] (distance 1.41), not [10, 0.5] (9.01); ties never pick the row itself
    assert nearest_neighbours(points, 1, metric="euclidean")[:, 0].tolist() == [2, 0, 0, 2]
    duplicates = nearest_neighbours(np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0]]), 1, metric="euclidean")[:, 0].tolist()
    assert duplicates[:2] == [1, 0] and duplicates[2] in (0, 1)
    with pytest.raises(ValueError, match="metric"):
        nearest_neighbours(points, 1, metric="manhattan")


def test_cluster_head_ignores_a_shift_common_to_every_proxy_word():
    from diffclust.cluster.heads import ClusterHead

    torch.manual_seed(0)
    head = ClusterHead(16, 3).train()
    words = torch.randn(32, 16)
    shifted = words + 50 * torch.randn(1, 16)  # the drift proxy words share during training
    assert torch.allclose(head(words), head(shifted), atol=1e-3)


def test_calibrated_head_predicts_like_it_trains_on_the_whole_data():
    from diffclust.cluster.heads import ClusterHead

    torch.manual_seed(0)
    head = ClusterHead(16, 3)
    words = torch.randn(64, 16) * torch.linspace(0.01, 3, 16) + 7  # uneven scales, far from the origin
    head.calibrate(words)
    assert torch.allclose(head.eval()(words), head.train()(words), atol=1e-4)


def test_balanced_copies_cap_the_cluster_gradient_at_the_ratio_by_hand():
    from diffclust.methods.difc.balance import GradientShare, balanced_copies

    x = torch.randn(4, 3, requires_grad=True)
    share = GradientShare(0.5)
    for_diffusion, for_head = balanced_copies(x, share)
    grad_diffusion, grad_cluster = torch.randn(4, 3), 100 * torch.randn(4, 3)
    torch.autograd.backward([for_diffusion, for_head], [grad_diffusion, grad_cluster])
    scale = 0.5 * grad_diffusion.norm() / grad_cluster.norm()
    assert torch.allclose(x.grad, grad_diffusion + scale * grad_cluster)
    assert share.mean_and_reset() == pytest.approx(float(scale)) and share.mean_and_reset() is None
    # a cluster gradient already below the cap passes whole
    x.grad = None
    for_diffusion, for_head = balanced_copies(x, share)
    torch.autograd.backward([for_diffusion, for_head], [grad_diffusion, 0.01 * grad_diffusion])
    assert torch.allclose(x.grad, 1.01 * grad_diffusion) and share.mean_and_reset() == 1.0
    # None: the paper's plain sum (the same tensor twice, no scaling)
    for_diffusion, for_head = balanced_copies(x, GradientShare(None))
    assert for_diffusion is x and for_head is x


def test_ratio_zero_trains_the_extractor_on_diffusion_alone_and_the_head_on_clusters_alone():
    from diffclust.methods.difc.balance import GradientShare
    from diffclust.methods.difc.network import DiFiCNetwork

    torch.manual_seed(0)
    network = DiFiCNetwork(8, 6, 3, with_head=True)
    z = torch.randn(10, 8, 4, 4)
    target = torch.randn(10, 6)

    def gradients(loss_of) -> dict[str, torch.Tensor]:
        network.zero_grad()
        proxies, logits = network(z)
        loss_of(proxies, logits).backward()
        return {name: torch.zeros_like(value) if value.grad is None else value.grad.clone() for name, value in network.named_parameters()}

    def diffusion(proxies, logits):
        return (proxies - target).pow(2).mean()

    def cluster(proxies, logits):
        return -logits.log_softmax(1)[:, 0].mean()

    network.gradient_share = None
    only_diffusion, only_cluster = gradients(diffusion), gradients(cluster)
    network.gradient_share = GradientShare(0.0)
    both = gradients(lambda proxies, logits: diffusion(proxies, logits) + cluster(proxies, logits))
    for name, value in both.items():
        expected = only_diffusion[name] if name.startswith("extractor.") else only_cluster[name]
        assert torch.allclose(value, expected, atol=1e-6), name


def test_feature_rows_are_z_flattened_and_wide_z_is_projected_keeping_distances():
    from diffclust.methods.difc.constants import ConstantStore
    from diffclust.methods.difc.hand_over import feature_rows

    z = np.random.default_rng(0).normal(size=(40, 8, 10, 10)).astype(np.float16)
    store = ConstantStore({"features": z, "latents": np.zeros((40, 1), np.float32)})
    assert np.array_equal(feature_rows(store, seed=0), z.astype(np.float32).reshape(40, -1))  # 800 <= 4,096 columns: z itself
    projected = feature_rows(store, seed=0, max_dims=400)
    assert projected.shape == (40, 400) and np.array_equal(projected, feature_rows(store, seed=0, max_dims=400))
    flat = z.astype(np.float32).reshape(40, -1)
    rows, cols = np.triu_indices(40, 1)
    ratio = np.linalg.norm(projected[rows] - projected[cols], axis=1) / np.linalg.norm(flat[rows] - flat[cols], axis=1)
    assert 0.8 < ratio.min() and ratio.max() < 1.2  # a random projection keeps every distance within 20% here
