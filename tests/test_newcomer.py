"""A newcomer's first commands (issue 27): the bundled usps-ddpm backbone, one-line argument
errors, the same switches everywhere, and defaults that need no extra option."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffclust.cli import main

from conftest import SMALL_CLUDI, write_subset


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


QUICK = ["--backbone", "tiny-random", "--epochs", "1", "--no-cluster-guidance", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def digits(usps, tmp_path_factory) -> Path:
    """40 USPS digits (4 of each class) with their labels."""
    picked, seen = [], {}
    for row in rows(usps / "labels.csv"):
        if seen.get(row["label"], 0) < 4:
            seen[row["label"]] = seen.get(row["label"], 0) + 1
            picked.append(row)
    return write_subset(usps, picked, tmp_path_factory.mktemp("digits") / "data")


def test_usps_ddpm_ships_inside_the_package_with_its_training_record():
    from diffclust.backbones import UnconditionalBackbone, load_backbone
    from diffclust.backbones.registry import BUNDLED

    backbone = load_backbone("usps-ddpm")
    assert isinstance(backbone, UnconditionalBackbone) and backbone.reference == "usps-ddpm"
    assert backbone.latent_shape(16) == (1, 16, 16) and backbone.unet.dtype == torch.float32  # fp16 on disk, fp32 loaded
    weights = sum(path.stat().st_size for path in (BUNDLED / "usps-ddpm").rglob("*.safetensors"))
    assert weights < 4 * 2**20
    record = json.loads((BUNDLED / "usps-ddpm" / "training" / "record.json").read_text())
    assert record["steps"] == 1500 and "--unconditional" in record["command"] and record["final_loss"] < 0.1


def test_usps_ddpm_clusters_digits_on_the_cpu(digits, tmp_path):
    out = tmp_path / "run"
    assert main(["fit", str(digits), "--method", "diec", "--k", "10", "--backbone", "usps-ddpm", "--epochs", "2",
                 "--layer", "mid_block", "--timestep", "150", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    assert len(rows(out / "assignments.csv")) == 40


def test_colour_photos_are_refused_by_a_grey_digit_model(twelve, tmp_path, capsys):
    assert main(["fit", str(twelve), "--method", "diec", "--k", "3", "--backbone", "usps-ddpm", "--device", "cpu", "--quiet",
                 "--out", str(tmp_path / "run")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "one-channel model at 16 px" in last and "colour images" in last
    assert not (tmp_path / "run" / "assignments.csv").exists()


def test_a_few_colour_photos_among_grey_digits_are_clustered_with_a_warning(digits, twelve, tmp_path, caplog):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for source in sorted((digits / "images").iterdir())[:8] + sorted((twelve / "images").iterdir())[:8]:
        shutil.copy(source, mixed / source.name)
    with caplog.at_level("WARNING"):
        assert main(["fit", str(mixed), "--method", "diec", "--k", "2", "--backbone", "usps-ddpm", "--epochs", "1", "--layer", "mid_block",
                     "--timestep", "150", "--device", "cpu", "--quiet", "--out", str(tmp_path / "run")]) == 0
    assert "8 of the 16 images checked are in colour" in caplog.text and "colour is lost" in caplog.text


def test_a_missing_option_is_one_line_naming_it(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "somewhere"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["diffclust fit: error: the following arguments are required: --k (see diffclust fit --help)"]


def test_evaluate_takes_a_run_folder_and_predict_a_default_output(twelve, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", str(twelve), "--k", "3", *QUICK, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    assert "Scored 12 images" in capsys.readouterr().out
    assert main(["predict", str(out), str(twelve), "--quiet"]) == 0
    assert len(rows(out / "predictions.csv")) == 12
    assert main(["predict", str(out), str(twelve), "--quiet"]) == 0  # its own file may be written again


def test_feature_files_of_the_same_name_get_their_own_run_folders(tmp_path, monkeypatch):
    from diffclust.cli import build_parser, fit_input

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "features.npy", np.ones((4, 2), dtype=np.float32))
    monkeypatch.chdir(tmp_path)
    names = {fit_input(build_parser().parse_args(["fit", "--method", "cludi", "--features", f"{name}/features.npy", "--k", "2"]))[2]
             for name in ("a", "b")}
    assert names == {"a-features", "b-features"}


def test_progress_in_a_log_is_whole_lines_not_carriage_returns(monkeypatch):
    from diffclust.engine.runtime import progress

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress(total=1000, desc="encoding")
    for _ in range(1000):
        bar.update(1)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n") and 2 <= text.count("\n") <= 12
    assert "100%" in text.splitlines()[-1] and "1000/1000" in text.splitlines()[-1]


def test_a_tiny_random_report_says_its_clusters_mean_nothing_and_shows_the_resolution_used(twelve, tmp_path):
    from diffclust.report import build_report

    out = tmp_path / "run"
    assert main(["fit", str(twelve), "--k", "3", *QUICK, "--out", str(out)]) == 0
    html = build_report(out, prototypes=False).read_text()
    assert "tiny-random" in html and "mean nothing" in html
    assert re.search(r"resolution=\d+", html) and "resolution=None" not in html
    assert 'id="legend-cluster"' in html and "cluster 0</span>" in html  # the map's colours, named
    assert 'id="legend-class"' in html and "Red disc (Rota rubra)" in html.split('id="legend-class"', 1)[1].split("</div>", 1)[0]


MISTAKES = {  # what a newcomer gets wrong -> what the one-line answer says
    "a mistyped folder": (["fit", "{tmp}/no-such-folder", "--k", "3"], "does not exist"),
    "a folder without images": (["fit", "{tmp}/empty", "--k", "3", "--backbone", "usps-ddpm"], "No usable images"),
    "a misspelt built-in backbone": (["fit", "{digits}", "--k", "3", "--backbone", "usps-dpm"], "Did you mean 'usps-ddpm'"),
    "a backbone folder without unet/": (["fit", "{digits}", "--k", "3", "--backbone", "{tmp}/empty"], "no unet/ sub-folder"),
    "SD-1.5 not downloaded, offline": (["fit", "{digits}", "--k", "3"], "not in the local Hugging Face cache"),
    "the search on a folder without images": (["search", "{tmp}/empty", "--k", "3", "--backbone", "usps-ddpm"], "No usable images"),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_mistake_is_answered_before_torch_loads_and_creates_nothing(mistake, tmp_path):
    import subprocess

    (tmp_path / "empty").mkdir()
    (tmp_path / "digits").mkdir()
    Image.new("L", (16, 16)).save(tmp_path / "digits" / "a.png")
    argv, says = MISTAKES[mistake]
    argv = [part.format(tmp=tmp_path, digits=tmp_path / "digits") for part in argv] + ["--out", str(tmp_path / "run")]
    script = f"import sys; from diffclust.cli import main; code = main({argv!r}); print(code, 'torch' in sys.modules)"
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=environment)
    assert done.stdout.split() == ["2", "False"] and says in done.stderr, done.stderr
    assert not (tmp_path / "run").exists()


def test_a_fit_that_fails_before_it_starts_leaves_no_run_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["fit", str(tmp_path / "empty"), "--k", "3", *QUICK, "--out", str(tmp_path / "run")]) == 2
    assert "No usable images" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_report_of_labelled_feature_rows_scores_them_and_names_the_rows(tmp_path, capsys):
    from diffclust.report import build_report

    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (20, 8)), rng.normal(6, 1, (20, 8))]).astype(np.float32)
    np.save(tmp_path / "f.npy", features)
    np.save(tmp_path / "labels.npy", np.repeat([0, 1], 20))
    out = tmp_path / "run"
    assert main(["fit", "--method", "cludi", "--features", str(tmp_path / "f.npy"), "--labels", str(tmp_path / "labels.npy"), "--k", "2",
                 "--epochs", "1", *SMALL_CLUDI, "--teacher-steps", "2", "--predict-samples", "2", "--predict-steps", "2", "--device", "cpu", "--quiet",
                 "--out", str(out)]) == 0
    html = build_report(out).read_text()
    assert "Against the labels" in html and 'id="legend-class"' in html
    assert '<div class="noimage"' in html and "background:#eee" not in html
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0 and "Scored 40 images" in capsys.readouterr().out


def test_a_report_of_feature_rows_shows_the_images_diffclust_features_recorded(twelve, tmp_path):
    from diffclust import scan_images
    from diffclust.encoders.extraction import write_row_names
    from diffclust.report import build_report

    collection = scan_images(twelve)
    features = np.random.default_rng(0).normal(size=(len(collection), 8)).astype(np.float32)
    features[:, 0] += 8 * (np.asarray(collection.labels) % 2)
    np.save(tmp_path / "features.npy", features)
    write_row_names(tmp_path / "features.npy", collection)  # as `diffclust features` leaves it, without running an encoder
    out = tmp_path / "run"
    assert main(["fit", "--method", "cludi", "--features", str(tmp_path / "features.npy"), "--k", "2", "--epochs", "1", *SMALL_CLUDI, "--teacher-steps", "2",
                 "--predict-samples", "2", "--predict-steps", "2", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    html = build_report(out).read_text()
    shown = re.findall(r'<img class="plain" src="[^"]+" alt="([^"]+)"', html)
    assert shown and set(shown) <= set(collection.files) and '<div class="noimage"' not in html
    assert "Red disc (Rota rubra)" in html  # the rows' labels came with their names from files.csv


def test_evaluate_loads_neither_a_model_library_nor_scikit_learn(twelve, tmp_path):
    import subprocess

    labels = twelve / "labels.csv"
    (tmp_path / "a.csv").write_text("file,cluster,confidence,status\n" + "".join(f"{row['file']},{int(row['label']) % 2},1.0,ok\n"
                                                                          for row in rows(labels)))
    script = ("import sys; from diffclust.cli import main; "
              f"code = main(['evaluate', {str(tmp_path / 'a.csv')!r}, '--labels', {str(labels)!r}]); "
              "print(code, 'torch' in sys.modules, 'sklearn' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "0 False False" and "Scored 12 images" in done.stdout


def test_labels_written_as_class_names_are_scored_and_read_by_fit(twelve, tmp_path, capsys):
    files = [row["file"] for row in rows(twelve / "labels.csv")]
    names = ["square" if index % 2 else "circle" for index in range(len(files))]
    (tmp_path / "a.csv").write_text("file,cluster,confidence,status\n" + "".join(f"{f},{i % 2},1.0,ok\n" for i, f in enumerate(files)))
    (tmp_path / "truth.csv").write_text("file,label\n" + "".join(f"{f},{n}\n" for f, n in zip(files, names)))
    assert main(["evaluate", str(tmp_path / "a.csv"), "--labels", str(tmp_path / "truth.csv")]) == 0
    out = capsys.readouterr().out
    assert "class names, numbered in sorted order: 0 = circle, 1 = square" in out and "ACC 100.00%" in out
    assert main(["evaluate", str(tmp_path / "a.csv"), "--labels", str(tmp_path / "truth.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == {"0": "circle", "1": "square"}

    data = tmp_path / "data"  # the same names in a data folder's labels.csv: fit reads them as labels with class names
    shutil.copytree(twelve / "images", data / "images")
    with open(data / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("file", "label"), *zip(files, names)])
    from diffclust import scan_images

    collection = scan_images(data)
    assert list(collection.labels) == [0 if n == "circle" else 1 for n in names]
    assert {record.class_name for record in collection.records} == {"circle", "square"}
