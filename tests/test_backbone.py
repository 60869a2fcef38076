"""The backbone protocol on the built-in tiny-random model (same code path as an SD folder)."""

import pytest
import torch

from diffclust.backbones import load_backbone
from diffclust.backbones.capture import TokenAttentionRecorder
from diffclust.errors import BackboneNotFoundError, DiffclustError


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("tiny-random")


@pytest.fixture(scope="module")
def noisy(backbone):
    torch.manual_seed(0)
    latents = backbone.encode_images(torch.rand(2, 3, 64, 64) * 2 - 1)
    timesteps = torch.tensor([150, 150])
    return backbone.add_noise(latents, torch.randn_like(latents), timesteps), timesteps


def test_tiny_random_is_small_and_sd_shaped(backbone):
    assert backbone.resolution == 64 and backbone.latent_shape(64) == (4, 16, 16)
    assert backbone.reference == "tiny-random" and backbone.token_dim == 32
    parameters = sum(p.numel() for m in (backbone.unet, backbone.vae, backbone.text_encoder) for p in m.parameters())
    assert parameters * 4 < 1_500_000  # under 1.5 MB of float32 weights


def test_vae_latents_are_deterministic(backbone):
    pixels = torch.rand(1, 3, 64, 64)
    assert torch.equal(backbone.encode_images(pixels), backbone.encode_images(pixels))


def test_proxy_word_is_spliced_at_the_placeholder(backbone):
    first = torch.randn(2, 32, requires_grad=True)
    second = torch.randn(2, 32)
    a = backbone.encode_prompt("A photo of a S*", 2, proxy=first)
    b = backbone.encode_prompt("A photo of a S*", 2, proxy=second)
    index = a.placeholder_index
    assert index == len(backbone.tokenizer("A photo of a").input_ids) - 1
    # CLIP attends causally: tokens before the proxy cannot see it, the proxy's own output can
    assert torch.allclose(a.embeddings[:, :index], b.embeddings[:, :index])
    assert not torch.allclose(a.embeddings[:, index], b.embeddings[:, index])
    a.embeddings[:, a.end_index].pow(2).sum().backward()  # (a plain sum of a LayerNorm output is constant)
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_prompt_and_proxy_must_agree(backbone):
    with pytest.raises(DiffclustError, match="placeholder"):
        backbone.encode_prompt("A photo of a S*", 1)
    with pytest.raises(DiffclustError, match="placeholder"):
        backbone.encode_prompt("A photo", 1, proxy=torch.zeros(1, 32))


def test_one_pass_captures_every_layer_like_separate_passes(backbone, noisy):
    layers = ["down_blocks.1", "mid_block", "up_blocks.2.attentions.0"]
    prompt = backbone.encode_prompt("", 2)
    together = backbone.run_unet(*noisy, prompt, capture=layers)
    for layer in layers:
        alone = backbone.run_unet(*noisy, prompt, capture=[layer], stop_after_capture=True)
        assert alone.prediction is None  # stopped once the layer was read
        assert torch.allclose(alone.activations[layer], together.activations[layer])
    assert together.prediction.shape == noisy[0].shape


def test_unknown_layer_lists_the_known_ones(backbone, noisy):
    with pytest.raises(DiffclustError, match="up_blocks.2.attentions.0"):
        backbone.run_unet(*noisy, backbone.encode_prompt("", 2), capture=["up_blocks.9"])


def test_token_attention_maps_sum_to_one_over_tokens(backbone, noisy):
    prompt = backbone.encode_prompt("A photo of a", 2)
    total = sum(backbone.run_unet(*noisy, prompt, attention_token=token).attention for token in range(77))
    assert total.shape == (2, 16, 16)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-4)  # softmax over tokens, averaged linearly


def test_attention_capture_changes_nothing_and_restores_processors(backbone, noisy):
    prompt = backbone.encode_prompt("A photo of a", 2)
    before = {name: type(p) for name, p in backbone.unet.attn_processors.items()}
    plain = backbone.run_unet(*noisy, prompt).prediction
    recorded = backbone.run_unet(*noisy, prompt, attention_token=prompt.end_index)
    assert torch.allclose(plain, recorded.prediction, atol=1e-5)
    assert {name: type(p) for name, p in backbone.unet.attn_processors.items()} == before
    assert not any(isinstance(p, TokenAttentionRecorder) for p in backbone.unet.attn_processors.values())


def test_unreachable_hub_id_says_how_to_use_a_local_folder():
    with pytest.raises(BackboneNotFoundError, match="local folder") as error:
        load_backbone("no-such-org/no-such-model")
    assert "--backbone" in str(error.value)


def test_folder_without_unet_is_explained(tmp_path):
    with pytest.raises(BackboneNotFoundError, match="unet/"):
        load_backbone(tmp_path)
