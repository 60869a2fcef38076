"""The files a run hands to people: assignments.csv, skipped.csv, and reading them back."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from diffclust.data.collection import ImageCollection, SkippedFile
from diffclust.engine.checkpoint import atomic_write_text
from diffclust.errors import DiffclustError

ASSIGNMENT_COLUMNS = ("file", "cluster", "confidence", "status")


def csv_text(columns, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def write_assignments(path: str | Path, files: list[str], clusters: np.ndarray, confidence: np.ndarray, skipped: list[SkippedFile] = ()) -> Path:
    """One row per input image: its cluster and confidence, or `skipped: <reason>`."""
    rows = [(file, int(cluster), f"{float(conf):.4f}", "ok") for file, cluster, conf in zip(files, clusters, confidence)]
    rows += [(item.file, "", "", f"skipped: {item.reason}") for item in skipped if item.is_image]
    return atomic_write_text(path, csv_text(ASSIGNMENT_COLUMNS, rows))


def write_skipped(path: str | Path, skipped: list[SkippedFile]) -> Path:
    """Every file that was looked at and not used, with the reason (header only if none)."""
    return atomic_write_text(path, csv_text(("file", "reason"), [(item.file, item.reason) for item in skipped]))


def read_assignments(path: str | Path) -> tuple[dict[str, int], int]:
    """{file: cluster} for the assigned rows, and the number of skipped rows."""
    path = Path(path)
    if not path.is_file():
        raise DiffclustError(f"Assignments file '{path}' does not exist.")
    assigned, skipped = {}, 0
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"file", "cluster"} <= set(reader.fieldnames or []):
            raise DiffclustError(f"{path}: needs 'file' and 'cluster' columns (found {reader.fieldnames}).")
        for row in reader:
            if row["cluster"] in ("", None):
                skipped += 1
            else:
                assigned[row["file"]] = int(row["cluster"])
    return assigned, skipped


def read_labels(path: str | Path, split: str | None = None) -> dict[str, int]:
    """{file: label} from a labels.csv (file,label[,class_name,split]), optionally one split."""
    path = Path(path)
    if path.is_dir():
        path = path / "labels.csv"
    if not path.is_file():
        raise DiffclustError(f"Labels file '{path}' does not exist.")
    labels = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not {"file", "label"} <= set(reader.fieldnames or []):
            raise DiffclustError(f"{path}: needs 'file' and 'label' columns (found {reader.fieldnames}).")
        if split is not None and "split" not in (reader.fieldnames or []):
            raise DiffclustError(f"{path}: --split {split} was asked for but the file has no 'split' column.")
        for row in reader:
            if split is None or row.get("split") == split:
                labels[row["file"]] = int(row["label"])
    if not labels:
        raise DiffclustError(f"{path}: no labelled rows" + (f" with split == '{split}'." if split else "."))
    return labels


def collection_outputs(folder: str | Path, collection: ImageCollection, clusters: np.ndarray, confidence: np.ndarray) -> None:
    """assignments.csv and skipped.csv for a whole collection."""
    folder = Path(folder)
    write_assignments(folder / "assignments.csv", collection.files, clusters, confidence, collection.skipped)
    write_skipped(folder / "skipped.csv", collection.skipped)
