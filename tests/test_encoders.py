"""Vision encoders (ViT, DINOv2, CLIP) built from small random configs: features, shards, CLUDI on images."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffclust.cli import main
from diffclust.data.collection import collect_images
from diffclust.encoders import extraction
from diffclust.encoders.vision import VisionEncoder
from diffclust.errors import DiffclustError
from diffclust.methods.cludi import CLUDI

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
CLUDI_FAST = dict(epochs=2, batch_size=16, hidden_dim=32, embedding_dim=8, teacher_steps=2, predict_samples=2, predict_steps=2,
                  monitor_samples=1, init_steps=10, device="cpu", progress=False)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """{'vit': folder with its image processor, 'dinov2': 2 register tokens and no processor, 'clip': a two-tower checkpoint}."""
    from transformers import CLIPConfig, CLIPModel, Dinov2WithRegistersConfig, Dinov2WithRegistersModel, ViTConfig, ViTImageProcessorPil, ViTModel

    root = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(0)
    ViTModel(ViTConfig(**TINY), add_pooling_layer=False).save_pretrained(root / "vit")
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(root / "vit")
    Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**TINY, num_register_tokens=2)).save_pretrained(root / "dinov2")
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=100)
    CLIPModel(CLIPConfig(text_config=text, vision_config=TINY, projection_dim=16)).save_pretrained(root / "clip")
    return {name: root / name for name in ("vit", "dinov2", "clip")}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two classes in sub-folders (bright and dark noise images, 12 each) and one broken file."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name, low in (("bright", 150), ("dark", 0)):
        (root / name).mkdir()
        for index in range(12):
            size = (40 + index, 36)
            Image.fromarray(rng.integers(low, low + 100, (*size, 3), dtype=np.uint8)).save(root / name / f"{index:02d}.png")
    (root / "dark" / "broken.png").write_bytes(b"not an image")
    return root


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_features_command_writes_rows_names_and_skipped(encoders, photos, tmp_path, capsys):
    out = tmp_path / "feats.npy"
    assert main(["features", str(photos), "--encoder", str(encoders["vit"]), "--out", str(out), "--batch-size", "5",
                 "--device", "cpu", "--quiet"]) == 0
    features = np.load(out, allow_pickle=False)
    names = rows(tmp_path / "feats.files.csv")
    collection = collect_images(photos)
    assert features.shape == (24, 32) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    assert [row["file"] for row in names] == collection.files and [row["row"] for row in names] == [str(i) for i in range(24)]
    assert {row["class_name"] for row in names} == {"bright", "dark"}
    assert [row["file"] for row in rows(tmp_path / "feats.skipped.csv")] == ["dark/broken.png"]
    assert not (tmp_path / "feats.npy.parts").exists()  # shards go once the file is complete
    assert "Encoded 24 images into 32-d features (vit, cls)" in capsys.readouterr().out


def test_pooling_reads_the_right_tokens(encoders, photos):
    """CLS is token 0; the mean skips CLS and DINOv2's register tokens; CLIP's CLS is its projected embedding."""
    images = [record.rgb() for record in collect_images(photos).records[:3]]
    dinov2 = VisionEncoder.load(encoders["dinov2"], "mean", progress=False)
    assert dinov2.register_tokens == 2 and dinov2.processor is None  # no preprocessor_config.json: the fallback
    hidden = dinov2.model(pixel_values=dinov2.pixels(images)).last_hidden_state
    assert hidden.shape[1] == 1 + 2 + 16
    expected = torch.nn.functional.normalize(hidden[:, 3:].mean(dim=1), dim=1)
    torch.testing.assert_close(dinov2.encode(images), expected, atol=1e-5, rtol=1e-5)
    cls = VisionEncoder.load(encoders["dinov2"], "cls", progress=False).encode(images)
    torch.testing.assert_close(cls, torch.nn.functional.normalize(hidden[:, 0], dim=1), atol=1e-5, rtol=1e-5)
    clip = VisionEncoder.load(encoders["clip"], "cls", progress=False)
    assert clip.model_type == "clip" and clip.encode(images).shape == (3, 16)  # the projection's size, not the tower's
    assert VisionEncoder.load(encoders["clip"], "mean", progress=False).encode(images).shape == (3, 32)


def test_siglip_has_no_cls_token_its_pooled_vector_and_all_tokens_serve(tmp_path, photos):
    from transformers import SiglipConfig, SiglipModel

    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=100)
    torch.manual_seed(0)
    SiglipModel(SiglipConfig(text_config=text, vision_config=TINY)).save_pretrained(tmp_path / "siglip")
    images = [record.rgb() for record in collect_images(photos).records[:3]]
    siglip = VisionEncoder.load(tmp_path / "siglip", "mean", progress=False)
    assert siglip.prefix_tokens == 0
    outputs = siglip.model(pixel_values=siglip.pixels(images))
    assert outputs.last_hidden_state.shape[1] == 16  # patches only
    normalize = torch.nn.functional.normalize
    torch.testing.assert_close(siglip.encode(images), normalize(outputs.last_hidden_state.mean(dim=1), dim=1), atol=1e-5, rtol=1e-5)
    cls = VisionEncoder.load(tmp_path / "siglip", "cls", progress=False).encode(images)
    torch.testing.assert_close(cls, normalize(outputs.pooler_output, dim=1), atol=1e-5, rtol=1e-5)


def test_an_interrupted_extraction_continues_from_its_shards(encoders, photos, tmp_path, monkeypatch):
    encoder = VisionEncoder.load(encoders["vit"], progress=False)
    collection = collect_images(photos)
    whole = extraction.extract_features(encoder, collection, tmp_path / "whole.npy", batch_size=4, shard_size=10, show_progress=False)
    original, calls = extraction.encode_rows, []

    def crash_on_third_shard(encoder, collection, rows, *args, **kwargs):
        calls.append(rows.start)
        if rows.start == 20 and len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        return original(encoder, collection, rows, *args, **kwargs)

    monkeypatch.setattr(extraction, "encode_rows", crash_on_third_shard)
    out = tmp_path / "feats.npy"
    with pytest.raises(KeyboardInterrupt):
        extraction.extract_features(encoder, collection, out, batch_size=4, shard_size=10, show_progress=False)
    assert sorted(path.name for path in (tmp_path / "feats.npy.parts").glob("shard-*")) == ["shard-00000.npy", "shard-00001.npy"]
    assert not out.exists()
    resumed = extraction.extract_features(encoder, collection, out, batch_size=4, shard_size=10, show_progress=False)
    assert calls == [0, 10, 20, 20]  # the second run encodes only the missing shard
    np.testing.assert_array_equal(resumed, whole)


def test_leftover_shards_of_another_extraction_are_refused(encoders, photos, tmp_path):
    collection = collect_images(photos)
    parts = tmp_path / "feats.npy.parts"
    parts.mkdir()
    extraction._shards_folder(tmp_path / "feats.npy", {"encoder": "x", "pooling": "cls"})
    with pytest.raises(DiffclustError, match=r"another extraction \(encoder: 'x' ->"):
        extraction.extract_features(VisionEncoder.load(encoders["vit"], progress=False), collection, tmp_path / "feats.npy",
                                    show_progress=False)


def test_unknown_encoder_is_a_clear_offline_error(photos, tmp_path, capsys):
    assert main(["features", str(photos), "--encoder", "no-such-model", "--out", str(tmp_path / "f.npy"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "Encoder 'no-such-model' is not an existing folder" in error and "hub id" in error and "Built-in" not in error
    with pytest.raises(DiffclustError, match="pooling"):
        VisionEncoder.load("anything", pooling="max")


def test_encoder_path_and_feature_file_give_the_same_clusters(encoders, photos, tmp_path):
    """CLUDI on images through --encoder, and on the .npy `diffclust features` wrote from them."""
    assert main(["features", str(photos), "--encoder", str(encoders["vit"]), "--out", str(tmp_path / "f.npy"), "--quiet"]) == 0
    on_images = CLUDI(2, encoder=str(encoders["vit"]), output_dir=tmp_path / "run", **CLUDI_FAST).fit(photos)
    on_file = CLUDI(2, **CLUDI_FAST).fit(tmp_path / "f.npy")
    np.testing.assert_array_equal(on_images.labels_, on_file.labels_)
    assert on_file.files_ == on_images.files_ == collect_images(photos).files  # rows named by feats.files.csv
    assert on_file.label_source_ == "the labels stored with the features"
    np.testing.assert_array_equal(np.load(tmp_path / "run" / "features.npy"), np.load(tmp_path / "f.npy"))
    loaded = CLUDI.load(tmp_path / "run")  # predict encodes new images with the fitted encoder
    assert len(loaded.predict(str(photos / "bright" / "00.png"))) == 1


def test_fit_on_images_with_an_encoder_from_the_command_line(encoders, photos, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", str(photos), "--method", "cludi", "--encoder", str(encoders["dinov2"]), "--pooling", "mean", "--k", "2",
                 "--epochs", "1", "--batch-size", "16", "--teacher-steps", "2", "--predict-samples", "2", "--predict-steps", "2",
                 "--hidden-dim", "32", "--embedding-dim", "8", "--device", "cpu", "--quiet", "--out", str(run)]) == 0
    assert "clustered 24 images" in capsys.readouterr().out
    assert [row["file"] for row in rows(run / "assignments.csv") if row["cluster"]] == collect_images(photos).files
    assert main(["fit", str(photos), "--method", "cludi", "--encoder", "x", "--backbone", "tiny-random", "--k", "2",
                 "--out", str(tmp_path / "both")]) == 2
    assert "either encoder (--encoder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- hostile input, round two (issue 26)
def _interrupted_extraction(encoder_folder: Path, photos: Path, out: Path, monkeypatch) -> None:
    """Encode the first shard of 10 rows, then crash (as a kill would), leaving feats.npy.parts/."""
    encoder = VisionEncoder.load(encoder_folder, progress=False)
    original = extraction.encode_rows

    def crash_after_first_shard(encoder, collection, rows, *args, **kwargs):
        if rows.start >= 10:
            raise KeyboardInterrupt("simulated kill")
        return original(encoder, collection, rows, *args, **kwargs)

    monkeypatch.setattr(extraction, "encode_rows", crash_after_first_shard)
    with pytest.raises(KeyboardInterrupt):
        extraction.extract_features(encoder, collect_images(photos), out, batch_size=4, shard_size=10, show_progress=False)
    monkeypatch.setattr(extraction, "encode_rows", original)


def test_resumed_features_refuse_new_weights_under_the_same_path(encoders, photos, tmp_path, monkeypatch):
    from transformers import ViTConfig, ViTModel

    folder = tmp_path / "vit"
    shutil.copytree(encoders["vit"], folder)
    _interrupted_extraction(folder, photos, tmp_path / "feats.npy", monkeypatch)
    torch.manual_seed(1)  # other weights, same path, same config
    ViTModel(ViTConfig(**TINY), add_pooling_layer=False).save_pretrained(folder)
    with pytest.raises(DiffclustError, match="weights"):
        extraction.extract_features(VisionEncoder.load(folder, progress=False), collect_images(photos), tmp_path / "feats.npy",
                                    shard_size=10, show_progress=False)


def test_resumed_features_refuse_images_edited_under_the_same_names(encoders, photos, tmp_path, monkeypatch):
    data = tmp_path / "photos"
    shutil.copytree(photos, data)
    _interrupted_extraction(encoders["vit"], data, tmp_path / "feats.npy", monkeypatch)
    for path in sorted(data.rglob("*.png"))[:3]:
        if path.name != "broken.png":
            Image.new("RGB", (40, 36), (1, 2, 3)).save(path)
            os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    with pytest.raises(DiffclustError, match="contents"):
        extraction.extract_features(VisionEncoder.load(encoders["vit"], progress=False), collect_images(data), tmp_path / "feats.npy",
                                    shard_size=10, show_progress=False)


def test_a_damaged_plan_starts_the_shards_afresh(encoders, photos, tmp_path, monkeypatch):
    out = tmp_path / "feats.npy"
    _interrupted_extraction(encoders["vit"], photos, out, monkeypatch)
    (tmp_path / "feats.npy.parts" / "plan.json").write_text("{not json")
    assert main(["features", str(photos), "--encoder", str(encoders["vit"]), "--out", str(out), "--shard-size", "10", "--quiet"]) == 0
    whole = extraction.extract_features(VisionEncoder.load(encoders["vit"], progress=False), collect_images(photos), None, show_progress=False)
    np.testing.assert_allclose(np.load(out), whole, atol=1e-6)


def test_features_never_overwrite_a_file_they_did_not_write(encoders, photos, tmp_path, capsys):
    out = tmp_path / "mine.npy"
    np.save(out, np.arange(3))
    (tmp_path / "mine.files.csv").write_text("my,own,table\n")
    assert main(["features", str(photos), "--encoder", str(encoders["vit"]), "--out", str(out), "--quiet"]) == 2
    assert "not part of a feature file diffclust wrote" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(out), np.arange(3))
    assert (tmp_path / "mine.files.csv").read_text() == "my,own,table\n"
    fresh = tmp_path / "feats.npy"  # a feature file diffclust wrote may be written again
    assert main(["features", str(photos), "--encoder", str(encoders["vit"]), "--out", str(fresh), "--quiet"]) == 0
    shutil.rmtree(tmp_path / "feats.npy.parts", ignore_errors=True)
    assert main(["features", str(photos), "--encoder", str(encoders["vit"]), "--out", str(fresh), "--quiet"]) == 0


@pytest.mark.parametrize("target, expected", [("folder", "is a folder"), ("unwritable", "Cannot write")])
def test_features_check_their_output_before_encoding_anything(encoders, photos, tmp_path, capsys, monkeypatch, target, expected):
    if target == "folder":
        out = tmp_path / "feats.npy"
        out.mkdir()
    else:
        out = tmp_path / "locked" / "feats.npy"
        out.parent.mkdir()
        import diffclust.engine.atomic as atomic

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)

    def never(*args, **kwargs):
        raise AssertionError("no encoder may load before the output is checked")

    monkeypatch.setattr(VisionEncoder, "load", never)
    assert main(["features", str(photos), "--encoder", str(encoders["vit"]), "--out", str(out), "--quiet"]) == 2
    assert expected in capsys.readouterr().err
