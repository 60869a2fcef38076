"""The distillation machinery learns proxy words that separate known groups."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffclust import DiFiC, hungarian_accuracy
from diffclust.data import scan_images

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


def _fit(folder, tmp_path, **settings):
    model = DiFiC(GROUPS, backbone=GaussianMixtureBackbone(), feature_layer="latent", device="cpu", batch_size=16,
                  lr=1e-3, n_neighbours=5, memory_bank_size=64, object_concentration=False, progress=False,
                  cache_dir=tmp_path / "cache", random_state=0, **settings)
    return model.fit(folder)


def test_difc_recovers_the_mixture_components(mixture_folder, tmp_path):
    model = _fit(mixture_folder, tmp_path, epochs=30, warmup_epochs=15)
    labels = scan_images(mixture_folder).labels
    history = model.history_
    assert history[0]["acc"] < 0.9  # the nuisance confuses k-means on untrained proxy words...
    assert history[-1]["diffusion_loss"] < 0.85 * history[0]["diffusion_loss"]  # ...distillation learns (the nuisance part stays)...
    assert history[-1]["phase"] == "guided" and model.kmeans_centres_ is None  # ...and the head decides
    assert hungarian_accuracy(labels, model.labels_) >= 0.95
    assert model.proxy_words_.shape == (GROUPS * PER_GROUP, 32)


def test_distillation_alone_recovers_the_components_with_kmeans(mixture_folder, tmp_path):
    model = _fit(mixture_folder, tmp_path, epochs=15, warmup_epochs=15, cluster_guidance=False)
    labels = scan_images(mixture_folder).labels
    assert model.kmeans_centres_ is not None and model.network_.head is None
    assert model.history_[0]["acc"] < 0.9
    assert hungarian_accuracy(labels, model.labels_) >= 0.95
