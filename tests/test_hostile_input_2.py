"""Hostile input, round two (issue 26): every failure is one line with the right exit code, and
nothing is overwritten or mixed. Each test reproduces a case that failed before its fix."""

from __future__ import annotations

import csv
import errno
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffclust.cli import default_run_folder, main
from diffclust.cluster.consensus import consensus_partition
from diffclust.cluster.k_selection import choose_k
from diffclust.errors import DiffclustError
from diffclust.outputs import read_assignments, write_assignments

from conftest import cli_failure as failure
from conftest import write_subset

QUICK = ["--backbone", "tiny-random", "--epochs", "1", "--no-cluster-guidance", "--device", "cpu", "--quiet"]


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def run(twelve, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("round2") / "run"
    assert main(["fit", str(twelve), "--k", "3", *QUICK, "--out", str(out)]) == 0
    return out


# ---------------------------------------------------------------------------------- one line for every failure
def test_an_unexpected_error_is_one_line_and_the_traceback_needs_debug(twelve, tmp_path, capsys, monkeypatch):
    from diffclust.methods.difc import estimator

    def broken(*args, **kwargs):
        raise json.JSONDecodeError("Expecting value", "{", 0)

    monkeypatch.setattr(estimator.DiFiC, "_fit", broken)
    last = failure(capsys, ["fit", str(twelve), "--k", "3", *QUICK, "--out", str(tmp_path / "a")], 1, "unexpected JSONDecodeError")
    assert "--debug" in last
    assert main(["fit", str(twelve), "--k", "3", *QUICK, "--out", str(tmp_path / "b"), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("DIFFCLUST_DEBUG", "1")
    assert main(["fit", str(twelve), "--k", "3", *QUICK, "--out", str(tmp_path / "c")]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_ctrl_c_is_one_line_that_says_how_to_resume(twelve, tmp_path, capsys, monkeypatch):
    from diffclust.methods.difc import estimator

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(estimator.DiFiC, "_fit", interrupted)
    last = failure(capsys, ["fit", str(twelve), "--k", "3", *QUICK, "--out", str(tmp_path / "run")], 130, "interrupted")
    assert "--resume" in last and str(tmp_path / "run") in last


def test_a_full_disk_at_the_checkpoint_says_so_and_keeps_the_last_one(twelve, tmp_path, capsys, monkeypatch):
    import torch

    from diffclust.engine import atomic

    out = tmp_path / "run"
    assert main(["fit", str(twelve), "--k", "3", *QUICK[:2], "--epochs", "2", *QUICK[4:], "--warmup-epochs", "1", "--out", str(out)]) == 0
    before = (out / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def full_disk_save(state, target, *args, **kwargs):  # torch's own wording for ENOSPC mid-write
        real_save(state, target, *args, **kwargs)
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 4096 vs 4000")

    monkeypatch.setattr(torch, "save", full_disk_save)
    monkeypatch.setattr(atomic, "free_space", lambda path: 1000)
    last = failure(capsys, ["fit", str(twelve), "--k", "3", *QUICK[:2], "--epochs", "3", *QUICK[4:], "--warmup-epochs", "1",
                            "--out", str(out), "--resume"], 1, "the disk is full")
    assert "checkpoint.pt" in last and "needs at least" in last and "intact" in last
    assert (out / "checkpoint.pt").read_bytes() == before
    assert not [path for path in out.iterdir() if path.name.endswith(".tmp")]


def test_no_space_left_while_writing_a_report_is_environmental(run, tmp_path, capsys, monkeypatch):
    from diffclust.report import build

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "report" / "index.html"))

    monkeypatch.setattr(build, "atomic_write_text", no_space)
    failure(capsys, ["report", str(run), "--out", str(tmp_path / "report")], 1, "the disk is full while writing")


@pytest.mark.parametrize("home", ["file", "unwritable"])
def test_an_unusable_diffclust_home_is_named(twelve, tmp_path, capsys, monkeypatch, home):
    target = tmp_path / "home"
    if home == "file":
        target.write_text("not a folder")
    else:
        from diffclust.backbones import tiny_random

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tiny_random.tempfile, "NamedTemporaryFile", refuse)
    monkeypatch.setenv("DIFFCLUST_HOME", str(target))
    failure(capsys, ["fit", str(twelve), "--k", "3", *QUICK, "--out", str(tmp_path / "run")], 1, "DIFFCLUST_HOME")


# ---------------------------------------------------------------------------------- silent overwrites and wrong data
def test_report_out_never_replaces_someone_elses_files(run, tmp_path, capsys):
    theirs = tmp_path / "site"
    theirs.mkdir()
    (theirs / "index.html").write_text("my page")
    failure(capsys, ["report", str(run), "--out", str(theirs)], 2, "holds files that diffclust did not write there")
    assert (theirs / "index.html").read_text() == "my page"
    ours = tmp_path / "ours"
    assert main(["report", str(run), "--out", str(ours)]) == 0
    assert main(["report", str(run), "--out", str(ours)]) == 0  # a report's own folder may be written again
    failure(capsys, ["report", str(run), "--out", str(theirs / "index.html")], 2, "is a file")


def test_a_run_inside_the_data_is_never_read_back_as_images(twelve, tmp_path, capsys):
    data = tmp_path / "photos"
    write_subset(twelve, rows(twelve / "labels.csv"), data)
    (data / "labels.csv").unlink()  # a flat folder of photos
    assert main(["fit", str(data), "--k", "3", *QUICK, "--out", str(data / "myrun"), "--report"]) == 0
    second = tmp_path / "second"
    assert main(["fit", str(data), "--k", "3", *QUICK, "--out", str(second)]) == 0
    assigned = rows(second / "assignments.csv")
    assert len(assigned) == 12 and not any(row["file"].startswith("myrun") for row in assigned)
    assert any(row["file"] == "myrun/" for row in rows(second / "skipped.csv"))


def test_the_default_run_folder_stays_outside_the_data(tmp_path, monkeypatch):
    data = tmp_path / "photos"
    data.mkdir()
    monkeypatch.chdir(data)
    assert default_run_folder(".", "photos") == tmp_path / "runs" / "photos"
    monkeypatch.chdir(tmp_path)
    assert default_run_folder("photos", "photos") == Path("runs") / "photos"


def test_the_map_tooltip_shows_file_names_as_text_never_markup(run):
    from diffclust.report.template import TEMPLATE

    assert "innerHTML" not in TEMPLATE and "createTextNode(point.getAttribute('data-label'))" in TEMPLATE


def test_file_names_that_look_like_formulas_are_neutralised_and_read_back(tmp_path):
    files = ["=HYPERLINK(\"http://x\").jpg", "+1.jpg", "-rm.jpg", "@sum.jpg", "plain.jpg"]
    path = write_assignments(tmp_path / "assignments.csv", files, np.array([0, 1, 0, 1, 0]), np.ones(5))
    cells = [row["file"] for row in rows(path)]
    assert cells == ["'=HYPERLINK(\"http://x\").jpg", "'+1.jpg", "'-rm.jpg", "'@sum.jpg", "plain.jpg"]
    assert list(read_assignments(path)[0]) == files
    assert rows(path)[0]["confidence"] == "1.0000"


# ---------------------------------------------------------------------------------- crashes on valid input
@pytest.mark.parametrize("values", [np.ones((50, 8)), np.ones((20, 400)), np.random.default_rng(0).normal(size=(2, 8))])
def test_k_auto_on_identical_or_too_few_items_is_a_clear_refusal(values):
    with pytest.raises(DiffclustError, match="--k N"):
        choose_k(values)


def test_k_auto_on_three_or_five_wide_items_still_chooses():
    for count in (3, 5):
        assert choose_k(np.random.default_rng(0).normal(size=(count, 400))).k == 2  # PCA(50) cannot run on 3 rows


def test_k_auto_on_identical_feature_rows_through_the_cli(tmp_path, capsys):
    np.save(tmp_path / "same.npy", np.ones((50, 8), dtype=np.float32))
    failure(capsys, ["fit", "--method", "cludi", "--features", str(tmp_path / "same.npy"), "--k", "auto", "--device", "cpu", "--quiet",
                     "--out", str(tmp_path / "run")], 2, "--k N")


def test_as_many_rows_as_clusters_start_from_k_means():
    result = consensus_partition(np.array([[0.0, 1.0], [5.0, 5.0]]), 2, seed=0)
    assert sorted(result.labels.tolist()) == [0, 1] and result.chosen == "kmeans"


def test_a_report_of_few_wide_rows_gets_its_map(tmp_path):
    from diffclust import CLUDI
    from diffclust.report import build_report

    features = np.random.default_rng(0).normal(size=(8, 384)).astype(np.float32)
    CLUDI(2, epochs=1, batch_size=8, init_steps=2, predict_samples=2, predict_steps=2, teacher_steps=2, device="cpu", progress=False,
          output_dir=tmp_path / "run").fit(features)
    page = build_report(tmp_path / "run")
    assert 'class="point"' in page.read_text()


def test_a_damaged_embedding_is_a_damaged_run_file_not_an_unpickling_hint(run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    np.save(copy / "embedding.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    last = failure(capsys, ["report", str(copy)], 2, "damaged")
    assert "embedding.npy" in last and "allow_pickle" not in last and "unsafe" not in last.lower()


# ---------------------------------------------------------------------------------- resuming, damaged side files
def test_resume_with_fewer_epochs_than_done_is_refused(run, twelve, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / ".diffclust.lock").unlink(missing_ok=True)
    failure(capsys, ["fit", str(twelve), "--k", "3", *QUICK[:2], "--epochs", "0", *QUICK[4:], "--out", str(copy), "--resume"], 2,
            "fewer than the 1 already trained")


def test_resuming_a_finished_run_keeps_its_wall_times(run, twelve, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = (copy / "run.json").read_text()
    assert main(["fit", str(twelve), "--k", "3", *QUICK, "--out", str(copy), "--resume"]) == 0
    assert (copy / "run.json").read_text() == before


def test_a_damaged_constants_json_is_recomputed_on_resume(run, twelve, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "cache" / "constants.json").write_text("{broken")
    assert main(["fit", str(twelve), "--k", "3", *QUICK[:2], "--epochs", "2", "--warmup-epochs", "0", *QUICK[4:], "--out", str(copy),
                 "--resume"]) == 0
    assert json.loads((copy / "cache" / "constants.json").read_text())["fingerprint"]


def test_after_a_cache_size_refusal_the_same_command_is_not_called_a_run(twelve, tmp_path, capsys, monkeypatch):
    from diffclust.methods.difc import constants

    real = constants.shutil.disk_usage
    monkeypatch.setattr(constants.shutil, "disk_usage", lambda path: real(path)._replace(free=1000))
    argv = ["fit", str(twelve), "--k", "3", *QUICK, "--out", str(tmp_path / "run")]
    failure(capsys, argv, 1, "The constant cache needs")
    failure(capsys, argv, 1, "The constant cache needs")  # not "already holds a run"
    monkeypatch.setattr(constants.shutil, "disk_usage", real)
    assert main(argv) == 0


# ---------------------------------------------------------------------------------- wrong or missing diagnoses
def test_a_header_only_labels_csv_says_it_lists_no_files(twelve, tmp_path, capsys):
    data = tmp_path / "data"
    write_subset(twelve, rows(twelve / "labels.csv"), data)
    (data / "labels.csv").write_text("file,label,class_name\n")
    failure(capsys, ["fit", str(data), "--k", "3", *QUICK, "--out", str(tmp_path / "run")], 2, "lists no files")


def test_a_negative_k_range_reaches_its_own_check(twelve, tmp_path, capsys):
    last = failure(capsys, ["fit", str(twelve), "--k", "auto", "--k-range", "-3:5", *QUICK, "--out", str(tmp_path / "run")], 2, "-3:5")
    assert "expected one argument" not in last


def test_cludi_labels_for_more_rows_than_features_are_refused(tmp_path, capsys):
    np.save(tmp_path / "f.npy", np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32))
    (tmp_path / "labels.csv").write_text("file,label\n" + "".join(f"{row},{row % 2}\n" for row in range(200)))
    failure(capsys, ["fit", "--method", "cludi", "--features", str(tmp_path / "f.npy"), "--labels", str(tmp_path / "labels.csv"),
                     "--k", "2", "--quiet", "--out", str(tmp_path / "run")], 2, "200 labelled rows for 100 feature rows")


def test_global_switches_work_after_the_command(twelve, tmp_path):
    assert main(["fit", str(twelve), "--k", "3", *QUICK, "--out", str(tmp_path / "run"), "--verbose"]) == 0
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    assert main(["report", str(tmp_path / "run"), "--quiet"]) == 0


@pytest.mark.slow
def test_a_hostile_file_name_runs_no_script_when_its_point_is_hovered(twelve, tmp_path):
    """Run with `python -m pytest -m slow tests/test_hostile_input_2.py` after `apt-get install chromium`."""
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium here: apt-get install chromium")
    data = tmp_path / "data"
    data.mkdir()
    payload = "<img src=x onerror=document.title=1>.png"
    for index, path in enumerate(sorted((twelve / "images").iterdir())[:6]):
        shutil.copy(path, data / (payload if index == 0 else path.name))
    assert main(["fit", str(data), "--k", "2", *QUICK, "--out", str(tmp_path / "run"), "--report"]) == 0
    page = tmp_path / "run" / "report" / "index.html"
    hover = ("<script>document.querySelectorAll('circle.point').forEach(function (p) {"
             " if (p.getAttribute('data-label').indexOf('onerror') >= 0) p.dispatchEvent(new MouseEvent('mouseenter')); });"
             "</script></body>")
    page.write_text(page.read_text().replace("</body>", hover))
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000", "--dump-dom",
                          page.resolve().as_uri()], capture_output=True, text=True, timeout=120).stdout
    tooltip = dom.split('id="tooltip"', 1)[1].split("</div>", 1)[0]
    assert "&lt;img src=x onerror=document.title=1&gt;.png" in tooltip  # shown as text
    assert "<title>1</title>" not in dom and 'src="x"' not in tooltip
