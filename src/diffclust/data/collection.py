"""Find the images of a data set and their labels, and set aside the files that cannot be used.

Three layouts are understood: a folder with a ``labels.csv`` manifest
(file,label[,class_name,split]), a folder of class sub-folders, and a flat (or nested)
unlabelled folder. Unreadable files never stop a run: they are skipped, warned about and
listed, unless ``strict`` asks for an error.
"""

from __future__ import annotations

import csv
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffclust.data.images import IMAGE_EXTENSIONS, load_rgb
from diffclust.errors import DiffclustError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "labels.csv"


@dataclass(frozen=True)
class ImageRecord:
    """One usable image: where it is, its key in outputs, and its label if known."""

    path: Path
    file: str
    label: int | None = None
    class_name: str | None = None
    split: str | None = None
    caption: str | None = None  # a manifest's optional 'caption' column (for pretraining)


@dataclass(frozen=True)
class SkippedFile:
    """A file that was looked at but not used, and why."""

    file: str
    reason: str
    is_image: bool = True  # False for files that were never candidates (wrong extension)


@dataclass
class ImageCollection:
    """The images of one data set, in a fixed order, plus the files that were set aside."""

    root: Path
    records: list[ImageRecord]
    skipped: list[SkippedFile] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def files(self) -> list[str]:
        return [record.file for record in self.records]

    @property
    def has_labels(self) -> bool:
        return bool(self.records) and all(record.label is not None for record in self.records)

    @property
    def labels(self) -> np.ndarray | None:
        """Integer labels of every record, or None when any is unknown."""
        if not self.has_labels:
            return None
        return np.array([record.label for record in self.records], dtype=np.int64)

    def subset(self, indices: list[int] | np.ndarray) -> "ImageCollection":
        return ImageCollection(self.root, [self.records[i] for i in indices], list(self.skipped))


def _relative_key(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _walk_files(root: Path) -> list[Path]:
    files = [Path(dirpath) / name for dirpath, _, names in os.walk(root, followlinks=True) for name in names]
    return sorted(path for path in files if not _is_hidden(path, root))


def _records_from_folder(root: Path) -> tuple[list[ImageRecord], list[SkippedFile]]:
    """Walk a folder; top-level sub-folders become classes when every image lies in one."""
    records: list[ImageRecord] = []
    skipped: list[SkippedFile] = []
    image_paths = []
    for path in _walk_files(root):
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            image_paths.append(path)
        else:
            reason = f"not an image file extension ({path.suffix or 'none'})"
            skipped.append(SkippedFile(_relative_key(path, root), reason, is_image=False))
    top_dirs = {path.relative_to(root).parts[0] for path in image_paths if len(path.relative_to(root).parts) > 1}
    by_class = len(top_dirs) >= 2 and all(len(path.relative_to(root).parts) > 1 for path in image_paths)
    class_ids = {name: index for index, name in enumerate(sorted(top_dirs))} if by_class else {}
    for path in image_paths:
        key = _relative_key(path, root)
        if by_class:
            class_name = path.relative_to(root).parts[0]
            records.append(ImageRecord(path, key, class_ids[class_name], class_name))
        else:
            records.append(ImageRecord(path, key))
    return records, skipped


def _resolve_manifest_file(root: Path, name: str, row_number: int, manifest: Path) -> Path:
    """Find a manifest row's file under root/images/ or root/; names may not leave root.

    The check is on the name itself (absolute, or climbing with '..'), so images that are
    symbolic links to elsewhere stay usable.
    """
    if not name:
        raise DiffclustError(f"{manifest}: row {row_number} has an empty 'file' column.")
    relative = Path(os.path.normpath(name))
    if relative.is_absolute() or relative.parts[:1] == ("..",):
        raise DiffclustError(
            f"{manifest}: row {row_number} names '{name}', a path outside {root}. "
            "List files relative to the folder that holds labels.csv (or its images/ sub-folder)."
        )
    for candidate in (root / "images" / relative, root / relative):
        if candidate.is_file():
            return candidate
    raise DiffclustError(
        f"{manifest}: row {row_number} names '{name}', which does not exist under {root / 'images'} or {root}. "
        "Fix or remove that row."
    )


def _records_from_manifest(root: Path, manifest: Path) -> list[ImageRecord]:
    with open(manifest, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        if "file" not in columns:
            raise DiffclustError(
                f"{manifest}: needs a 'file' column (found {sorted(columns)}); expected file,label[,class_name,split]."
            )
        records = []
        for row_number, row in enumerate(reader, start=2):
            name = (row.get("file") or "").strip()
            path = _resolve_manifest_file(root, name, row_number, manifest)
            label_text = (row.get("label") or "").strip()
            try:
                label = int(label_text) if label_text else None
            except ValueError:
                raise DiffclustError(
                    f"{manifest}: row {row_number} has label '{label_text}'; labels must be integers "
                    "(put names in a 'class_name' column)."
                ) from None
            records.append(ImageRecord(path, name, label, row.get("class_name") or None, row.get("split") or None,
                                       row.get("caption") or None))
    return records


def _check_decodable(record: ImageRecord) -> str | None:
    """None if the image decodes fully, else the reason it cannot be used."""
    try:
        if record.path.stat().st_size == 0:
            return "empty file (0 bytes)"
        load_rgb(record.path)
    except Exception as error:  # any decoder failure means the file is unusable
        return f"unreadable image: {type(error).__name__}: {error}"
    return None


def scan_images(data: str | Path, *, strict: bool = False, verify: bool = True, workers: int = 8) -> ImageCollection:
    """Collect the images of a data set folder (or of a labels.csv file).

    Every image is decoded once when ``verify`` is set, so that unreadable ones are found
    before any model runs; they are skipped with a warning, or raise when ``strict``.
    """
    path = Path(data).expanduser()
    if path.is_file() and path.name.endswith(".csv"):
        root, manifest = path.parent, path
    elif path.is_dir():
        root, manifest = path, path / MANIFEST_NAME
    else:
        raise DiffclustError(f"Data path '{data}' does not exist or is not a folder (or a labels.csv file).")

    if manifest.is_file():
        records, skipped = _records_from_manifest(root, manifest), []
    else:
        records, skipped = _records_from_folder(root)

    if verify and records:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            problems = list(pool.map(_check_decodable, records))
        bad = [SkippedFile(record.file, problem) for record, problem in zip(records, problems) if problem]
        records = [record for record, problem in zip(records, problems) if not problem]
        if bad:
            listing = "\n".join(f"  {item.file}: {item.reason}" for item in bad[:20])
            more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
            if strict:
                raise DiffclustError(f"{len(bad)} image(s) under {root} cannot be read (strict mode):\n{listing}{more}")
            logger.warning("Skipping %d unreadable image(s) under %s:\n%s%s", len(bad), root, listing, more)
        skipped = skipped + bad

    if not records:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DiffclustError(f"No usable images found under {root} (looked for {extensions}, recursively).")
    return ImageCollection(root, records, skipped)
