"""The files a run hands to people: assignments.csv, skipped.csv, and reading them back."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from diffclust.data.collection import MANIFEST_NAME, ImageCollection, SkippedFile, scan_images
from diffclust.data.csv_tables import from_spreadsheet_safe, integer_cell, label_cells, read_csv_rows, spreadsheet_safe
from diffclust.engine.atomic import atomic_write_json, atomic_write_text, writable_folder
from diffclust.errors import DiffclustError

ASSIGNMENT_COLUMNS = ("file", "cluster", "confidence", "status")
ASSIGNMENTS_NAME = "assignments.csv"
SKIPPED_NAME = "skipped.csv"
RUN_SUMMARY_NAME = "run.json"
#: the labels a run was given with its feature rows (CLUDI --labels), for its report
RUN_LABELS_NAME = "labels.csv"


def csv_text(columns, rows) -> str:
    """CSV text whose cells cannot run as spreadsheet formulas (see spreadsheet_safe)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows([spreadsheet_safe(cell) for cell in row] for row in rows)
    return buffer.getvalue()


def write_assignments(path: str | Path, files: list[str], clusters: np.ndarray, confidence: np.ndarray, skipped: list[SkippedFile] = ()) -> Path:
    """One row per input image: its cluster and confidence, or `skipped: <reason>`."""
    rows = [(file, int(cluster), f"{float(conf):.4f}", "ok") for file, cluster, conf in zip(files, clusters, confidence)]
    rows += [(item.file, "", "", f"skipped: {item.reason}") for item in skipped if item.is_image]
    return atomic_write_text(path, csv_text(ASSIGNMENT_COLUMNS, rows))


def check_output_file(path: str | Path, setting: str) -> Path:
    """A file we may write assignments to: not a folder, in a writable folder, and either new or
    an assignments file diffclust wrote before (never someone's labels.csv or other file)."""
    path = Path(path)
    if path.is_dir():
        raise DiffclustError(f"{setting} '{path}' is a folder; give a file name, e.g. {path / 'predictions.csv'}.")
    if path.exists():
        with open(path, "rb") as handle:
            first_line = handle.readline(200).decode("utf-8", "replace").strip()
        if first_line != ",".join(ASSIGNMENT_COLUMNS):
            raise DiffclustError(f"{setting} '{path}' exists and is not an assignments file diffclust wrote; nothing was "
                                 "overwritten. Choose another file name (or delete that file first).")
    writable_folder(path.parent if str(path.parent) else Path("."), f"the folder of {setting}")
    return path


def write_skipped(path: str | Path, skipped: list[SkippedFile]) -> Path:
    """Every file that was looked at and not used, with the reason (header only if none)."""
    return atomic_write_text(path, csv_text(("file", "reason"), [(item.file, item.reason) for item in skipped]))


def read_assignment_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of an assignments CSV as dicts (file, cluster, ...; cluster is '' for skipped rows),
    with every cluster checked to be a whole number."""
    _, rows = read_csv_rows(path, {"file", "cluster"}, "an assignments.csv from fit or predict (file,cluster,confidence,status)",
                            written_by_diffclust=True)
    for number, row in rows:
        integer_cell(row, "cluster", path, number, blank_ok=True)
        row["file"] = from_spreadsheet_safe(row["file"])
    return [row for _, row in rows]


def read_assignments(path: str | Path) -> tuple[dict[str, int], int]:
    """{file: cluster} for the assigned rows, and the number of skipped rows."""
    rows = read_assignment_rows(path)
    assigned = {row["file"]: int(row["cluster"]) for row in rows if row["cluster"] != ""}
    return assigned, len(rows) - len(assigned)


def read_labels(path: str | Path, split: str | None = None) -> dict[str, int]:
    """{file: label} from a labels.csv (file,label[,class_name,split]), or from a data folder in
    any layout `fit` reads (a labels.csv inside, or one sub-folder per class); optionally one split."""
    return read_label_table(path, split)[0]


def read_label_table(path: str | Path, split: str | None = None) -> tuple[dict[str, int], dict[int, str], bool]:
    """({file: label}, {label: class name}, whether the labels were written as names) from the
    sources read_labels takes; labels written as names are numbered in sorted order."""
    path = Path(path)
    if path.is_dir() and not (path / MANIFEST_NAME).is_file():
        return _labels_from_class_folders(path, split)
    if path.is_dir():
        path = path / MANIFEST_NAME
    columns, rows = read_csv_rows(path, {"file", "label"}, "a labels.csv with file,label[,class_name,split]")
    if split is not None and "split" not in columns:
        raise DiffclustError(f"{path}: --split {split} was asked for but the file has no 'split' column.")
    cells, names, were_names = label_cells(rows, path)
    blank = next((number for number, _ in rows if cells[number] is None), None)
    if blank is not None:
        raise DiffclustError(f"{path}: row {blank} has no label; give every row one, or leave the row out.")
    labels = {row["file"]: cells[number] for number, row in rows if split is None or row.get("split") == split}
    if not labels:
        raise DiffclustError(f"{path}: no labelled rows" + (f" with split == '{split}'." if split else "."))
    return labels, names, were_names


def _labels_from_class_folders(folder: Path, split: str | None) -> dict[str, int]:
    """Labels of a folder of class sub-folders, keyed as fit keys its files."""
    if split is not None:
        raise DiffclustError(f"{folder}: --split {split} needs a labels.csv with a 'split' column; class sub-folders have no splits.")
    collection = scan_images(folder, verify=False)
    if collection.labels is None:
        raise DiffclustError(f"{folder} holds no labels: no {MANIFEST_NAME}, and its images are not sorted into one "
                             "sub-folder per class.")
    labels = {record.file: int(record.label) for record in collection.records}
    return labels, {record.label: record.class_name for record in collection.records if record.class_name}, False


def collection_outputs(folder: str | Path, collection: ImageCollection, clusters: np.ndarray, confidence: np.ndarray) -> None:
    """assignments.csv and skipped.csv for a whole collection."""
    folder = Path(folder)
    write_assignments(folder / ASSIGNMENTS_NAME, collection.files, clusters, confidence, collection.skipped)
    write_skipped(folder / SKIPPED_NAME, collection.skipped)


def write_run_summary(folder: str | Path, method: str, backbone: str | None, device: str, stages: dict[str, float],
                      wall_seconds: float, **extra) -> Path:
    """run.json: what ran where, and how long each stage took (for people, reports and benchmarks)."""
    import platform

    import torch

    from diffclust import __version__

    return atomic_write_json(Path(folder) / RUN_SUMMARY_NAME, {
        "method": method, "backbone": backbone, "device": device, "wall_seconds": round(wall_seconds, 3), "stages": stages,
        "versions": {"diffclust": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), **extra,
    })
