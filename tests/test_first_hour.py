"""What a new user meets first: fast start-up, honest warm-up, warnings, label sources, predict
inputs, offline errors, quiet output, the search plot."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffclust.backbones import hub
from diffclust.backbones.registry import TINY_RANDOM_WARNING, load_backbone
from diffclust.cli import main
from diffclust.data import scan_images
from diffclust.data.collection import collect_images
from diffclust.errors import BackboneNotFoundError, DiffclustError
from diffclust.methods.diec.search import SearchEvaluation, SearchResult
from diffclust.methods.diec.search_report import write_search_plot
from diffclust.methods.difc import DiFiC

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_python(code: str, **env) -> str:
    environment = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    environment.update(env)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# ---------------------------------------------------------------------------------- start-up
def test_import_and_the_cli_parser_load_no_model_library():
    loaded = run_python("import sys, diffclust, diffclust.cli; diffclust.cli.build_parser(); "
                        "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'sklearn', 'accelerate') if m in sys.modules))")
    assert loaded == "[]"


def test_importing_diffclust_sets_the_passive_openmp_wait_policy_unless_set():
    assert run_python("import os, diffclust; print(os.environ['OMP_WAIT_POLICY'])") == "PASSIVE"
    assert run_python("import os, diffclust; print(os.environ['OMP_WAIT_POLICY'])", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_public_names_still_resolve_lazily():
    import diffclust

    assert diffclust.DiFiC is DiFiC and "DiFiC" in dir(diffclust)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        diffclust.Nope  # noqa: B018


def test_version_and_argument_errors_come_from_argparse(capsys):
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0 and capsys.readouterr().out.strip() == "diffclust 0.1.0"
    with pytest.raises(SystemExit) as missing:
        main(["fit", "data"])
    assert missing.value.code == 2 and "--k" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- warm-up
def test_auto_warm_up_keeps_the_papers_ratio_and_leaves_the_head_an_epoch():
    assert [DiFiC(epochs=e).resolved_warmup_epochs() for e in (250, 10, 2, 1, 0)] == [100, 4, 1, 0, 0]
    assert DiFiC(epochs=5, warmup_epochs=3).resolved_warmup_epochs() == 3


def test_a_warm_up_that_swallows_the_run_is_refused_by_name():
    with pytest.raises(DiffclustError, match=r"warmup_epochs \(100\) must be less than epochs \(2\)"):
        DiFiC(epochs=2, warmup_epochs=100)._check_settings()
    DiFiC(epochs=2, warmup_epochs=100, cluster_guidance=False)._check_settings()  # no head to starve: fine
    with pytest.raises(DiffclustError, match="warmup_epochs must be 'auto' or an integer"):
        DiFiC(warmup_epochs=-1)._check_settings()


@pytest.mark.parametrize("ratio", [-1, float("nan"), float("inf"), "1", True])
def test_a_cluster_gradient_ratio_that_is_not_a_finite_number_is_refused_by_name(ratio):
    with pytest.raises(DiffclustError, match=r"cluster_gradient_ratio \(--cluster-gradient-ratio\) must be a finite number >= 0"):
        DiFiC(cluster_gradient_ratio=ratio)._check_settings()
    for fine in (None, 0, 0.5, 3):
        DiFiC(cluster_gradient_ratio=fine)._check_settings()


# ---------------------------------------------------------------------------------- warnings and logging
def test_tiny_random_says_its_clusters_mean_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="diffclust"):
        load_backbone("tiny-random")
    assert [record.message for record in caplog.records].count(TINY_RANDOM_WARNING) == 1


def test_an_incomplete_tiny_random_is_rebuilt_and_a_build_that_cannot_write_waits(tmp_path, monkeypatch):
    """Under torchrun, transformers writes the text encoder on rank 0 only: an earlier version
    could rename a non-zero rank's incomplete build into the cache. Such a copy is rebuilt; a
    process whose own build comes out incomplete waits for a complete one instead."""
    from diffclust.backbones import tiny_random

    monkeypatch.setenv("DIFFCLUST_HOME", str(tmp_path))
    target = tmp_path / "backbones" / f"tiny-random-v{tiny_random.VERSION}"
    (target / "text_encoder").mkdir(parents=True)
    (target / "model_index.json").write_text("{}")
    assert not tiny_random.is_complete(target)
    assert tiny_random.ensure_tiny_random() == target and tiny_random.is_complete(target)

    real_build = tiny_random.build_tiny_random

    def rank_one_build(folder):  # what a non-zero rank gets: everything but the text encoder's files
        real_build(folder)
        shutil.rmtree(folder / "text_encoder")

    monkeypatch.setattr(tiny_random, "build_tiny_random", rank_one_build)
    monkeypatch.setattr(tiny_random, "BUILD_WAIT_SECONDS", 1)
    shutil.rmtree(target)
    with pytest.raises(DiffclustError, match="incomplete and no process finished building it"):
        tiny_random.ensure_tiny_random()
    assert not target.exists()  # the incomplete build was not renamed into place

    import threading  # rank 0 finishes while this process waits
    monkeypatch.setattr(tiny_random, "BUILD_WAIT_SECONDS", 60)
    other = threading.Timer(0.5, lambda: (real_build(tmp_path / "rank0"), os.replace(tmp_path / "rank0", target)))
    other.start()
    assert tiny_random.ensure_tiny_random() == target and tiny_random.is_complete(target)
    other.join()


def test_cli_logging_has_one_handler_and_leaves_the_root_logger_alone(capsys):
    from diffclust.cli import configure_logging

    root_handlers = list(logging.getLogger().handlers)
    configure_logging(verbose=False, quiet=False)
    configure_logging(verbose=False, quiet=False)
    logging.getLogger("diffclust.test").warning("said once")
    assert capsys.readouterr().err.count("said once") == 1
    assert logging.getLogger().handlers == root_handlers


# ---------------------------------------------------------------------------------- backbone names, offline
def test_a_misspelt_backbone_fails_at_once_with_the_built_ins(monkeypatch):
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: pytest.fail("no network look-up for a name that is no hub id"))
    with pytest.raises(BackboneNotFoundError, match=r"not a built-in name \(usps-ddpm, usps-text, tiny-random\).*Did you mean 'tiny-random'\?"):
        load_backbone("tiny-randm")


def test_a_hub_id_missing_offline_fails_without_touching_the_network(monkeypatch):
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: pytest.fail("HF_HUB_OFFLINE is set: no look-up"))
    with pytest.raises(BackboneNotFoundError, match="not in the local Hugging Face cache"):
        load_backbone("nobody/no-such-model")


def test_without_network_a_missing_hub_id_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    probes = []
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: probes.append(1) or False)
    with pytest.raises(BackboneNotFoundError, match="the hub cannot be reached"):
        load_backbone("nobody/no-such-model")
    assert probes == [1]


def test_a_cached_hub_model_loads_from_its_snapshot_and_keeps_its_name(monkeypatch):
    from diffclust.backbones.tiny_random import ensure_tiny_random

    monkeypatch.setattr(hub, "cached_snapshot", lambda repo_id: ensure_tiny_random())
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: pytest.fail("a cached model needs no network"))
    backbone = load_backbone("someone/cached-model")
    assert backbone.reference == "someone/cached-model" and backbone.token_dim == 32


# ---------------------------------------------------------------------------------- labels from folders
def _dated_photos(butterflies: Path, folder: Path) -> Path:
    sources = sorted((butterflies / "images").iterdir())[:6]
    for index, source in enumerate(sources):
        year = folder / ("2023" if index < 3 else "2024")
        year.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, year / source.name)
    return folder


def test_sub_folder_labels_are_announced_and_can_be_turned_off(butterflies, tmp_path):
    folder = _dated_photos(butterflies, tmp_path / "photos")
    labelled = scan_images(folder)
    assert labelled.describe_labels() == "sub-folder names: 2023, 2024" and labelled.labels.tolist() == [0, 0, 0, 1, 1, 1]
    plain = scan_images(folder, folder_labels=False)
    assert plain.labels is None and plain.describe_labels() is None and len(plain) == 6
    assert scan_images(butterflies).describe_labels() == "labels.csv"


def test_fit_says_where_labels_came_from_and_evaluate_reads_the_same_folder(butterflies, tmp_path, capsys):
    folder = _dated_photos(butterflies, tmp_path / "photos")
    fit = ["fit", str(folder), "--k", "2", "--backbone", "tiny-random", "--epochs", "1", "--no-cluster-guidance", "--device", "cpu", "--quiet"]
    assert main([*fit, "--out", str(tmp_path / "run")]) == 0
    assert "Against the labels from sub-folder names: 2023, 2024" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "run" / "assignments.csv"), "--labels", str(folder)]) == 0
    assert "Scored 6 images" in capsys.readouterr().out
    assert main([*fit, "--no-folder-labels", "--out", str(tmp_path / "plain")]) == 0
    assert "Against" not in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "plain" / "assignments.csv"), "--labels", str(folder), "--split", "test"]) == 2
    assert "class sub-folders have no splits" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- inputs
def test_every_kind_of_image_input_becomes_the_same_pixels(butterflies):
    paths = sorted((butterflies / "images").iterdir())[:3]
    pictures = [Image.open(path).convert("RGB") for path in paths]
    arrays = [np.asarray(picture) for picture in pictures]
    as_files = collect_images([str(path) for path in paths])
    assert as_files.files == [str(path) for path in paths] and as_files.root is None
    assert collect_images(str(paths[0])).files == [str(paths[0])]
    from_memory = [collect_images(pictures), collect_images(arrays), collect_images(np.stack([arrays[0]] * 2))]
    assert [collection.files for collection in from_memory] == [["image-0", "image-1", "image-2"]] * 2 + [["image-0", "image-1"]]
    for collection in (as_files, *from_memory[:2]):
        assert [np.array_equal(np.asarray(record.rgb()), array) for record, array in zip(collection.records, arrays)] == [True] * 3
    assert np.array_equal(np.asarray(collect_images(arrays[0][..., 0]).records[0].rgb())[..., 1], arrays[0][..., 0])  # grayscale


def test_bad_image_inputs_are_clear_errors(tmp_path):
    with pytest.raises(DiffclustError, match="not an image file"):
        collect_images([str(tmp_path)])
    with pytest.raises(DiffclustError, match="does not exist"):
        collect_images([str(tmp_path / "missing.jpg")])
    with pytest.raises(DiffclustError, match="uint8"):
        collect_images(np.full((8, 8, 3), 300.0))
    with pytest.raises(DiffclustError, match="Cannot read images from a dict"):
        collect_images({"a": 1})


# ---------------------------------------------------------------------------------- the search plot
def test_the_search_plot_draws_what_was_evaluated_on_a_true_timestep_axis(tmp_path):
    evaluations = [SearchEvaluation("down_blocks.0", 100, 2.0, "probe"), SearchEvaluation("mid_block", 100, 5.0, "probe"),
                   SearchEvaluation("mid_block", 618, 3.0, "timestep"), SearchEvaluation("mid_block", 382, 7.0, "timestep"),
                   SearchEvaluation("mid_block", 236, float("-inf"), "timestep")]
    result = SearchResult("two-stage", "calinski_harabasz", ["down_blocks.0", "mid_block", "up_blocks.0"], "mid_block", 382, 7.0,
                          evaluations, feature_passes=4)
    assert result.curves() == {"down_blocks.0": [(100, 2.0)], "mid_block": [(100, 5.0), (382, 7.0), (618, 3.0)]}
    assert write_search_plot(tmp_path / "search.png", result).read_bytes()[:8] == PNG_MAGIC


# ---------------------------------------------------------------------------------- quiet
def test_quiet_fit_prints_no_progress_bars_and_warns_about_tiny_random_once(butterflies, tmp_path):
    folder = _dated_photos(butterflies, tmp_path / "photos")
    environment = {**os.environ, "DIFFCLUST_HOME": str(tmp_path / "home")}  # a first use: tiny-random is built (and saved) here
    command = [sys.executable, "-m", "diffclust.cli", "fit", str(folder), "--k", "2", "--backbone", "tiny-random", "--epochs", "1",
               "--no-cluster-guidance", "--device", "cpu", "--quiet", "--out", str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "%|" not in result.stderr and "Loading weights" not in result.stderr and "Writing model shards" not in result.stderr
    assert result.stderr.count("random weights") == 1
    assert json.loads((tmp_path / "run" / "difc.json").read_text())["state"]["assigned_by"] == "kmeans"
