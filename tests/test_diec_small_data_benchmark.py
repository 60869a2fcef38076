"""The small-data twin's own parts (issue 30): the stratified subset and the recorded recipe (no training here)."""

from __future__ import annotations

import csv
import sys

import pytest
from PIL import Image

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import diec_small_data  # noqa: E402
from subsets import stratified_rows  # noqa: E402


def test_a_stratified_subset_keeps_each_class_share_and_depends_only_on_the_seed():
    rows = [{"file": f"{label}-{i}.png", "label": label} for label, count in (("a", 60), ("b", 30), ("c", 10)) for i in range(count)]
    chosen = stratified_rows(rows, 20, seed=3)
    assert [sum(row["label"] == label for row in chosen) for label in "abc"] == [12, 6, 2]
    assert chosen == stratified_rows(rows, 20, seed=3)
    assert chosen != stratified_rows(rows, 20, seed=4)
    assert len({row["file"] for row in chosen}) == 20


def test_largest_remainders_fill_the_subset_to_its_size():
    rows = [{"file": f"{label}-{i}", "label": label} for label in "abc" for i in range(10)]  # 30 rows, 3 equal classes
    counts = sorted(sum(row["label"] == label for row in stratified_rows(rows, 10, seed=0)) for label in "abc")
    assert counts == [3, 3, 4]


def test_the_subset_command_writes_images_and_labels(tmp_path):
    source = tmp_path / "usps"
    (source / "images").mkdir(parents=True)
    rows = [{"file": f"d{i}.png", "label": str(i % 2), "class_name": str(i % 2), "split": "train"} for i in range(10)]
    for row in rows:
        Image.new("L", (16, 16), 40 * int(row["label"])).save(source / "images" / row["file"])
    with open(source / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    diec_small_data.main(["subset", str(source), "--work", str(tmp_path / "work"), "--size", "4"])
    folder = tmp_path / "work" / "images-4"
    with open(folder / "labels.csv", newline="") as handle:
        found = list(csv.DictReader(handle))
    assert sorted(row["label"] for row in found) == ["0", "0", "1", "1"]
    assert sorted(p.name for p in (folder / "images").iterdir()) == sorted(row["file"] for row in found)


def test_the_recipe_is_the_bundled_usps_ddpm_command_without_its_data_and_output():
    recipe = diec_small_data.recipe()
    assert recipe[0] == "--unconditional" and "--out" not in recipe and "--quiet" not in recipe
    assert recipe[recipe.index("--steps") + 1] == "1500" and "--no-hflip" in recipe


@pytest.mark.parametrize("extra, steps, out", [([], "1500", "A"), (["--steps", "4000", "--out", "B"], "4000", "B")])
def test_options_given_on_the_command_line_replace_the_recipe_ones(extra, steps, out):
    merged = diec_small_data.merged_options(["--unconditional", "--steps", "1500", "--out", "A"], extra)
    assert merged[merged.index("--steps") + 1] == steps and merged[merged.index("--out") + 1] == out
    assert merged.count("--steps") == 1 and "--unconditional" in merged


def test_the_pixel_rows_score_image_shaped_arrays_on_both_baselines():
    import baselines
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 40)
    images = (rng.normal(size=(3, 1, 4, 4))[labels] * 4 + rng.normal(size=(120, 1, 4, 4))).astype(np.float32)
    rows = baselines.pixel_rows(images, labels, 3, seed=0)
    assert list(rows) == [baselines.KMEANS_PIXELS, baselines.UMAP_PIXELS]
    assert all(scores["acc"] == 1.0 for scores in rows.values())


def test_a_low_resolution_twin_averages_each_image_down(tmp_path):
    import numpy as np

    source = tmp_path / "usps"
    (source / "images").mkdir(parents=True)
    pixels = np.zeros((16, 16), dtype=np.uint8)
    pixels[:, :8] = 200  # left half ink
    Image.fromarray(pixels).save(source / "images" / "d0.png")
    (source / "labels.csv").write_text("file,label,class_name,split\nd0.png,0,0,train\n")
    diec_small_data.main(["subset", str(source), "--work", str(tmp_path / "work"), "--size", "1", "--pixels", "8"])
    small = np.asarray(Image.open(tmp_path / "work" / "images-1" / "images" / "d0.png"))
    assert small.shape == (8, 8) and (small[:, :4] == 200).all() and (small[:, 4:] == 0).all()
