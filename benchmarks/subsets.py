"""Image folders cut from a labelled dataset (its images/ and labels.csv), for benchmarks that
need a subset of a set in `../shared/data` as a folder of its own."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np


def read_rows(source: Path) -> list[dict]:
    with open(source / "labels.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_subset(source: Path, rows: list[dict], folder: Path, pixels: int | None = None) -> int:
    """FOLDER/images (copies, or with `pixels` each image averaged down to pixels x pixels) and
    FOLDER/labels.csv for `rows` of SOURCE's labels.csv; files already there are kept, so a
    second call costs nothing. Returns the number of rows."""
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    for row in rows:
        target = folder / "images" / row["file"]
        if target.exists():
            continue
        if pixels is None:
            shutil.copy(source / "images" / row["file"], target)
        else:
            with Image.open(source / "images" / row["file"]) as image:
                image.convert("L").resize((pixels, pixels), Image.Resampling.BOX).save(target)
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def stratified_rows(rows: list[dict], size: int, seed: int) -> list[dict]:
    """`size` rows with every class in its share of the whole (largest remainders), drawn with
    `seed`, in the source's order."""
    labels = np.array([row["label"] for row in rows])
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(rows)
    quota = np.floor(exact).astype(int)
    quota[np.argsort(-(exact - quota), kind="stable")[: size - quota.sum()]] += 1
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(np.flatnonzero(labels == name), number, replace=False) for name, number in zip(classes, quota)])
    return [rows[i] for i in np.sort(chosen)]
