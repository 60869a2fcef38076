"""The built-in USPS digits: packed in the package, laid out once as a data folder, and accepted
by name wherever a data folder is."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffclust import datasets
from diffclust.cli import main
from diffclust.data import scan_images

from conftest import cli_failure

#: the USPS digits per class (Hull 1994, the ESL zip files: 7,291 train + 2,007 test)
USPS_CLASS_COUNTS = {0: 1553, 1: 1269, 2: 929, 3: 824, 4: 852, 5: 716, 6: 834, 7: 792, 8: 708, 9: 821}
SHARED_USPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "usps"


def test_the_packed_digits_are_usps_with_its_split_and_class_counts():
    digits = datasets.load_usps()
    assert digits.images.shape == (9298, 16, 16) and digits.images.dtype == np.uint8
    assert dict(Counter(digits.labels.tolist())) == USPS_CLASS_COUNTS
    assert Counter(digits.split.tolist()) == {"train": 7291, "test": 2007}
    assert digits.files[0] == "train_00000.png" and digits.files[7291] == "test_00000.png" and len(set(digits.files)) == 9298
    assert digits.images.min() == 0 and digits.images.max() == 255  # the full 8-bit range, not [-1, 1]
    assert "Hull" in digits.description and (datasets.PACKAGE_FOLDER / "usps.npz").stat().st_size < 2 * 2**20


def test_the_built_in_folder_holds_every_digit_as_packed_and_is_laid_out_once(usps):
    digits = datasets.load_usps()
    with open(usps / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["file"] for row in rows] == digits.files
    assert [int(row["label"]) for row in rows] == digits.labels.tolist() and [row["class_name"] for row in rows][:3] == ["6", "5", "4"]
    assert len(list((usps / "images").iterdir())) == 9298
    for index in (0, 4321, 9297):
        assert np.array_equal(np.asarray(Image.open(usps / "images" / digits.files[index])), digits.images[index])
    stamp = (usps / "labels.csv").stat().st_mtime_ns
    assert datasets.builtin_folder("usps") == usps and (usps / "labels.csv").stat().st_mtime_ns == stamp
    assert usps.name == "usps"  # runs default to runs/usps


def test_the_odd_digit_subsets_are_the_digits_usps_text_never_saw():
    odd, odd_test = datasets.load_usps_odd(), datasets.load_usps_odd("test")
    assert dict(Counter(odd.labels.tolist())) == {digit: USPS_CLASS_COUNTS[digit] for digit in (1, 3, 5, 7, 9)}
    assert dict(Counter(odd_test.labels.tolist())) == {1: 264, 3: 166, 5: 160, 7: 147, 9: 177} and set(odd_test.split) == {"test"}
    whole = datasets.load_usps()
    index = whole.files.index(odd_test.files[0])  # a subset keeps each digit's own file name and pixels
    assert np.array_equal(whole.images[index], odd_test.images[0]) and whole.labels[index] == odd_test.labels[0]
    folder = datasets.builtin_folder("usps-odd-test")
    assert folder.name == "usps-odd-test" and len(list((folder / "images").iterdir())) == 914
    assert scan_images("usps-odd-test").labels.tolist() == odd_test.labels.tolist()


def test_a_failed_lay_out_leaves_nothing_half_written(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFCLUST_HOME", str(tmp_path))

    def fail(digits, folder):
        (folder / "images").mkdir(parents=True)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datasets, "write_digits_folder", fail)
    from diffclust.errors import DiskFullError

    with pytest.raises(DiskFullError, match="the disk is full while building the built-in data set 'usps' in .*DIFFCLUST_HOME"):
        datasets.builtin_folder("usps")
    assert list((tmp_path / "datasets").iterdir()) == []


def test_the_name_is_read_wherever_a_folder_is_and_a_real_path_wins(usps, tmp_path, monkeypatch):
    collection = scan_images("usps", verify=False)
    assert len(collection) == 9298 and collection.root == usps and collection.describe_labels() == "labels.csv"
    own = tmp_path / "usps"
    own.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(own / "mine.png")
    monkeypatch.chdir(tmp_path)
    assert scan_images("usps", verify=False).files == ["mine.png"]


def test_evaluate_takes_the_built_in_name_as_labels(usps, tmp_path, capsys):
    assignments = tmp_path / "assignments.csv"
    digits = datasets.load_usps()
    with open(assignments, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "cluster", "confidence", "status"])
        writer.writerows([file, (label + 3) % 10, 1.0, "ok"] for file, label in zip(digits.files[:500], digits.labels[:500]))
    assert main(["evaluate", str(assignments), "--labels", "usps", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"acc": 1.0' in out and '"scored": 500' in out


def test_a_name_that_is_neither_a_path_nor_built_in_lists_the_built_ins(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv in (["fit", "uspss", "--k", "10"], ["search", "uspss", "--k", "10", "--backbone", "usps-ddpm"]):
        line = cli_failure(capsys, argv, 2, "Data path 'uspss' does not exist, and is not a built-in data set (usps, usps-odd, usps-odd-test)")
        assert len(line.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_USPS.is_dir(), reason="compares with ../shared/data/usps, which only the project's machines have")
def test_the_built_in_folder_matches_the_source_folder_pixel_for_pixel(usps):
    names = sorted(os.listdir(SHARED_USPS / "images"))
    assert names == sorted(os.listdir(usps / "images"))
    for name in names:
        assert np.array_equal(np.asarray(Image.open(SHARED_USPS / "images" / name)), np.asarray(Image.open(usps / "images" / name)))
