"""Hostile and careless input: no silent corruption, no hangs, no lost data, no raw tracebacks.

Each test reproduces a case that went wrong before (see issue 12) and asserts what happens now.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffclust import CLUDI, DiFiC
from diffclust.cli import main
from diffclust.data import images as image_module
from diffclust.data import scan_images
from diffclust.data.images import load_rgb
from diffclust.engine import atomic
from diffclust.engine.checkpoint import atomic_write_text
from diffclust.engine.run_lock import RunFolderLock
from diffclust.errors import DiffclustError

from conftest import REPO, cli_failure, write_subset

QUICK = ["--backbone", "tiny-random", "--epochs", "1", "--no-cluster-guidance", "--device", "cpu", "--quiet"]


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def clusters(path: Path) -> dict[str, str]:
    return {row["file"]: row["cluster"] for row in rows(path)}


def cli_error(capsys, argv: list[str], expected: str) -> str:
    """A user error: exit code 2, no traceback, one last line containing `expected`."""
    return cli_failure(capsys, argv, 2, expected)


@pytest.fixture(scope="module")
def run(twelve, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile-runs") / "run"
    assert main(["fit", str(twelve), "--k", "3", *QUICK, "--out", str(out)]) == 0
    return out


# ---------------------------------------------------------------------------------- two writers
def test_a_second_writer_is_refused_while_a_run_holds_the_folder(twelve, tmp_path, capsys):
    out = tmp_path / "busy"
    with RunFolderLock(out):
        cli_error(capsys, ["fit", str(twelve), "--k", "3", *QUICK, "--out", str(out)], "is in use by another diffclust run (PID")
    assert not (out / "cache").exists()  # the refused run touched nothing


@pytest.mark.integration  # two CLI processes at once: CI runs it; the test above checks the lock in-process
def test_two_processes_racing_for_one_folder_leave_one_correct_run(twelve, run, tmp_path):
    out = tmp_path / "raced"
    command = [sys.executable, "-m", "diffclust.cli", "fit", str(twelve), "--k", "3", *QUICK, "--out", str(out)]
    racers = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(racer.wait(timeout=300), racer.stderr.read()) for racer in racers]
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "is in use by another diffclust run" in loser or "already holds a run" in loser
    assert clusters(out / "assignments.csv") == clusters(run / "assignments.csv")  # the same as a run alone
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["diffusion_loss"] == pytest.approx(
        json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["diffusion_loss"])


# ---------------------------------------------------------------------------------- odd counts
def test_one_image_more_than_a_multiple_of_the_batch_does_not_crash(butterflies, tmp_path):
    folder = write_subset(butterflies, rows(butterflies / "labels.csv")[:9], tmp_path / "nine")
    model = DiFiC(3, backbone="tiny-random", epochs=2, batch_size=4, device="cpu", progress=False).fit(folder)  # 9 = 2 x 4 + 1
    assert len(model.labels_) == 9 and model.history_[-1]["phase"] == "guided"
    features = np.random.default_rng(0).normal(size=(33, 4))
    assert len(CLUDI(2, epochs=1, batch_size=32, predict_samples=1, predict_steps=2, teacher_steps=2, init_steps=5,
                     device="cpu", progress=False).fit(features).labels_) == 33


# ---------------------------------------------------------------------------------- folders
def test_symlink_loops_end_quickly_with_each_image_once(butterflies, tmp_path):
    folder = tmp_path / "loops"
    (folder / "sub").mkdir(parents=True)
    for source in sorted((butterflies / "images").iterdir())[:6]:
        shutil.copy(source, folder / source.name)
    (folder / "loop").symlink_to(".")
    (folder / "sub" / "up").symlink_to("..")
    collection = scan_images(folder)
    assert len(collection) == 6 and len(set(collection.files)) == 6
    assert {item.file for item in collection.skipped} == {"loop/", "sub/up/"}
    assert all("already read" in item.reason for item in collection.skipped)


def test_an_unreadable_sub_folder_is_listed_and_warned_about(butterflies, tmp_path, monkeypatch, caplog):
    folder = tmp_path / "photos"
    (folder / "locked").mkdir(parents=True)
    for index, source in enumerate(sorted((butterflies / "images").iterdir())[:4]):
        shutil.copy(source, folder / ("locked" if index < 2 else ".") / source.name)
    real_scandir = os.scandir

    def scandir(path="."):  # root ignores permissions, so the refusal is simulated where os.walk lists
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with caplog.at_level(logging.WARNING, logger="diffclust"):
        collection = scan_images(folder)
    assert len(collection) == 2
    assert [(item.file, item.reason.split(":")[0]) for item in collection.skipped] == [("locked/", "folder cannot be read")]
    assert "locked/" in caplog.text and "cannot be read" in caplog.text


# ---------------------------------------------------------------------------------- odd images
def test_a_one_pixel_high_strip_costs_little_memory(tmp_path):
    Image.new("RGB", (200_000, 1), (10, 200, 30)).save(tmp_path / "strip.png")
    # the child's own peak (benchmarks/peak_memory.py: ru_maxrss would carry this pytest process's peak over)
    code = (f"import sys; sys.path[:0] = [{str(REPO / 'benchmarks')!r}]; from peak_memory import peak_resident_bytes; "
            f"from diffclust.data import scan_images; from diffclust.data.dataset import ImageTensorDataset; c = scan_images({str(tmp_path)!r}); "
            "x = ImageTensorDataset(c, 512)[0][1]; print(tuple(x.shape), peak_resident_bytes() // 1024)")
    shape, peak_kb = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.rsplit(" ", 1)
    assert shape == "(3, 512, 512)"
    assert int(peak_kb) < 1_000_000  # under 1 GB (it was 4.45 GB at 64 px)


def test_images_over_the_pixel_bound_are_skipped_with_the_reason(butterflies, tmp_path, monkeypatch):
    folder = write_subset(butterflies, rows(butterflies / "labels.csv")[:3], tmp_path / "three")
    monkeypatch.setattr(image_module, "MAX_PIXELS", 1000)
    with pytest.raises(DiffclustError, match="No usable images"):
        scan_images(folder)
    Image.new("RGB", (20, 20)).save(folder / "images" / "small.png")
    (folder / "labels.csv").write_text((folder / "labels.csv").read_text() + "small.png,0,,\n")
    collection = scan_images(folder)
    assert collection.files == ["small.png"]
    assert all(item.reason.startswith("too large:") and "megapixel limit" in item.reason for item in collection.skipped)


def test_exif_orientation_is_applied_as_viewers_do(tmp_path):
    picture = Image.new("RGB", (179, 128), (200, 0, 0))
    picture.paste((0, 0, 200), (0, 0, 20, 128))  # a blue band on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    picture.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = load_rgb(tmp_path / "phone.jpg")
    assert upright.size == (128, 179)
    assert upright.getpixel((64, 5))[2] > 150  # the left band is now at the top


def test_animated_gifs_use_their_first_frame_with_a_warning(tmp_path, caplog):
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    with caplog.at_level(logging.WARNING, logger="diffclust"):
        collection = scan_images(tmp_path)
    assert collection.files == ["anim.gif"] and "animated GIF" in caplog.text
    assert collection.records[0].rgb().getpixel((5, 5))[0] > 200  # the red first frame


def test_duplicate_manifest_rows_are_an_error_naming_them(twelve, tmp_path):
    folder = write_subset(twelve, rows(twelve / "labels.csv")[:3], tmp_path / "dup")
    lines = (folder / "labels.csv").read_text().splitlines()
    (folder / "labels.csv").write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(DiffclustError, match=r"rows 2 and 5 both name"):
        scan_images(folder)


# ---------------------------------------------------------------------------------- overwrites
def test_predict_never_overwrites_a_file_it_did_not_write(run, twelve, capsys):
    labels = twelve / "labels.csv"
    before = labels.read_bytes()
    cli_error(capsys, ["predict", str(run), str(twelve), "--out", str(labels), "--quiet"], "is not an assignments file diffclust wrote")
    assert labels.read_bytes() == before
    cli_error(capsys, ["predict", str(run), str(twelve), "--out", str(twelve), "--quiet"], "is a folder")


def test_a_finished_run_without_its_checkpoint_is_not_overwritten(run, twelve, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "checkpoint.pt").unlink()
    before = (copy / "assignments.csv").read_bytes()
    cli_error(capsys, ["fit", str(twelve), "--k", "3", *QUICK, "--out", str(copy)], "already holds a run")
    cli_error(capsys, ["fit", str(twelve), "--k", "3", *QUICK, "--out", str(copy), "--resume"], "no checkpoint.pt to resume from")
    assert (copy / "assignments.csv").read_bytes() == before


@pytest.mark.parametrize("change, expected", [
    (["--resolution", "128"], "resolution (--resolution): 64 -> 128"),
    (["--backbone", "OTHER"], "backbone (--backbone): 'tiny-random' ->"),
    (["DATA"], "data (DATA or --features): '12 files"),
])
def test_resume_refuses_other_data_backbone_or_resolution(run, twelve, tmp_path, capsys, change, expected):
    from diffclust.backbones.tiny_random import ensure_tiny_random

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    data = twelve
    if change == ["DATA"]:
        data = write_subset(twelve, rows(twelve / "labels.csv")[:6], tmp_path / "six")
        change = []
    change = [str(ensure_tiny_random()) if item == "OTHER" else item for item in change]
    cache = {path.name: path.read_bytes() for path in (copy / "cache").iterdir()}
    cli_error(capsys, ["fit", str(data), "--k", "3", *QUICK, *change, "--out", str(copy), "--resume"], expected)
    assert {path.name: path.read_bytes() for path in (copy / "cache").iterdir()} == cache  # refused before any rewrite


# ---------------------------------------------------------------------------------- clear errors
def test_bad_labels_files_are_one_clear_error(twelve, tmp_path, capsys):
    latin = write_subset(twelve, rows(twelve / "labels.csv")[:3], tmp_path / "latin")
    with open(latin / "labels.csv", "a", encoding="latin-1") as handle:  # a class name as a Latin-1 editor saves it
        handle.write(f'{rows(twelve / "labels.csv")[0]["file"]},0,papillon bleu été,train\n')
    cli_error(capsys, ["fit", str(latin), "--k", "2", *QUICK, "--out", str(tmp_path / "r1")], "is not UTF-8 text")
    huge = write_subset(twelve, rows(twelve / "labels.csv")[:3], tmp_path / "huge")
    with open(huge / "labels.csv", "a") as handle:
        handle.write(f'{rows(twelve / "labels.csv")[0]["file"]},0,"{"x" * 140_000}",train\n')
    cli_error(capsys, ["fit", str(huge), "--k", "2", *QUICK, "--out", str(tmp_path / "r2")], "not a readable CSV file")


@pytest.mark.parametrize("content, expected", [
    ("file,label\na.jpg,\n", "row 2 has no label"),
    ("file,label\na.jpg,bird\n", "No file in"),  # a name is a label (numbered), but this file was never clustered
])
def test_evaluate_names_bad_label_rows(run, tmp_path, capsys, content, expected):
    (tmp_path / "labels.csv").write_text(content)
    cli_error(capsys, ["evaluate", str(run / "assignments.csv"), "--labels", str(tmp_path / "labels.csv")], expected)


def test_evaluate_names_bad_clusters_and_binary_files(run, tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("file,cluster,confidence,status\na.jpg,one,0.5,ok\n")
    cli_error(capsys, ["evaluate", str(tmp_path / "bad.csv"), "--labels", str(run)], "cluster 'one'")
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 4)
    cli_error(capsys, ["evaluate", str(tmp_path / "binary.csv"), "--labels", str(run)], "binary.csv")


def test_output_folders_are_checked_before_any_work(twelve, tmp_path, capsys, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    cli_error(capsys, ["fit", str(twelve), "--k", "3", *QUICK, "--out", str(tmp_path / "a-file")], "is a file, not a folder")

    def read_only(*args, **kwargs):  # root writes anywhere, so a read-only folder is simulated where the probe writes
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    cli_error(capsys, ["fit", str(twelve), "--k", "3", *QUICK, "--out", str(tmp_path / "ro")],
              "Cannot write to output_dir (--out)")


@pytest.mark.parametrize("setting, expected", [
    (["--seed", "-1"], "argument --seed/--random-state: must be >= 0"),
    (["--lr", "nan"], "argument --lr: must be a finite number > 0"),
    (["--resolution", "-64"], "argument --resolution: must be >= 1"),
    (["--resolution", "0"], "argument --resolution: must be >= 1"),
    (["--num-workers", "-1"], "argument --num-workers: must be >= 0"),
    (["--t-hat", "5000"], "feature_timestep (--t-hat) must be within 0..999"),
    (["--method", "diec", "--timestep", "5000", "--layer", "mid_block"], "timestep (--timestep) must be within 0..999"),
    (["--method", "diec", "--resolution", "7", "--layer", "mid_block", "--timestep", "10"], "Resolution 7 must be a multiple of"),
])
def test_bad_settings_are_refused_by_name(twelve, tmp_path, capsys, setting, expected):
    cli_error(capsys, ["fit", str(twelve), "--k", "3", *QUICK, *setting, "--out", str(tmp_path / "r")], expected)
    assert not (tmp_path / "r" / "cache").exists()


def test_predict_batch_size_must_be_positive(run, twelve, tmp_path, capsys):
    cli_error(capsys, ["predict", str(run), str(twelve), "--out", str(tmp_path / "p.csv"), "--batch-size", "-1"],
              "argument --batch-size: must be >= 1")


@pytest.mark.parametrize("damage, expected", [
    (lambda run: (run / "difc.safetensors").write_bytes((run / "difc.safetensors").read_bytes()[:100]), "model cannot be read"),
    (lambda run: (run / "difc.safetensors").write_bytes(os.urandom(2048)), "model cannot be read"),
    (lambda run: (run / "difc.safetensors").unlink(), "model cannot be read"),
    (lambda run: (run / "difc.json").write_text("{not json"), "difc.json is not valid JSON"),
    (lambda run: (run / "difc.json").write_text("[1, 2]"), "is not a diffclust model config"),
    (lambda run: (run / "difc.json").write_text(json.dumps({"method": "difc", "settings": {"n_clusters": "many"}, "state": {}})),
     "model cannot be read"),
])
def test_a_damaged_run_folder_is_named_as_such(run, twelve, tmp_path, capsys, damage, expected):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    damage(copy)
    last = cli_error(capsys, ["predict", str(copy), str(twelve), "--out", str(tmp_path / "p.csv"), "--quiet"], expected)
    assert "This run folder is damaged" in last


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/diffclust-pwned",))


@pytest.mark.parametrize("damage", ["truncated", "hostile"])
def test_a_damaged_checkpoint_on_resume_is_named_and_never_unpickled(run, twelve, tmp_path, capsys, damage):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    checkpoint = copy / "checkpoint.pt"
    if damage == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:500])
    else:
        torch.save({"network": _Payload()}, checkpoint)
    Path("/tmp/diffclust-pwned").unlink(missing_ok=True)
    cli_error(capsys, ["fit", str(twelve), "--k", "3", *QUICK, "--out", str(copy), "--resume"], "This run folder is damaged")
    assert not Path("/tmp/diffclust-pwned").exists()


def test_cludi_inputs_that_are_not_numbers_are_clear_errors(tmp_path, capsys):
    fit = ["fit", "--method", "cludi", "--k", "2", "--epochs", "1", "--device", "cpu", "--quiet"]
    np.save(tmp_path / "words.npy", np.array([["a", "b"], ["c", "d"], ["e", "f"]]))
    cli_error(capsys, [*fit, "--features", str(tmp_path / "words.npy"), "--out", str(tmp_path / "r1")], "numeric matrix")
    np.save(tmp_path / "complex.npy", np.ones((4, 2)) * 1j)
    cli_error(capsys, [*fit, "--features", str(tmp_path / "complex.npy"), "--out", str(tmp_path / "r2")], "Complex data")
    np.save(tmp_path / "f.npy", np.random.default_rng(0).normal(size=(6, 3)))
    cli_error(capsys, [*fit, "--features", str(tmp_path / "f.npy"), "--labels", str(tmp_path / "none.npy"), "--out", str(tmp_path / "r3")],
              "does not exist")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}] * 6, dtype=object), allow_pickle=True)
    cli_error(capsys, [*fit, "--features", str(tmp_path / "f.npy"), "--labels", str(tmp_path / "objects.npy"), "--out", str(tmp_path / "r4")],
              "Could not read the labels file")
    np.save(tmp_path / "floats.npy", np.array([0.0, 1.5, 1.0, 0.0, 1.0, 0.0]))
    cli_error(capsys, [*fit, "--features", str(tmp_path / "f.npy"), "--labels", str(tmp_path / "floats.npy"), "--out", str(tmp_path / "r5")],
              "labels must be whole numbers")
    Path("/tmp/diffclust-pwned").unlink(missing_ok=True)
    torch.save({"features": _Payload()}, tmp_path / "hostile.pt")
    cli_error(capsys, [*fit, "--features", str(tmp_path / "hostile.pt"), "--out", str(tmp_path / "r6")], "Could not read the feature file")
    assert not Path("/tmp/diffclust-pwned").exists()


# ---------------------------------------------------------------------------------- files on disk
def test_outputs_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        written = atomic_write_text(tmp_path / "out.txt", "x")
    finally:
        os.umask(previous)
    assert written.stat().st_mode & 0o777 == 0o644
