"""Encode a whole image collection into a feature file, in shards that survive an interruption.

`FEATURES.npy` gets one row per usable image, in the collection's order. Beside it:
`FEATURES.files.csv` (row, file, and label/class_name when the data has labels), so CLUDI
names its assignments by file and scores against the labels, and `FEATURES.skipped.csv`
(files set aside, and why). While it runs, finished shards of `shard_size` rows wait in
`FEATURES.npy.parts/`; a second run with the same encoder, pooling and images continues after
the last finished shard, and the folder is removed once the file is complete.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from diffclust.data.collection import ImageCollection
from diffclust.data.names import some_names, split_inside
from diffclust.encoders.vision import VisionEncoder
from diffclust.engine.atomic import read_json_object
from diffclust.engine.checkpoint import atomic_save_array, atomic_write_json, atomic_write_text
from diffclust.engine.runtime import progress
from diffclust.engine.trainer import contents_identity, files_identity
from diffclust.errors import DiffclustError
from diffclust.outputs import csv_text, write_skipped

logger = logging.getLogger(__name__)

SHARD_SIZE = 1024
PARTS_SUFFIX = ".parts"
PLAN_NAME = "plan.json"


def sidecar(features_path: str | Path, kind: str) -> Path:
    """`feats.npy` -> `feats.files.csv` / `feats.skipped.csv` (kind: files, skipped)."""
    path = Path(features_path)
    return path.with_name(f"{path.stem}.{kind}.csv")


def _decode(collection: ImageCollection, rows: range, size_hint: int, workers: int) -> list:
    def one(row: int):
        record = collection.records[row]
        try:
            return record.rgb(size_hint)
        except Exception as error:  # the scan verified it; a file changed or vanished since
            raise DiffclustError(f"Could not read '{record.file}' while encoding ({type(error).__name__}: {error}); "
                                 "fix or remove it and run again (finished shards are kept).") from None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(one, rows))


def _shards_folder(out: Path, plan: dict) -> Path:
    """The shard folder for `out`, created with `plan`, or an existing one holding the same plan."""
    parts = out.with_name(out.name + PARTS_SUFFIX)
    plan_file = parts / PLAN_NAME
    before = read_json_object(plan_file)
    if before is None and parts.is_dir():  # a damaged or missing plan: its shards cannot be trusted, so start again
        logger.warning("%s has no readable %s: its shards are discarded and computed again.", parts, PLAN_NAME)
        shutil.rmtree(parts)
    if before is not None:
        changed = [f"{key}: {before.get(key)!r} -> {value!r}" for key, value in plan.items() if before.get(key) != value]
        if changed:
            raise DiffclustError(f"{parts} holds the shards of another extraction ({'; '.join(changed)}): the encoder's weights or "
                                 "the images changed since. Delete that folder to start again, or write to another --out.")
        logger.info("Continuing the extraction in %s.", parts)
    else:
        parts.mkdir(parents=True, exist_ok=True)
        atomic_write_json(plan_file, plan)
    return parts


def check_feature_output(out: str | Path) -> Path:
    """Before any image is encoded: `out` is a new .npy in a writable folder, or a feature file
    that diffclust wrote (its FEATURES.files.csv says so); never someone else's file."""
    from diffclust.engine.runtime import writable_folder

    out = Path(out)
    if out.suffix.lower() != ".npy":
        raise DiffclustError(f"--out must be a .npy file, got '{out}'.")
    if out.is_dir():
        raise DiffclustError(f"--out '{out}' is a folder; give a file name, e.g. {out / 'features.npy'}.")
    ours = _written_by_us(sidecar(out, "files"))
    for path in (out, sidecar(out, "files"), sidecar(out, "skipped")):
        if path.exists() and not ours:
            raise DiffclustError(f"'{path}' exists and is not part of a feature file diffclust wrote; nothing was overwritten. "
                                 "Choose another --out (or delete that file first).")
    writable_folder(out.parent if str(out.parent) else Path("."), "the folder of --out")
    return out


#: FEATURES.files.csv's columns: every row's, and those added when every image has a label
ROW_COLUMNS, LABEL_COLUMNS = ("row", "file", "path"), ("label", "class_name")
#: the headers of the FEATURES.files.csv tables this version writes, and those earlier versions wrote (no paths)
ROW_TABLE_HEADERS = (",".join(ROW_COLUMNS), ",".join(ROW_COLUMNS + LABEL_COLUMNS), "row,file", "row,file,label,class_name")


def _written_by_us(files_csv: Path) -> bool:
    try:
        with open(files_csv, "rb") as handle:
            return handle.readline(100).decode("utf-8", "replace").strip() in ROW_TABLE_HEADERS
    except OSError:
        return False


def _finished_shard(path: Path, rows: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # a damaged shard is computed again
    return values if values.ndim == 2 and len(values) == rows else None


def encode_rows(encoder: VisionEncoder, collection: ImageCollection, rows: range, batch_size: int = 64, workers: int = 4,
                bar=None) -> np.ndarray:
    """Features of `rows` of the collection, decoded `batch_size` images at a time."""
    batches = []
    for start in range(rows.start, rows.stop, batch_size):
        images = _decode(collection, range(start, min(rows.stop, start + batch_size)), encoder.image_size, workers)
        batches.append(encoder.encode(images).numpy())
        if bar is not None:
            bar.update(len(images))
    return np.concatenate(batches).astype(np.float32)


def extract_features(encoder: VisionEncoder, collection: ImageCollection, out: str | Path | None = None, batch_size: int = 64,
                     shard_size: int = SHARD_SIZE, workers: int = 4, show_progress: bool = True) -> np.ndarray:
    """The features (N x D float32, unit rows) of every image; with `out`, also written there,
    with its sidecar files, through resumable shards."""
    if len(collection) == 0:
        raise DiffclustError("No usable images to encode.")
    bar = progress(total=len(collection), enabled=show_progress, desc=f"encoding ({encoder.model_type})", unit="img")
    if out is None:
        features = encode_rows(encoder, collection, range(len(collection)), batch_size, workers, bar)
        bar.close()
        return features
    out = Path(out)
    parts = _shards_folder(out, {**encoder.description, "images": files_identity(collection.files),
                                 "contents": contents_identity(collection.records), "shard_size": shard_size})
    shards = []
    for index in range(math.ceil(len(collection) / shard_size)):
        rows = range(index * shard_size, min(len(collection), (index + 1) * shard_size))
        path = parts / f"shard-{index:05d}.npy"
        values = _finished_shard(path, len(rows))
        if values is None:
            values = encode_rows(encoder, collection, rows, batch_size, workers, bar)
            atomic_save_array(path, values)
        else:
            bar.update(len(rows))
        shards.append(values)
    bar.close()
    features = np.concatenate(shards)
    atomic_save_array(out, features)
    write_row_names(out, collection)
    write_skipped(sidecar(out, "skipped"), collection.skipped)
    shutil.rmtree(parts, ignore_errors=True)
    return features


def write_row_names(out: Path, collection: ImageCollection) -> Path:
    """FEATURES.files.csv: row, file, the image's path (so a report can show it), and label,
    class_name when every image has a label."""
    paths = [str(record.path.resolve()) for record in collection.records]
    if not collection.has_labels:
        return atomic_write_text(sidecar(out, "files"), csv_text(ROW_COLUMNS, zip(range(len(paths)), collection.files, paths)))
    rows = [(row, record.file, path, int(record.label), record.class_name or "")
            for row, (record, path) in enumerate(zip(collection.records, paths))]
    return atomic_write_text(sidecar(out, "files"), csv_text(ROW_COLUMNS + LABEL_COLUMNS, rows))


def _row_table(features_path: str | Path) -> tuple[Path, list[str], list[dict[str, str]]] | None:
    """(FEATURES.files.csv, its columns, its rows), or None when there is no such file."""
    from diffclust.data.csv_tables import read_csv_rows

    path = sidecar(features_path, "files")
    if not path.is_file():
        return None
    columns, numbered = read_csv_rows(path, {"row", "file"}, "row,file[,path,label,class_name], as `diffclust features` writes it",
                                      written_by_diffclust=True)
    return path, columns, [row for _, row in numbered]


def recorded_images(features_path: str | Path) -> tuple[dict[str, Path], dict[int, str]]:
    """({row name: image path} for the rows whose image is still there, {label: class name})
    from FEATURES.files.csv; empty for a files.csv without them, or none at all."""
    from diffclust.data.csv_tables import from_spreadsheet_safe

    table = _row_table(features_path)
    if table is None:
        return {}, {}
    files_csv, columns, rows = table
    found = {from_spreadsheet_safe(row["file"]): Path(from_spreadsheet_safe(row["path"])) for row in rows if row.get("path")}
    names = {int(row["label"]): row["class_name"] for row in rows if row.get("label") and row.get("class_name")} if "class_name" in columns else {}
    return images_of_one_data_folder(found, files_csv.parent), names


def images_of_one_data_folder(found: dict[str, Path], base: Path) -> dict[str, Path]:
    """The recorded images a report may show: those of the one data folder the extraction read.
    `diffclust features` records each image as DATA/file, so every row must give the same DATA
    (its path less its file name), its file must stay inside it (no `..`, not absolute), and the
    image, links followed, must lie under it; a relative path is read against the table's own
    folder. Any other row is left out with a warning, so a table handed to you cannot show your
    own files."""
    roots: dict[str, Path] = {}
    for name, path in found.items():
        path = path if path.is_absolute() else base / path
        relative = Path(name)
        if not relative.is_absolute() and ".." not in relative.parts and path.parts[-len(relative.parts):] == relative.parts:
            roots[name] = Path(*path.parts[: -len(relative.parts)])
    common = Counter(roots.values()).most_common(1)[0][0] if roots else None  # ties: the first row's folder
    candidates = {name: root / name for name, root in roots.items() if root == common}
    inside, _ = split_inside(candidates, common) if common else ({}, [])
    shown = {name: path for name, path in inside.items() if path.is_file()}  # an image deleted since is simply not shown
    refused = [name for name in found if name not in inside]
    if refused:
        logger.warning("The report leaves out %d recorded image(s) that lie outside the data folder %s the features were read from "
                       "(%s).", len(refused), common, some_names(refused))
    return shown


def read_row_names(features_path: str | Path, count: int) -> tuple[list[str], np.ndarray | None] | None:
    """(file of each row, labels or None) from FEATURES.files.csv beside a feature file, or None
    when there is none. A table that does not match the file's rows is an error."""
    from diffclust.data.csv_tables import from_spreadsheet_safe

    table = _row_table(features_path)
    if table is None:
        return None
    path, _, rows = table
    if len(rows) != count or any(row.get("row") != str(number) for number, row in enumerate(rows)):
        raise DiffclustError(f"{path} lists {len(rows)} rows for the {count} rows of {features_path} (or out of order): "
                             "it belongs to another extraction. Delete it to name the rows by index.")
    labelled = all(row.get("label") not in (None, "") for row in rows)
    return [from_spreadsheet_safe(row["file"]) for row in rows], np.array([int(row["label"]) for row in rows], dtype=np.int64) if labelled else None
