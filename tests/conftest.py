"""Test set-up: no network, built-in backbones and data in a private folder, data the tests
generate or the package ships (the suite needs nothing beside the checkout)."""

from __future__ import annotations

import csv
import getpass
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests must never reach the network
if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers share two cores: one torch thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # and one numba thread (UMAP, pynndescent): numba's pool beside the other worker's torch loop
    # made a 20 s pretraining fixture take 300-400 s (measured: three test files, 195 s -> 72 s)
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# torch.compile's cache would otherwise stay in the temp folder after the run: keep it in pytest's own folder there
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}" / "torchinductor"))

REPO = Path(__file__).resolve().parents[1]
#: SD-1.5's real configs (the JSON files only): the full-size architecture with random weights
SD15_CONFIG = Path(__file__).resolve().parent / "fixtures" / "sd15-config"


@pytest.fixture(scope="session", autouse=True)
def private_diffclust_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("diffclust-home")
    os.environ["DIFFCLUST_HOME"] = str(home)
    yield home


def write_subset(source: Path, rows: list[dict], folder: Path) -> Path:
    """A data set folder holding `rows` of source's labels.csv and their images."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        shutil.copy(source / "images" / row["file"], folder / "images" / row["file"])
    return folder


def cli_failure(capsys, argv: list[str], code: int, expected: str) -> str:
    """Run the CLI expecting a failure: exit `code`, no traceback, and a last line
    'diffclust <command>: error: ...' that contains `expected`."""
    from diffclust.cli import main

    try:
        returned = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        returned = exit_.code
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert returned == code and "Traceback" not in err, err
    assert last.startswith(f"diffclust {argv[0]}: error:") and expected in last, last
    return last


@pytest.fixture(scope="session")
def butterflies(tmp_path_factory) -> Path:
    """416 labelled colour photos of 10 classes (generated; butterflies10's layout, half its counts)."""
    from generated_data import BUTTERFLY_COUNTS, write_photo_set

    return write_photo_set(tmp_path_factory.mktemp("photos10") / "photos10", BUTTERFLY_COUNTS)


@pytest.fixture(scope="session")
def photo_root(tmp_path_factory) -> Path:
    """A small stand-in for ../shared/data's photo sets (for the mini corpus and the GPU lease)."""
    from generated_data import write_photo_root

    return write_photo_root(tmp_path_factory.mktemp("photo-root"))


@pytest.fixture(scope="session")
def usps(private_diffclust_home) -> Path:
    """The built-in USPS digits as a data folder (laid out once in the private DIFFCLUST_HOME)."""
    from diffclust.datasets import builtin_folder

    return builtin_folder("usps")


@pytest.fixture(scope="session")
def twelve(butterflies, tmp_path_factory) -> Path:
    """12 butterflies (2 of each of the first 6 species) with their labels.csv."""
    with open(butterflies / "labels.csv", newline="") as handle:
        chosen = [row for row in csv.DictReader(handle) if int(row["label"]) < 6]
    per_class: dict[str, int] = {}
    picked = []
    for row in chosen:
        if per_class.get(row["label"], 0) < 2:
            per_class[row["label"]] = per_class.get(row["label"], 0) + 1
            picked.append(row)
    return write_subset(butterflies, picked, tmp_path_factory.mktemp("twelve") / "data")


@pytest.fixture(scope="session")
def tiny_ddpm(tmp_path_factory) -> Path:
    """A randomly initialised one-channel 16 px DDPM folder."""
    from tiny_ddpm import write_tiny_ddpm

    return write_tiny_ddpm(tmp_path_factory.mktemp("tiny-ddpm"))


@pytest.fixture(scope="session")
def usps_subset(usps, tmp_path_factory) -> Path:
    """60 USPS test digits (6 per class) with their labels.csv."""
    source = usps
    folder = tmp_path_factory.mktemp("usps60")
    with open(source / "labels.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    chosen, per_class = [], {}
    for row in rows:
        if per_class.get(row["label"], 0) < 6:
            per_class[row["label"]] = per_class.get(row["label"], 0) + 1
            chosen.append(row)
    return write_subset(source, chosen, folder)


#: CLUDI's networks at a size that trains in seconds, for command-line fits whose test is not about them
SMALL_CLUDI = ["--hidden-dim", "64", "--embedding-dim", "16"]


#: the test files by the time they take, longest first (pyproject's --no-loadscope-reorder keeps
#: this order): the two workers then end together instead of one waiting on the other's last long file
LONGEST_FIRST = ("test_cludi.py", "test_pretrain.py", "test_difc_recovers_mixture.py", "test_usps_text.py", "test_hostile_input.py",
                 "test_diec.py", "test_hostile_input_3.py", "test_end_to_end.py", "test_k_selection.py", "test_first_hour.py",
                 "test_hostile_input_2.py", "test_newcomer.py", "test_self_labelling.py", "test_manifold.py")
#: the runs whose every selected test must run on a bare clone: the default and CI's integration run
NO_SKIP_RUNS = ("not slow and not integration", "integration")


def pytest_collection_modifyitems(items):
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_sessionfinish(session, exitstatus):
    """The default and the integration run fail when any test was skipped: their tests must run
    on a bare clone, so a skip means a missing dependency or fixture, not an optional extra."""
    if hasattr(session.config, "workerinput") or session.config.getoption("markexpr") not in NO_SKIP_RUNS:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and exitstatus == 0:
        reporter.write_line(f"FAILED: {len(skipped)} default test(s) skipped; the default suite runs every test "
                            "(see the skip reasons with -rs).", red=True)
        session.exitstatus = 1
