"""DiFiC's training-pass options change memory and speed, not the gradient to S*; the cache
says its size and refuses a disk too small; neighbours by chunked products are exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from diffclust.backbones import load_backbone
from diffclust.backbones.efficiency import TrainingEfficiency
from diffclust.cluster.neighbours import nearest_neighbours
from diffclust.errors import DiffclustError
from diffclust.methods.difc import DiFiC
from diffclust.methods.difc.constants import ConstantStore, as_cached_feature, check_cache_space, quantise_int8


@pytest.fixture()
def backbone():
    return load_backbone("tiny-random")


def _loss_and_gradient(backbone, seed: int = 0) -> tuple[float, torch.Tensor]:
    """The DiFiC step's diffusion loss and its gradient with respect to the proxy words."""
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, *backbone.latent_shape(backbone.resolution), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    proxy = torch.randn(2, backbone.token_dim, generator=generator).requires_grad_(True)
    timesteps = torch.tensor([100, 700])
    noisy = backbone.add_noise(latents, noise, timesteps)
    prediction = backbone.run_unet(noisy, timesteps, backbone.encode_prompt("A photo of a S*", 2, proxy=proxy)).prediction
    loss = (prediction.float() - backbone.prediction_target(latents, noise, timesteps)).pow(2).mean()
    loss.backward()
    return loss.item(), proxy.grad.clone()


def _options(**changes) -> TrainingEfficiency:
    settings = dict(weights_dtype="fp32", gradient_checkpointing=False, channels_last=False)
    return TrainingEfficiency(**{**settings, **changes}).resolved("cpu")


def test_checkpointing_gives_the_same_gradient_to_the_proxy_words(backbone):
    loss, gradient = _loss_and_gradient(backbone)
    backbone.prepare_training(_options(gradient_checkpointing=True, channels_last=True, fused_attention=False))
    assert backbone.unet.is_gradient_checkpointing
    assert {type(p) for p in backbone.unet.attn_processors.values()} == {AttnProcessor}
    checkpointed_loss, checkpointed_gradient = _loss_and_gradient(backbone)
    backbone.finish_training()
    assert not backbone.unet.is_gradient_checkpointing
    assert {type(p) for p in backbone.unet.attn_processors.values()} == {AttnProcessor2_0}  # as loaded
    assert gradient.abs().max() > 0
    assert checkpointed_loss == pytest.approx(loss, abs=1e-6)
    torch.testing.assert_close(checkpointed_gradient, gradient, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_compiled_unet_gives_the_same_loss_and_gradient_and_is_dropped_after_training(backbone):
    """torch.compile (inductor, C++ on CPU) serves the training passes only; numbers as eager."""
    loss, gradient = _loss_and_gradient(backbone)
    backbone.prepare_training(_options(compile_unet=True))
    assert backbone._compiled_unet is not None
    compiled_loss, compiled_gradient = _loss_and_gradient(backbone)
    backbone.finish_training()
    assert backbone._compiled_unet is None
    assert compiled_loss == pytest.approx(loss, rel=1e-4)
    torch.testing.assert_close(compiled_gradient, gradient, atol=1e-4, rtol=1e-3)


def test_bf16_weights_keep_the_loss_within_one_percent_and_restore_exactly(backbone):
    before = {key: value.clone() for key, value in backbone.unet.state_dict().items()}
    loss, gradient = _loss_and_gradient(backbone)
    backbone.prepare_training(_options(weights_dtype="bf16"))
    assert backbone.unet.dtype == torch.bfloat16 and backbone.text_encoder.dtype == torch.bfloat16
    low_loss, low_gradient = _loss_and_gradient(backbone)
    backbone.finish_training()
    assert low_loss == pytest.approx(loss, rel=0.01)
    assert torch.nn.functional.cosine_similarity(low_gradient.flatten(), gradient.flatten(), dim=0) > 0.99
    after = backbone.unet.state_dict()
    assert backbone.unet.dtype == torch.float32 and all(torch.equal(after[key], value) for key, value in before.items())


def test_recorded_attention_map_is_the_same_whatever_serves_the_other_layers(backbone):
    """The mask pass swaps its recorder into the cross-attention layers only; the
    self-attention layers keep whichever processor they had (fused SDPA by default)."""
    latents = torch.randn(2, *backbone.latent_shape(backbone.resolution), generator=torch.Generator().manual_seed(1))
    timesteps = torch.tensor([50, 50])
    prompt = backbone.encode_prompt("A photo of a", 2)
    maps, seen = [], []
    for processor in (AttnProcessor(), AttnProcessor2_0()):
        backbone.unet.set_attn_processor(processor)
        unet_forward = backbone.unet.forward

        def spy(*args, **kwargs):
            seen.append({type(module.processor).__name__ for module in backbone.unet.modules()
                         if isinstance(module, Attention) and not module.is_cross_attention})
            return unet_forward(*args, **kwargs)

        backbone.unet.forward = spy
        with torch.no_grad():
            maps.append(backbone.run_unet(latents, timesteps, prompt, attention_token=prompt.end_index).attention)
        del backbone.unet.forward
    assert seen == [{"AttnProcessor"}, {"AttnProcessor2_0"}]
    assert maps[0].shape == (2, *latents.shape[-2:]) and maps[0].sum() > 0
    torch.testing.assert_close(maps[1], maps[0], atol=1e-6, rtol=0)
    assert all(isinstance(p, AttnProcessor2_0) for p in backbone.unet.attn_processors.values())  # restored after the pass


def test_text_encoder_alone_in_bf16_uses_explicit_attention_on_cpu_and_restores_exactly(backbone):
    """The CPU speed-up: the text encoder in bf16 (explicit attention), the UNet left in fp32."""
    text_before = {key: value.clone() for key, value in backbone.text_encoder.state_dict().items()}
    attention_before = backbone.text_encoder.config._attn_implementation
    loss, gradient = _loss_and_gradient(backbone)
    backbone.prepare_training(_options(text_encoder_dtype="bf16"))
    assert backbone.text_encoder.dtype == torch.bfloat16 and backbone.unet.dtype == torch.float32
    assert backbone.text_encoder.config._attn_implementation == "eager"
    low_loss, low_gradient = _loss_and_gradient(backbone)
    backbone.finish_training()
    assert low_loss == pytest.approx(loss, rel=0.01)
    assert torch.nn.functional.cosine_similarity(low_gradient.flatten(), gradient.flatten(), dim=0) > 0.99
    assert backbone.text_encoder.config._attn_implementation == attention_before != "eager"
    after = backbone.text_encoder.state_dict()
    assert backbone.text_encoder.dtype == torch.float32 and all(torch.equal(after[key], value) for key, value in text_before.items())


@pytest.mark.parametrize("amx", [True, False])
def test_auto_puts_the_text_encoder_in_bf16_only_on_a_cpu_with_amx(monkeypatch, amx):
    monkeypatch.setattr("diffclust.backbones.efficiency.cpu_has_bf16_matrix_units", lambda: amx)
    auto = TrainingEfficiency().resolved("cpu")
    assert (auto.weights_dtype, auto.text_encoder_dtype) == ("fp32", "bf16" if amx else "fp32")
    assert auto.text_dtype == (torch.bfloat16 if amx else torch.float32)
    assert TrainingEfficiency(weights_dtype="fp32").resolved("cpu").text_encoder_dtype == "fp32"  # an explicit choice is kept
    assert TrainingEfficiency(weights_dtype="fp16").resolved("cpu").text_encoder_dtype == "fp16"
    assert TrainingEfficiency(text_encoder_dtype="fp32").resolved("cpu").text_encoder_dtype == "fp32"
    with pytest.raises(DiffclustError, match="--text-encoder-dtype"):
        TrainingEfficiency(text_encoder_dtype="int4")


def test_efficiency_auto_saves_memory_on_cuda_only_and_rejects_unknown_values():
    cpu = TrainingEfficiency().resolved("cpu")
    assert (cpu.weights_dtype, cpu.gradient_checkpointing, cpu.channels_last) == ("fp32", False, False)
    assert TrainingEfficiency(weights_dtype="fp16", gradient_checkpointing=True).resolved("cpu").dtype == torch.float16
    with pytest.raises(DiffclustError, match="weights_dtype"):
        TrainingEfficiency(weights_dtype="int8")
    with pytest.raises(DiffclustError, match="gradient_checkpointing"):
        DiFiC(gradient_checkpointing="sometimes").fit(np.zeros((2, 3)))


def test_cli_flags_reach_the_estimator(tmp_path):
    from diffclust.cli import build_model, build_parser

    args = build_parser().parse_args(["fit", str(tmp_path), "--method", "difc", "--k", "3", "--weights-dtype", "bf16", "--text-encoder-dtype", "fp16",
                                      "--gradient-checkpointing", "on", "--channels-last", "off", "--keep-vae", "--compile-unet", "--no-tf32",
                                      "--no-fused-attention"])
    model = build_model(args, tmp_path / "run")
    assert (model.weights_dtype, model.text_encoder_dtype, model.gradient_checkpointing, model.channels_last) == ("bf16", "fp16", True, False)
    assert (model.offload_vae, model.compile_unet, model.tf32, model.fused_attention) == (False, True, False, False)


def test_cache_size_is_checked_before_anything_is_written(tmp_path, monkeypatch):
    layout = {"latents": ((1000, 4, 64, 64), np.float32), "features": ((1000, 640, 32, 32), np.float16), "masks": ((1000, 64, 64), np.uint8)}
    expected = 1000 * (4 * 64 * 64 * 4 + 640 * 32 * 32 * 2 + 64 * 64)
    monkeypatch.setattr("diffclust.methods.difc.constants.shutil.disk_usage", lambda path: type("Usage", (), {"free": 10 * expected}))
    assert check_cache_space(tmp_path, layout) == expected
    monkeypatch.setattr("diffclust.methods.difc.constants.shutil.disk_usage", lambda path: type("Usage", (), {"free": expected}))
    with pytest.raises(DiffclustError, match=r"needs 1\.4 GB for 1000 images .* --cache-dir") as error:
        check_cache_space(tmp_path, layout)
    assert str(tmp_path) in str(error.value) and not list(tmp_path.iterdir())


def test_int8_codes_by_hand_and_the_store_reads_them_back_scaled():
    """Channel maxima 2.54 and 0.127 give scales 0.02 and 0.001; every value is off by at most
    half a step, and the store's read equals the predict-time rounding."""
    z = torch.tensor([[[[2.54, -1.0], [0.011, 0.0]], [[0.127, -0.0504], [0.0, 0.001]]]])
    codes, scales = quantise_int8(z)
    torch.testing.assert_close(scales, torch.tensor([[0.02, 0.001]]))
    assert codes.dtype == torch.int8 and codes[0, 0].tolist() == [[127, -50], [1, 0]] and codes[0, 1].tolist() == [[127, -50], [0, 1]]
    rounded = as_cached_feature(z, "int8")
    assert float((rounded - z).abs().max()) <= 0.01 + 1e-7
    store = ConstantStore({"features": codes.numpy(), "feature_scales": scales.numpy()})
    torch.testing.assert_close(store.batch("features", [0]), rounded)


def test_prefetched_batches_are_the_direct_reads_in_order():
    store = ConstantStore({"latents": np.arange(40, dtype=np.float32).reshape(10, 4), "masks": np.eye(10, dtype=np.uint8)})
    batches = [torch.tensor([3, 1]), torch.tensor([0]), torch.tensor([9, 8, 7])]
    read = list(store.prefetch(["latents", "masks"], batches, "cpu"))
    assert len(read) == 3
    for indices, rows in zip(batches, read):
        assert torch.equal(rows["latents"], store.batch("latents", indices)) and torch.equal(rows["masks"], store.batch("masks", indices))


def test_chunked_neighbours_match_a_brute_force_search_and_skip_duplicates_of_self():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(300, 8)).astype(np.float32)
    points[1] = points[0] * 3  # same direction: 0 and 1 are each other's nearest, and never their own
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    expected = -np.sort(-similarity, axis=1)[:, :5]  # the 5 best similarities (0 and 1 tie as others' neighbours)
    for found in (nearest_neighbours(points, 5, chunk_rows=7), nearest_neighbours(torch.from_numpy(points), 5)):
        np.testing.assert_allclose(np.take_along_axis(similarity, found, axis=1), expected, atol=1e-6)
        assert found[0, 0] == 1 and found[1, 0] == 0 and not (found == np.arange(300)[:, None]).any()
