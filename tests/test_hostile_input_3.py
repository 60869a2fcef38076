"""Hostile input, round three (issue 43): what the top-level handler cannot see. A run folder
someone hands you must not pull your files into a report, an image that cannot be shown gets a
placeholder, two reports at once do not trip over each other, and huge but finite features are
clustered or refused with the reason."""

from __future__ import annotations

import csv
import os
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffclust.cli import main
from diffclust.cluster.metrics import hungarian_accuracy
from diffclust.data.images import ImageTooLargeError, load_rgb
from diffclust.errors import DiffclustError
from diffclust.methods.cludi import CLUDI
from diffclust.report.thumbnails import ThumbnailCache

from conftest import SMALL_CLUDI, write_subset
from conftest import cli_failure as failure

QUICK = ["--backbone", "tiny-random", "--epochs", "1", "--no-cluster-guidance", "--device", "cpu", "--quiet"]


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file whose header claims width x height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0\0")) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def run(butterflies, tmp_path_factory) -> Path:
    with open(butterflies / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[::40]
    data = write_subset(butterflies, rows, tmp_path_factory.mktemp("round3") / "data")
    out = tmp_path_factory.mktemp("round3-runs") / "run"
    assert main(["fit", str(data), "--k", "3", *QUICK, "--out", str(out)]) == 0
    return out


def test_a_report_never_copies_a_linked_plot_from_the_run_folder(run, tmp_path, caplog):
    secret = tmp_path / "secret.txt"
    secret.write_text("the user's private file")
    (run / "search.png").symlink_to(secret)
    (run / "k_selection.png").symlink_to(secret)
    try:
        assert main(["report", str(run), "--out", str(tmp_path / "report"), "--quiet"]) == 0
    finally:
        (run / "search.png").unlink()
        (run / "k_selection.png").unlink()
    copied = [path for path in (tmp_path / "report").rglob("*") if path.is_file() and path.read_bytes() == secret.read_bytes()]
    assert copied == [] and not (tmp_path / "report" / "search.png").exists()
    assert "search.png" not in (tmp_path / "report" / "index.html").read_text()
    assert "it is a link" in caplog.text


def test_a_decompression_bomb_is_refused_as_too_large_and_gets_a_placeholder(tmp_path):
    bomb = png_claiming(tmp_path / "bomb.png", 20_000, 20_000)  # 400 MP: PIL itself refuses to open it
    with pytest.raises(ImageTooLargeError, match="megapixel limit"):
        load_rgb(bomb)
    assert ThumbnailCache(tmp_path / "report").thumbnail(bomb) is None


def test_a_thumbnail_is_written_under_a_temp_name_of_its_own(tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(image)
    cache = ThumbnailCache(tmp_path / "report")
    target = tmp_path / "report" / cache._name(image, "plain")
    target.parent.mkdir(parents=True)
    target.with_suffix(".tmp").mkdir()  # what a second report writing the same thumbnail held under the old shared name
    assert cache.thumbnail(image) == f"thumbs/{target.name}" and target.is_file()
    assert sorted(path.name for path in target.parent.iterdir()) == sorted([target.name, target.with_suffix(".tmp").name])


def test_finite_but_huge_features_are_clustered_and_beyond_float32_refused(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 40)
    blobs = (rng.normal(size=(3, 6)) * 8)[labels] + rng.normal(size=(120, 6))
    huge = (blobs * 3e36).astype(np.float32)  # finite in float32; their squares are not
    np.save(tmp_path / "huge.npy", huge)
    assert main(["fit", str(tmp_path / "huge.npy"), "--method", "cludi", "--k", "3", "--epochs", "1", *SMALL_CLUDI, "--teacher-steps", "2",
                 "--predict-samples", "2", "--predict-steps", "2", "--device", "cpu", "--quiet", "--out", str(tmp_path / "run")]) == 0
    assert hungarian_accuracy(labels, CLUDI.load(tmp_path / "run").labels_) >= 0.95
    np.save(tmp_path / "beyond.npy", blobs * 1e300)
    with pytest.raises(DiffclustError, match="beyond float32's range"):
        CLUDI(3).fit(tmp_path / "beyond.npy")


# ---------------------------------------------------------------------------------- nothing of the user's is overwritten
TINY_DDPM = ["--unconditional", "--resolution", "16", "--channels-per-level", "8,16", "--layers-per-block", "1", "--steps", "4",
             "--batch-size", "4", "--warmup-steps", "1", "--checkpoint-every", "4", "--log-every", "2", "--eval-images", "0",
             "--sample-steps", "2", "--device", "cpu", "--quiet"]


def users_folder(folder: Path, *names: str) -> dict[str, bytes]:
    """A folder holding the user's own files (what must survive untouched), and their bytes."""
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"the user's own {name}")
    return {name: (folder / name).read_bytes() for name in names}


def untouched(folder: Path, before: dict[str, bytes]) -> bool:
    after = {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    return after == before


@pytest.mark.parametrize("option, names", [
    ("--out", ("model_index.json", "unet/config.json")),
    ("--write-caption-embeddings", ("tokenizer/tokenizer.json",)),
])
def test_pretrain_never_writes_into_a_folder_it_did_not_make(usps_subset, tmp_path, capsys, option, names):
    theirs = tmp_path / "theirs"
    before = users_folder(theirs, *names)
    argv = ["pretrain", str(usps_subset), option, str(theirs), *TINY_DDPM]
    failure(capsys, argv, 2, "holds files that diffclust did not write there; nothing was overwritten")
    assert untouched(theirs, before)


def test_search_never_writes_into_someone_elses_folder_or_a_finished_run(run, usps_subset, tmp_path, capsys):
    theirs = tmp_path / "theirs"
    before = users_folder(theirs, "search.csv")
    search = ["search", str(usps_subset), "--k", "3", "--backbone", "usps-ddpm", "--quiet"]
    failure(capsys, [*search, "--out", str(theirs)], 2, "holds files that diffclust did not write there")
    assert untouched(theirs, before)
    listing = sorted(path.name for path in run.iterdir())
    failure(capsys, [*search, "--out", str(run)], 2, "did not write there")  # a fit's run folder is not a search's
    assert sorted(path.name for path in run.iterdir()) == listing


def test_a_model_pretrained_inside_the_data_is_never_read_back_as_images(usps_subset, tmp_path):
    from diffclust.data import scan_images

    flat = tmp_path / "flat"
    flat.mkdir()
    for source in sorted((usps_subset / "images").iterdir())[:12]:
        (flat / source.name).write_bytes(source.read_bytes())
    assert main(["pretrain", str(flat), "--out", str(flat / "mymodel"), *TINY_DDPM]) == 0
    assert list((flat / "mymodel").rglob("*.png"))  # the model's sample grid is an image under the data
    collection = scan_images(flat)
    assert len(collection) == 12 and collection.label_source is None and not any("mymodel" in f for f in collection.files)


def test_a_second_pretraining_into_a_busy_folder_is_refused(usps_subset, tmp_path, capsys):
    from diffclust.engine.run_lock import RunFolderLock

    out = tmp_path / "model"
    with RunFolderLock(out):  # another pretraining holds the folder
        failure(capsys, ["pretrain", str(usps_subset), "--out", str(out), *TINY_DDPM], 2, "is in use by another diffclust run")


# ---------------------------------------------------------------------------------- names that are not UTF-8
def test_file_names_that_are_not_utf8_are_clustered_predicted_and_reported(tmp_path, capsys):
    """Old archives and Windows shares hold names in other encodings: Python keeps their bytes as
    lone surrogates, and every hash and CSV keeps them as the disk's bytes, round trip."""
    data = tmp_path / "data"
    data.mkdir()
    for index in range(8):
        name = f"digit{index}".encode() + (b"\xe9" if index % 2 else b"") + b".png"  # Latin-1 'é': not UTF-8
        pixels = np.zeros((16, 16), np.uint8)
        pixels[:, index:index + 4] = 255
        Image.fromarray(pixels, "L").save(os.fsdecode(bytes(data) + b"/" + name))
    for method in (["--method", "diec", "--backbone", "usps-ddpm", "--layer", "mid_block", "--timestep", "150"], QUICK[:2]):
        out = tmp_path / method[1]
        assert main(["fit", str(data), "--k", "2", *method, "--epochs", "1", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
        written = (out / "assignments.csv").read_bytes()
        assert b"digit1\xe9.png" in written and written.count(b"\n") == 9  # the disk's own bytes, a row per image
        assert main(["predict", str(out), str(data), "--out", str(tmp_path / f"{method[1]}.csv"), "--quiet"]) == 0
        assert (tmp_path / f"{method[1]}.csv").read_bytes().count(b"\xe9.png") == 4
    assert main(["report", str(tmp_path / "diec"), "--quiet"]) == 0
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [("--time-budget", "nan"), ("--time-budget", "inf"), ("--resolution", "0"),
                                           ("--checkpoint-every", "0"), ("--log-every", "0"), ("--lr", "-1"), ("--steps", "0"),
                                           ("--eval-seconds", "-5")])
def test_a_pretraining_setting_out_of_range_is_a_one_line_mistake_before_anything_runs(usps_subset, tmp_path, capsys, option, value):
    out = tmp_path / "model"
    with pytest.raises(SystemExit) as exit_:
        main(["pretrain", str(usps_subset), "--out", str(out), "--unconditional", option, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and option in err[0] and "Traceback" not in err[0]
    assert not out.exists()  # nothing left behind


# ---------------------------------------------------------------------------------- a damaged CLUDI model
@pytest.fixture(scope="module")
def cludi_run(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    features = (rng.normal(size=(4, 5)) * 8)[np.repeat(np.arange(4), 30)] + rng.normal(size=(120, 5))
    folder = tmp_path_factory.mktemp("cludi-damage")
    np.save(folder / "features.npy", features.astype(np.float32))
    out = folder / "run"
    assert main(["fit", str(folder / "features.npy"), "--method", "cludi", "--k", "4", "--epochs", "1", *SMALL_CLUDI, "--teacher-steps", "2",
                 "--predict-samples", "2", "--predict-steps", "2", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("change, expected", [
    (lambda t: t["self_labelling.bias"].fill_(float("nan")), "'self_labelling.bias' holds NaN or infinite values"),
    (lambda t: t.update({"self_labelling.weights": torch.cat([t["self_labelling.weights"], t["self_labelling.weights"][:1]])}),
     "'self_labelling.weights' has shape (5, 5), but a model of K = 4 clusters over 5 features has (4, 5)"),
    (lambda t: t.update({name: t[name].T.contiguous() for name in [next(n for n in t if n.startswith("teacher.") and t[n].ndim == 2
                                                                        and t[n].shape[0] != t[n].shape[1])]}),
     "does not fit the saved settings"),
])
def test_a_cludi_model_with_damaged_tensors_is_refused_as_damaged(cludi_run, tmp_path, capsys, change, expected):
    copy = tmp_path / "run"
    shutil.copytree(cludi_run, copy)
    tensors = load_file(copy / "cludi.safetensors")
    if "self_labelling.bias" not in tensors and "self_labelling" in expected:
        pytest.fail("the fixture's fit skipped self-labelling; the test needs its tensors")
    change(tensors)
    save_file(tensors, copy / "cludi.safetensors")
    failure(capsys, ["predict", str(copy), str(cludi_run.parent / "features.npy"), "--out", str(tmp_path / "p.csv")], 2,
            "This run folder is damaged")
    with pytest.raises(DiffclustError, match=re.escape(expected)):
        CLUDI.load(copy)


def test_verifying_images_keeps_the_decoded_pixels_in_flight_under_the_budget(tmp_path, monkeypatch):
    """Ten files near the pixel limit must not be decoded at once: the verification's threads share
    a budget of pixels (here 2.5 images' worth), and small images still pass side by side."""
    import threading
    import time

    from diffclust.data import collection

    for index in range(6):
        Image.fromarray(np.full((500, 500), index * 40, np.uint8), "L").save(tmp_path / f"big{index}.png")  # 0.25 MP each
    budget = collection.PixelBudget(625_000)
    monkeypatch.setattr(collection, "VERIFY_BUDGET", budget)
    in_flight, peak, lock, real = [0], [0], threading.Lock(), collection.load_rgb

    def slow_decode(path, size_hint=None):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], budget.used)
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return real(path, size_hint)

    monkeypatch.setattr(collection, "load_rgb", slow_decode)
    assert len(collection.scan_images(tmp_path, workers=8)) == 6
    assert 0 < peak[0] <= 625_000 and budget.used == 0  # at most two 0.25 MP images at once, and all released


def test_a_feature_file_numpy_will_not_read_safely_is_one_line_that_never_advises_unpickling(tmp_path, capsys):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 2), }".ljust(200_000) + "\n"  # a 200 KB header
    path = tmp_path / "wide-header.npy"
    path.write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header.encode() + np.zeros((4, 2), "<f4").tobytes())
    line = failure(capsys, ["fit", str(path), "--method", "cludi", "--k", "2"], 2, "Could not read the feature file")
    assert "allow_pickle" not in line and "may not be safe to load securely" in line


def test_a_report_shows_no_image_from_outside_the_run_s_data_folder(butterflies, tmp_path, caplog):
    with open(butterflies / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[::60]
    data = write_subset(butterflies, rows, tmp_path / "data")
    out = tmp_path / "run"
    assert main(["fit", str(data), "--k", "2", *QUICK, "--out", str(out)]) == 0
    private = tmp_path / "private.jpg"  # the user's own picture, outside the data
    Image.fromarray(np.full((64, 64, 3), (255, 0, 255), np.uint8)).save(private)
    replaced = data / "images" / rows[0]["file"]
    replaced.unlink()
    replaced.symlink_to(private)  # the run's data now links out of its folder
    assert main(["report", str(out), "--out", str(tmp_path / "report"), "--quiet"]) == 0
    thumbnails = list((tmp_path / "report" / "thumbs").glob("*.jpg"))
    assert thumbnails  # the other images are shown
    magenta = [t for t in thumbnails if np.abs(np.asarray(Image.open(t), dtype=int) - [255, 0, 255]).mean() < 30]
    assert magenta == [] and "outside the run's data folder" in caplog.text


def test_a_library_warning_on_the_command_line_is_one_line_without_its_source_path(capsys):
    import warnings

    from diffclust.cli.main import configure_logging

    with warnings.catch_warnings():
        configure_logging(verbose=False, quiet=True)
        warnings.simplefilter("always")
        warnings.warn_explicit("Graph is not fully connected,\n  spectral embedding may not work as expected.", UserWarning,
                               "/venv/lib/python3.11/site-packages/sklearn/manifold/_spectral_embedding.py", 325)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["WARNING diffclust: sklearn UserWarning: Graph is not fully connected, spectral embedding may not work as expected."]


# ---------------------------------------------------------------------------------- numba's compile cache (item 7)
KERNEL = "import numba\n\n\n@numba.njit(cache=True)\ndef add_one(x):\n    return x + 1\n"


def fresh_kernel(folder: Path, name: str):
    """`add_one` from folder/kernel.py, imported as a new module (a new numba dispatcher over the same cache files)."""
    import importlib.util

    source = folder / "kernel.py"
    if not source.exists():
        source.write_text(KERNEL)
    spec = importlib.util.spec_from_file_location(name, source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.add_one


@pytest.fixture
def guarded(monkeypatch):
    from diffclust.cluster import numba_cache

    numba_cache.guard_numba_cache()
    monkeypatch.setattr(numba_cache, "_said", set())  # each test sees its own first warning
    return numba_cache


@pytest.mark.parametrize("damage", ["random bytes in the index", "a truncated data file"])
def test_a_damaged_numba_cache_is_recompiled_and_rewritten_not_fatal(guarded, tmp_path, caplog, damage):
    first = fresh_kernel(tmp_path, "kernel_first")
    assert first(1) == 2 and first.stats.cache_misses
    index, = (tmp_path / "__pycache__").glob("*.nbi")
    data, = (tmp_path / "__pycache__").glob("*.nbc")
    if damage == "random bytes in the index":
        index.write_bytes(np.random.default_rng(0).bytes(300))
    else:
        data.write_bytes(data.read_bytes()[:40])
    with caplog.at_level("WARNING", logger="diffclust.cluster.numba_cache"):
        damaged = fresh_kernel(tmp_path, "kernel_damaged")
        assert damaged(41) == 42
    assert caplog.text.count("could not be read") == 1 and "compiling instead" in caplog.text
    caplog.clear()
    repaired = fresh_kernel(tmp_path, "kernel_repaired")  # the next process reads the rewritten entry
    assert repaired(1) == 2 and sum(repaired.stats.cache_hits.values()) == 1 and not caplog.text


def test_a_cache_that_cannot_be_written_or_placed_costs_a_compile_not_the_run(guarded, tmp_path, monkeypatch, caplog):
    import errno

    from numba.core import caching

    def disk_full(self, overloads):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(caching.IndexDataCacheFile, "_save_index", disk_full)
    with caplog.at_level("WARNING", logger="diffclust.cluster.numba_cache"):
        assert fresh_kernel(tmp_path, "kernel_full_disk")(1) == 2
        namespace: dict = {}  # a source no locator can place a cache beside (as a read-only install with no writable home)
        exec(compile(KERNEL, str(tmp_path / "gone" / "kernel.py"), "exec"), namespace)
        assert namespace["add_one"](2) == 3
    assert "could not be written (OSError: [Errno 28] No space left on device)" in caplog.text
    assert "no writable folder for its compile cache" in caplog.text and "NUMBA_CACHE_DIR" in caplog.text


def test_umap_and_pynndescent_are_imported_behind_the_guard():
    import inspect

    from diffclust.cluster import manifold, neighbours

    for function in (manifold.umap_embedding, neighbours.approximate_neighbours):
        source = inspect.getsource(function)
        assert source.index("guard_numba_cache()") < min(source.index(word) for word in ("import umap", "from pynndescent") if word in source)


def test_recorded_feature_rows_show_only_images_of_the_one_data_folder_they_were_read_from(tmp_path, caplog):
    from diffclust.encoders.extraction import images_of_one_data_folder

    data, elsewhere = tmp_path / "work" / "data", tmp_path / "private"
    (data / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    for path in (data / "a.png", data / "sub" / "b.png", data / "c.png", elsewhere / "secret.png", elsewhere / "x.png"):
        Image.new("L", (4, 4)).save(path)
    (data / "link.png").symlink_to(elsewhere / "secret.png")
    recorded = {
        "a.png": data / "a.png",                             # as `diffclust features` records it
        "sub/b.png": data / "sub" / "b.png",
        "c.png": Path("data") / "c.png",                      # relative: read against the table's folder, not the current one
        "gone.png": data / "gone.png",                        # deleted since: not shown, not suspicious
        "link.png": data / "link.png",                        # a link that leaves the data
        "../private/secret.png": data / ".." / "private" / "secret.png",  # climbs out
        "x.png": elsewhere / "x.png",                         # another folder
        "renamed.png": data / "a.png",                        # the path does not end in its file name
    }
    with caplog.at_level("WARNING"):
        shown = images_of_one_data_folder(recorded, tmp_path / "work")
    assert shown == {"a.png": data / "a.png", "sub/b.png": data / "sub" / "b.png", "c.png": tmp_path / "work" / "data" / "c.png"}
    assert "leaves out 4 recorded image(s)" in caplog.text and str(data) in caplog.text


def test_a_full_disk_while_building_tiny_random_is_one_line_naming_diffclust_home(tmp_path, monkeypatch, capsys):
    from safetensors import SafetensorError

    from diffclust.backbones import tiny_random
    from diffclust.engine import atomic

    def full_disk_build(folder):  # safetensors' own wording for ENOSPC, after part of the model was written
        folder.mkdir(parents=True)
        (folder / "model_index.json").write_text("{}")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setenv("DIFFCLUST_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(tiny_random, "build_tiny_random", full_disk_build)
    monkeypatch.setattr(atomic, "free_space", lambda path: 1000)
    for name in "abc":
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    line = failure(capsys, ["fit", str(tmp_path), "--k", "2", *QUICK, "--out", str(tmp_path / "run")], 1,
                   "the disk is full while building the built-in 'tiny-random' backbone in")
    assert "DIFFCLUST_HOME" in line and "SafetensorError" not in line and "unexpected" not in line
    assert list((tmp_path / "home" / "backbones").iterdir()) == []  # nothing half-built is kept


def test_a_checkpoint_from_before_a_resume_key_existed_still_resumes_and_recorded_keys_are_still_checked(tmp_path):
    from diffclust.engine.checkpoint import checkpoint_path, load_resume_state, save_run_checkpoint

    earlier = {"data": "12 files", "n_clusters": 3}  # written before DiEC recorded layer_ and timestep_
    save_run_checkpoint(tmp_path, True, {"network": {}}, 1, [], earlier, ("data", "n_clusters"))
    now = {**earlier, "layer_": "mid_block", "timestep_": 150}
    keys = ("data", "layer_", "timestep_", "n_clusters")
    assert load_resume_state(checkpoint_path(tmp_path), now, keys)["epochs_done"] == 1
    save_run_checkpoint(tmp_path, True, {"network": {}}, 1, [], {**now, "timestep_": 149}, keys)
    with pytest.raises(DiffclustError, match=r"timestep_ \(--timestep, or the search's search.json\): 149 -> 150"):
        load_resume_state(checkpoint_path(tmp_path), now, keys)
