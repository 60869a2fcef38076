"""The CLI on real images: every image gets a row, runs resume, seeds repeat, predict agrees."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffclust.cli import main
from diffclust.engine.checkpoint import load_training_state
from diffclust.methods.difc import DiFiC, training

from conftest import write_subset

FIT = ["--k", "10", "--backbone", "tiny-random", "--epochs", "2", "--device", "cpu", "--quiet"]  # warm-up 'auto': 1 of 2


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def clusters(path: Path) -> dict[str, str]:
    return {row["file"]: row["cluster"] for row in rows(path)}


def every_nth(butterflies: Path, step: int, tmp_path_factory) -> Path:
    """A data folder holding every `step`-th butterfly of labels.csv (all 10 species) and its rows."""
    return write_subset(butterflies, rows(butterflies / "labels.csv")[::step], tmp_path_factory.mktemp(f"every{step}") / "data")


def fit_run(data: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / data.parent.name
    assert main(["fit", str(data), *FIT, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def half(butterflies, tmp_path_factory) -> Path:
    """104 photos: the run most tests read."""
    return every_nth(butterflies, 4, tmp_path_factory)


@pytest.fixture(scope="module")
def fitted(half, tmp_path_factory) -> Path:
    return fit_run(half, tmp_path_factory)


@pytest.fixture(scope="module")
def small(butterflies, tmp_path_factory) -> Path:
    """52 photos: re-runs (seeds, resume) stay cheap."""
    return every_nth(butterflies, 8, tmp_path_factory)


@pytest.fixture(scope="module")
def small_fitted(small, tmp_path_factory) -> Path:
    return fit_run(small, tmp_path_factory)


def test_fit_writes_a_row_for_every_image(fitted, half):
    assignments = rows(fitted / "assignments.csv")
    assert len(assignments) == 104
    assert {row["file"] for row in assignments} == {row["file"] for row in rows(half / "labels.csv")}
    assert all(row["status"] == "ok" and 0 <= int(row["cluster"]) < 10 and 0 < float(row["confidence"]) <= 1 for row in assignments)
    assert rows(fitted / "skipped.csv") == []
    log = rows(fitted / "metrics.csv")
    assert [row["epoch"] for row in log] == ["1", "2"] and [row["phase"] for row in log] == ["warm-up", "guided"]
    assert all(0 <= float(row["acc"]) <= 1 for row in log)  # labels were found and reported
    for name in ("difc.json", "difc.safetensors", "checkpoint.pt", "metrics.jsonl", "cache/constants.json"):
        assert (fitted / name).is_file()
    state = json.loads((fitted / "difc.json").read_text())["state"]
    assert (state["assigned_by"], state["warmup_epochs"]) == ("head", 1)  # the head really decided


def test_load_restores_the_training_run(fitted):
    model = DiFiC.load(fitted)
    assignments = rows(fitted / "assignments.csv")
    assert model.files_ == [row["file"] for row in assignments]
    assert model.labels_.tolist() == [int(row["cluster"]) for row in assignments]
    assert np.allclose(model.confidence_, [float(row["confidence"]) for row in assignments], atol=1e-4)
    assert model.warmup_epochs_ == 1


def test_predict_takes_files_lists_pil_images_and_arrays(fitted, butterflies, tmp_path, capsys):
    expected = clusters(fitted / "assignments.csv")
    names = sorted(expected)[:3]
    paths = [str(butterflies / "images" / name) for name in names]
    model = DiFiC.load(fitted)
    model.progress = False
    wanted = [int(expected[name]) for name in names]
    assert model.predict(paths).tolist() == wanted
    assert model.predict(paths[0]).tolist() == wanted[:1]
    pictures = [Image.open(path) for path in paths]
    assert model.predict(pictures).tolist() == wanted
    assert model.predict([np.asarray(picture.convert("RGB")) for picture in pictures]).tolist() == wanted
    out = tmp_path / "some.csv"
    assert main(["predict", str(fitted), *paths, "--out", str(out), "--quiet"]) == 0
    assert clusters(out) == dict(zip(paths, map(str, wanted)))
    assert main(["predict", str(fitted), paths[0], "--out", str(out), "--quiet"]) == 0
    assert clusters(out) == {paths[0]: str(wanted[0])}


def test_predict_on_the_saved_run_matches_fit(fitted, half, tmp_path):
    out = tmp_path / "predicted.csv"
    assert main(["predict", str(fitted), str(half), "--out", str(out), "--quiet"]) == 0
    assert clusters(out) == clusters(fitted / "assignments.csv")


def test_same_seed_same_clusters(small_fitted, small, tmp_path):
    assert main(["fit", str(small), *FIT, "--out", str(tmp_path / "again")]) == 0
    assert clusters(tmp_path / "again" / "assignments.csv") == clusters(small_fitted / "assignments.csv")
    assert len(clusters(small_fitted / "assignments.csv")) == 52


def test_interrupted_run_resumes_to_the_same_result(small_fitted, small, tmp_path, monkeypatch):
    out = tmp_path / "interrupted"
    original = training.DiFiCTrainer.save_checkpoint

    def crash_after_first_epoch(self, epochs_done):
        original(self, epochs_done)
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(training.DiFiCTrainer, "save_checkpoint", crash_after_first_epoch)
    assert main(["fit", str(small), *FIT, "--out", str(out)]) == 130  # Ctrl-C: one line, the checkpoint kept
    assert load_training_state(out / "checkpoint.pt")["epochs_done"] == 1  # intact, loadable
    assert not (out / "assignments.csv").exists()
    monkeypatch.setattr(training.DiFiCTrainer, "save_checkpoint", original)
    assert main(["fit", str(small), *FIT, "--out", str(out), "--resume"]) == 0
    assert [row["epoch"] for row in rows(out / "metrics.csv")] == ["1", "2"]
    assert clusters(out / "assignments.csv") == clusters(small_fitted / "assignments.csv")


def test_resume_refuses_changed_settings(small_fitted, small, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(small_fitted, copy)
    assert main(["fit", str(small), *FIT[:-3], "--seed", "5", "--device", "cpu", "--quiet", "--out", str(copy), "--resume"]) == 2
    assert "random_state (--seed): 0 -> 5" in capsys.readouterr().err


def test_refitting_into_a_finished_run_is_refused(fitted, butterflies, capsys):
    before = (fitted / "assignments.csv").read_text()
    assert main(["fit", str(butterflies), *FIT, "--out", str(fitted)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (fitted / "assignments.csv").read_text() == before


def test_evaluate_prints_scores(fitted, butterflies, capsys):
    assert main(["evaluate", str(fitted / "assignments.csv"), "--labels", str(butterflies / "labels.csv")]) == 0
    out = capsys.readouterr().out
    assert "Scored 104 images" in out and "312 labelled images have no assignment" in out and "ACC" in out and "NMI" in out and "ARI" in out


def _messy_folder(butterflies: Path, folder: Path) -> Path:
    folder.mkdir()
    sources = sorted((butterflies / "images").iterdir())[:6]
    for source in sources:
        shutil.copy(source, folder / source.name)
    data = sources[0].read_bytes()
    (folder / "corrupt.jpg").write_bytes(data[: len(data) // 3])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "letter.jpg").write_text("this is text, not a JPEG")
    (folder / "notes.txt").write_text("field notes")
    Image.open(sources[1]).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).save(folder / "deep16.png")
    Image.new("RGBA", (40, 30), (200, 10, 10, 128)).save(folder / "alpha.png")
    return folder


def test_messy_folder_completes_and_lists_the_bad_files(butterflies, tmp_path):
    folder = _messy_folder(butterflies, tmp_path / "messy")
    out = tmp_path / "run"
    assert main(["fit", str(folder), "--k", "2", "--backbone", "tiny-random", "--epochs", "1", "--no-cluster-guidance", "--device", "cpu", "--quiet",
                 "--out", str(out)]) == 0
    skipped = {row["file"]: row["reason"] for row in rows(out / "skipped.csv")}
    assert set(skipped) == {"corrupt.jpg", "zero.jpg", "letter.jpg", "notes.txt"}
    assignments = {row["file"]: row for row in rows(out / "assignments.csv")}
    for good in ("cmyk.jpg", "deep16.png", "alpha.png"):
        assert assignments[good]["status"] == "ok"
    for bad in ("corrupt.jpg", "zero.jpg", "letter.jpg"):
        assert assignments[bad]["status"].startswith("skipped") and assignments[bad]["cluster"] == ""
    assert "notes.txt" not in assignments and len(assignments) == 6 + 3 + 3
    assert main(["fit", str(folder), "--k", "2", "--backbone", "tiny-random", "--strict", "--out", str(tmp_path / "strict")]) == 2


def test_too_many_clusters_is_a_clear_error(butterflies, tmp_path, capsys):
    folder = tmp_path / "three"
    folder.mkdir()
    for source in sorted((butterflies / "images").iterdir())[:3]:
        shutil.copy(source, folder / source.name)
    assert main(["fit", str(folder), "--k", "5", "--backbone", "tiny-random", "--out", str(tmp_path / "r")]) == 2
    assert "only 3 usable images" in capsys.readouterr().err


def in_test_folder(tmp_path: Path) -> dict:
    """The environment for a torchrun child: its temporary files (torchelastic's) stay in the test's folder."""
    return {**os.environ, "TMPDIR": str(tmp_path)}


@pytest.mark.integration  # two torchrun processes: CI runs it, the quick default run does not
def test_two_cpu_processes_complete_with_the_same_output_shape(butterflies, tmp_path):
    manifest = rows(butterflies / "labels.csv")[::10]
    folder = write_subset(butterflies, manifest, tmp_path / "subset")
    out = tmp_path / "two"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "diffclust.cli", "fit", str(folder),
               "--k", "3", "--backbone", "tiny-random", "--epochs", "2", "--warmup-epochs", "1", "--quiet", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=in_test_folder(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assignments = rows(out / "assignments.csv")
    assert len(assignments) == len(manifest) == 42
    assert {row["file"] for row in assignments} == {row["file"] for row in manifest}
    assert len(rows(out / "metrics.csv")) == 2


@pytest.mark.integration  # two torchrun processes: CI runs it, the quick default run does not
def test_a_cache_the_disk_cannot_hold_stops_every_process_with_the_same_error(butterflies, tmp_path):
    """The main process checks the disk; the refusal reaches the other process instead of leaving
    it waiting at a barrier. The disk is made too small by a cache share of 0."""
    folder = write_subset(butterflies, rows(butterflies / "labels.csv")[::40], tmp_path / "subset")
    launcher = tmp_path / "launch.py"
    launcher.write_text("import sys\nfrom diffclust.methods.difc import constants\nconstants.CACHE_DISK_SHARE = 0.0\n"
                        "from diffclust.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(launcher), "fit", str(folder),
               "--k", "3", "--backbone", "tiny-random", "--epochs", "1", "--quiet", "--out", str(tmp_path / "two")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=in_test_folder(tmp_path))
    assert result.returncode != 0
    # both ranks print the refusal, naming the folder's free space and the way out
    assert result.stderr.count("The constant cache needs") == 2, result.stderr[-3000:]
    assert "--cache-dir" in result.stderr
    assert not list((tmp_path / "two").rglob("*.npy.partial"))  # nothing written


def test_each_method_gets_its_own_defaults_from_the_command_line(tmp_path):
    """Options of one method never leak into another (DiEC's --entropy-weight is not DiFiC's lambda)."""
    from diffclust.cli import build_model, build_parser

    def model(*extra):
        return build_model(build_parser().parse_args(["fit", "data", "--k", "3", *extra]), tmp_path)

    difc, diec, cludi = model(), model("--method", "diec"), model("--method", "cludi", "--layer", "mid_block")
    assert (difc.entropy_weight, difc.epochs, difc.batch_size, difc.lr) == (5.0, 250, 32, 2e-4)
    assert (diec.entropy_weight, diec.epochs, diec.batch_size, diec.lr, diec.pool_size) == (1.0, 50, 256, 1e-3, 4)
    assert (cludi.epochs, cludi.lr, cludi.ema_decay, cludi.layer, cludi.backbone) == (30, 1e-3, 0.99, "mid_block", None)
    assert model("--epochs", "7", "--method", "diec").epochs == 7
    assert (diec.self_label_epochs, diec.init, diec.search_score) == (10, "umap", "umap_silhouette")
    assert model("--method", "diec", "--self-label-epochs", "0").self_label_epochs == 0
    assert (diec.finetune_unet, model("--method", "diec", "--frozen").finetune_unet,
            model("--method", "diec", "--finetune-unet").finetune_unet) == ("auto", False, True)
    assert diec.resolved_finetune(torch.device("cpu")) is False and diec.resolved_finetune(torch.device("cuda")) is True
    # the paper's procedure, under what is given explicitly
    paper = model("--method", "diec", "--paper-settings")
    assert (paper.search_score, paper.init, paper.self_label_epochs, paper.finetune_unet) == ("calinski_harabasz", "kmeans", 0, True)
    mixed = model("--method", "diec", "--paper-settings", "--search-score", "umap_silhouette", "--self-label-epochs", "3")
    assert (mixed.search_score, mixed.init, mixed.self_label_epochs) == ("umap_silhouette", "kmeans", 3)
    assert model("--method", "cludi", "--layer", "mid_block", "--paper-settings").init == "random"  # CLUDI's own paper settings
