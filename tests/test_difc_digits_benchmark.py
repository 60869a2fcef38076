"""The seen/novel digits benchmark's own parts: the split and the table it writes (no training here)."""

from __future__ import annotations

import csv
import re
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import difc_digits  # noqa: E402


def test_the_split_puts_even_digits_in_seen_and_odd_in_novel_with_their_rows(tmp_path):
    source = tmp_path / "usps"
    (source / "images").mkdir(parents=True)
    rows = [{"file": f"d{i}.png", "label": str(i % 10), "class_name": str(i % 10), "split": "train"} for i in range(20)]
    for row in rows:
        Image.new("L", (16, 16), int(row["label"]) * 20).save(source / "images" / row["file"])
    with open(source / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert difc_digits.split(source, tmp_path / "work") == {"seen": 10, "novel": 10}
    for name, parity in (("seen", 0), ("novel", 1)):
        with open(tmp_path / "work" / name / "labels.csv", newline="") as handle:
            found = list(csv.DictReader(handle))
        assert {int(row["label"]) % 2 for row in found} == {parity}
        assert sorted(p.name for p in (tmp_path / "work" / name / "images").iterdir()) == sorted(row["file"] for row in found)


def test_the_table_gives_mean_and_spread_over_seeds_and_the_mean_curve():
    row = lambda acc, curve: {"acc": acc, "nmi": 0.5, "ari": 0.25, "acc_by_epoch": curve}  # noqa: E731
    results = {"images": 10, "k": 5, "epochs": 2, "settings": {}, "model": "m",
               "seeds": {"0": {"k-means on raw pixels": row(0.80, []), "DiFiC (all three modules)": row(0.90, [70.0, 90.0])},
                         "1": {"k-means on raw pixels": row(0.70, []), "DiFiC (all three modules)": row(0.80, [60.0, 80.0])}}}
    table = difc_digits.markdown(results)
    assert "| k-means on raw pixels | 75.00 ± 5.00 | 0.500 | 0.250 | 2 |  |" in table
    assert "| DiFiC (all three modules) | 85.00 ± 5.00 | 0.500 | 0.250 | 2 | 65.0, 85.0 |" in table


def test_two_table_runs_sharing_a_folder_keep_each_others_rows(tmp_path, monkeypatch):
    """A second process writing other seeds or variants into the same table.json while the
    first runs: every write reads what is on disk first, so neither loses the other's rows."""
    (tmp_path / "novel").mkdir()

    class TwoImages:  # what the table reads of a collection: its length and labels
        labels = [0, 1]

        def __len__(self):
            return 2

    monkeypatch.setattr("diffclust.scan_images", lambda folder: TwoImages())
    monkeypatch.setattr(difc_digits, "pixel_rows", lambda collection, k, seed: {"k-means on raw pixels": {"acc": 0.5, "nmi": 0.4, "ari": 0.3}})
    monkeypatch.setattr(difc_digits, "z_row", lambda run_dir, labels, k, seed: {"acc": 0.4, "nmi": 0.3, "ari": 0.2})
    monkeypatch.setattr(difc_digits, "manifold_row", lambda run_dir, labels, k, seed: {"acc": 0.7, "nmi": 0.6, "ari": 0.5})
    out = tmp_path / "out"

    def run(collection, folder, model, name, seed, epochs, runs, extra):
        if name == "distillation":  # meanwhile, another process finishes seed 1
            difc_digits.table(tmp_path, [1], epochs, ["DiFiC (all three modules)"], out, extra)
        return {"acc": 0.9 if seed == 0 else 0.8, "nmi": 0.5, "ari": 0.25, "acc_by_epoch": [], "run_dir": str(runs)}

    monkeypatch.setattr(difc_digits, "difc_run", run)
    results = difc_digits.table(tmp_path, [0], 2, ["distillation"], out, {})
    assert set(results["seeds"]) == {"0", "1"}
    assert results["seeds"]["0"]["distillation"]["acc"] == 0.9
    assert results["seeds"]["1"]["DiFiC (all three modules)"]["acc"] == 0.8
    assert set(results["seeds"]["0"]) == {"k-means on raw pixels", "distillation", difc_digits.Z_ROW, difc_digits.MANIFOLD_ROW}
    assert results["seeds"]["0"][difc_digits.MANIFOLD_ROW]["acc"] == 0.7


def test_an_unknown_variant_is_refused_before_any_work_and_no_name_holds_the_separator(tmp_path):
    with pytest.raises(SystemExit, match="Unknown variant"):
        difc_digits.table(tmp_path, [0], 1, ["DiFiC"], tmp_path / "out", {})
    assert not (tmp_path / "out").exists()
    assert not any("," in name for name in difc_digits.VARIANTS)  # --variants is comma-separated


def test_the_head_probe_scores_every_start_and_neighbour_space_on_a_run(tmp_path):
    """Five groups that z separates and S* (the run's proxy words) mixes: the probe reports both
    starts, both purities and one row per (start, neighbours, prior), without training DiFiC."""
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(5), 24)
    z = (np.eye(5)[truth] * 6 + rng.normal(size=(120, 5))) @ rng.normal(size=(5, 16))
    proxies = rng.normal(size=(120, 8)) + 0.5 * np.eye(8)[truth]
    run = tmp_path / "run"
    (run / "cache").mkdir(parents=True)
    np.save(run / "cache" / "features.npy", z.reshape(120, 4, 2, 2).astype(np.float16))
    np.save(run / "embedding.npy", proxies.astype(np.float32))
    files = [f"img{i:03d}.png" for i in range(120)]
    (run / "assignments.csv").write_text("file,cluster\n" + "".join(f"{name},0\n" for name in files))
    (tmp_path / "labels.csv").write_text("file,label\n" + "".join(f"{name},{label}\n" for name, label in zip(files, truth)))
    report = difc_digits.head_probe(run, tmp_path / "labels.csv", epochs=1, seed=0)
    assert "UMAP + k-means of z ACC 100.00%" in report
    purity = dict(re.findall(r"(S\*|z) (\d\.\d{3})", report.split("purity")[1]))
    assert float(purity["z"]) > 0.99 and float(purity["S*"]) < 0.5
    rows = [line for line in report.splitlines() if line.startswith("| kmeans |") or line.startswith("| manifold |")]
    assert [tuple(cell.strip() for cell in row.split("|")[1:4]) for row in rows] == difc_digits.HEAD_PROBE_ROWS


def test_profile_times_every_configuration_and_whole_epochs_side_by_side(tmp_path, monkeypatch):
    """The speed table's shape on a tiny model: each configuration's parts, and whole epochs of
    the trainer for "before" and "auto" with the storage types each one ran (no timing asserted)."""
    from diffclust.backbones.tiny_random import build_tiny_random

    monkeypatch.setattr("diffclust.backbones.efficiency.cpu_has_bf16_matrix_units", lambda: True)
    build_tiny_random(tmp_path / "model")
    (tmp_path / "novel" / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = [{"file": f"d{i}.png", "label": str(i % 5), "class_name": str(i % 5), "split": "train"} for i in range(6)]
    for row in rows:
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "novel" / "images" / row["file"])
    with open(tmp_path / "novel" / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    report = difc_digits.profile(tmp_path, batch=2, repeats=1, rounds=1)
    assert "bf16 matrix units (AMX): True" in report
    parts = re.findall(r"^\| (.+?) \| (UNet \w+, text encoder \w+) \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|$", report, re.MULTILINE)
    assert parts == [("before: all fp32", "UNet fp32, text encoder fp32"), ("auto (now)", "UNet fp32, text encoder bf16"),
                     ("auto + UNet in bf16", "UNet bf16, text encoder bf16"), ("auto + UNet channels_last", "UNet fp32, text encoder bf16"),
                     ("auto + explicit UNet attention", "UNet fp32, text encoder bf16")]
    assert "## Whole warm-up epochs (6 novel digits, batch 2, 1 rounds in turn" in report
    epochs = re.findall(r"^\| (.+?) \| UNet \w+, text encoder \w+ \| [\d.]+ \| [\d.]+ \| ([\d.]+) \|$", report, re.MULTILINE)
    assert [name for name, _ in epochs] == ["before: all fp32", "auto (now)"] and epochs[0][1] == "1.00"
