"""Find the images of a data set and their labels, and set aside the files that cannot be used.

Three folder layouts are understood: a folder with a ``labels.csv`` manifest
(file,label[,class_name,split]), a folder of class sub-folders, and a flat (or nested)
unlabelled folder. `collect_images` also takes single image files, lists of paths, PIL images
and arrays. Unreadable files never stop a run: they are skipped, warned about and listed,
unless ``strict`` asks for an error.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from diffclust.data.csv_tables import label_cells, read_csv_rows
from diffclust.data.images import IMAGE_EXTENSIONS, MAX_PIXELS, ImageTooLargeError, array_to_image, is_animated, load_rgb, open_image, to_rgb
from diffclust.datasets import missing_data_message, resolve_data
from diffclust.errors import DiffclustError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "labels.csv"
UNREADABLE_FOLDER = "folder cannot be read"
#: verification decodes JPEGs at a reduced scale (the whole file is still read, so truncation shows)
VERIFY_SIZE = 64
#: where a collection's labels came from (ImageCollection.label_source)
FROM_MANIFEST, FROM_FOLDERS = "labels.csv", "sub-folder names"


@dataclass(frozen=True)
class ImageRecord:
    """One usable image: where it is (or the image itself), its key in outputs, and its label if known."""

    path: Path | None
    file: str
    label: int | None = None
    class_name: str | None = None
    split: str | None = None
    caption: str | None = None  # a manifest's optional 'caption' column (for pretraining)
    image: Image.Image | None = field(default=None, repr=False, compare=False)  # in-memory images (API)

    def rgb(self, size_hint: int | None = None) -> Image.Image:
        """The decoded 8-bit RGB image (see load_rgb for `size_hint`)."""
        return to_rgb(self.image) if self.image is not None else load_rgb(self.path, size_hint)

    def identity(self) -> str:
        """What a cache keyed on this image depends on: name, size and time, or the pixels."""
        if self.image is not None:
            return hashlib.sha256(self.image.tobytes()).hexdigest()
        stat = self.path.stat()
        return f"{stat.st_size}\0{stat.st_mtime_ns}"


@dataclass(frozen=True)
class SkippedFile:
    """A file that was looked at but not used, and why."""

    file: str
    reason: str
    is_image: bool = True  # False for files that were never candidates (wrong extension)


@dataclass
class ImageCollection:
    """The images of one data set, in a fixed order, plus the files that were set aside."""

    root: Path | None
    records: list[ImageRecord]
    skipped: list[SkippedFile] = field(default_factory=list)
    label_source: str | None = None  # FROM_MANIFEST, FROM_FOLDERS, or None (no labels)

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

    def subset(self, indices: list[int] | np.ndarray) -> ImageCollection:
        return ImageCollection(self.root, [self.records[i] for i in indices], list(self.skipped), self.label_source)

    def describe_labels(self, shown: int = 6) -> str | None:
        """Where the labels came from, for people ("sub-folder names: 2023, 2024"), or None."""
        if self.labels is None:
            return None
        if self.label_source != FROM_FOLDERS:
            return self.label_source
        names = sorted({record.class_name for record in self.records})
        listed = ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")
        return f"{FROM_FOLDERS}: {listed}"


#: files that mark a folder diffclust wrote: a run folder, a report, a pretrained model, a search,
#: caption embeddings (or an older run: run.json + assignments.csv)
RUN_MARKER, REPORT_MARKER = ".diffclust-run", ".diffclust-report"
MODEL_MARKER, SEARCH_MARKER, CAPTIONS_MARKER = ".diffclust-model", ".diffclust-search", ".diffclust-captions"
OUTPUT_MARKERS = (RUN_MARKER, REPORT_MARKER, MODEL_MARKER, SEARCH_MARKER, CAPTIONS_MARKER)
OUTPUT_FOLDER = "a folder diffclust wrote (a run, report, model or search): not read as data"


def is_diffclust_output(folder: Path) -> bool:
    if any((folder / marker).is_file() for marker in OUTPUT_MARKERS) or (folder / ".diffclust.lock").exists():
        return True
    if (folder / "run.json").is_file() and (folder / "assignments.csv").is_file():
        return True
    index = folder / "index.html"
    if index.is_file():
        try:
            with open(index, "rb") as handle:
                return b"Made by diffclust" in handle.read()[-4096:]
        except OSError:
            return False
    return False


def _relative_key(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _walk_files(root: Path) -> tuple[list[Path], list[SkippedFile]]:
    """Every non-hidden file under root, following directory links once each: a link back into
    a folder already walked (a loop, or a second way to the same folder) is skipped, so files
    are neither repeated nor walked forever. Folders that cannot be listed are reported."""
    files: list[Path] = []
    skipped: list[SkippedFile] = []
    seen = {os.path.realpath(root)}

    def unreadable(error: OSError) -> None:
        folder = Path(error.filename or root)
        skipped.append(SkippedFile(_relative_key(folder, root) + "/", f"{UNREADABLE_FOLDER}: {type(error).__name__}: "
                                   f"{error.strerror or error}; its images are not used", is_image=False))

    for dirpath, dirnames, names in os.walk(root, followlinks=True, onerror=unreadable):
        kept = []
        for name in sorted(dirnames):
            if is_diffclust_output(Path(dirpath) / name):  # a run or report folder inside the data is not data
                skipped.append(SkippedFile(_relative_key(Path(dirpath) / name, root) + "/", OUTPUT_FOLDER, is_image=False))
                continue
            real = os.path.realpath(os.path.join(dirpath, name))
            if real in seen:
                folder = Path(dirpath) / name
                skipped.append(SkippedFile(_relative_key(folder, root) + "/", f"link to a folder already read ({real}): not "
                                           "followed again", is_image=False))
                continue
            seen.add(real)
            kept.append(name)
        dirnames[:] = kept
        files += [Path(dirpath) / name for name in names]
    visible = sorted(path for path in files if not _is_hidden(path, root))
    return visible, [item for item in skipped if not item.file.startswith(".") and "/." not in item.file]


def _records_from_folder(root: Path, folder_labels: bool = True) -> tuple[list[ImageRecord], list[SkippedFile]]:
    """Walk a folder; top-level sub-folders become classes when every image lies in one
    (unless `folder_labels` is off: dates or places are folders too, not classes)."""
    records: list[ImageRecord] = []
    image_paths = []
    paths, skipped = _walk_files(root)
    unreadable = [item for item in skipped if item.reason.startswith(UNREADABLE_FOLDER)]
    if unreadable:
        logger.warning("%d folder(s) under %s cannot be read, so their images are not used (listed in skipped.csv):\n%s",
                       len(unreadable), root, "\n".join(f"  {item.file}: {item.reason}" for item in unreadable))
    for path in paths:
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            image_paths.append(path)
        else:
            reason = f"not an image file extension ({path.suffix or 'none'})"
            skipped.append(SkippedFile(_relative_key(path, root), reason, is_image=False))
    top_dirs = {path.relative_to(root).parts[0] for path in image_paths if len(path.relative_to(root).parts) > 1}
    by_class = folder_labels and len(top_dirs) >= 2 and all(len(path.relative_to(root).parts) > 1 for path in image_paths)
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
    _, rows = read_csv_rows(manifest, {"file"}, "file,label[,class_name,split]")
    if not rows:
        raise DiffclustError(f"{manifest} lists no files (it has a header but no rows): add one row per image "
                             f"(file,label[,class_name,split]), or move it away to read the images in {root} as they are.")
    labels, names, _ = label_cells(rows, manifest)
    records, first_row = [], {}
    for row_number, row in rows:
        name = row["file"].strip()
        path = _resolve_manifest_file(root, name, row_number, manifest)
        if name in first_row:
            raise DiffclustError(f"{manifest}: rows {first_row[name]} and {row_number} both name '{name}'; each image may "
                                 "appear once (a repeated row would be clustered and scored twice). Remove one.")
        first_row[name] = row_number
        label = labels[row_number]
        records.append(ImageRecord(path, name, label, row.get("class_name") or names.get(label), row.get("split") or None,
                                   row.get("caption") or None))
    return records


class PixelBudget:
    """At most `limit` decoded pixels in flight across the threads that verify images: ten files
    just under the pixel limit are decoded one after another, not together (gigabytes of RGB),
    while ordinary photos still decode side by side."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._condition = threading.Condition()

    @contextmanager
    def reserve(self, pixels: int):
        pixels = min(pixels, self.limit)
        with self._condition:
            self._condition.wait_for(lambda: self.used + pixels <= self.limit)
            self.used += pixels
        try:
            yield
        finally:
            with self._condition:
                self.used -= pixels
                self._condition.notify_all()


#: the verification's budget: one image at the pixel limit at a time
VERIFY_BUDGET = PixelBudget(MAX_PIXELS)


def _decoded_pixels(path: Path) -> int:
    """How many pixels verifying `path` decodes (a JPEG decodes at a reduced scale, up to 1/8 a side)."""
    with open_image(path) as image:
        width, height = image.size
        return width * height // 64 if image.format == "JPEG" else width * height


def _check_decodable(record: ImageRecord) -> str | None:
    """None if the image decodes fully, else the reason it cannot be used."""
    if record.image is not None:
        return None
    try:
        if record.path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with VERIFY_BUDGET.reserve(_decoded_pixels(record.path)):
            load_rgb(record.path, size_hint=VERIFY_SIZE)
    except ImageTooLargeError as error:
        return f"too large: {error}"
    except Exception as error:  # any decoder failure means the file is unusable
        return f"unreadable image: {type(error).__name__}: {error}"
    return None


def _warn_about_animations(records: list[ImageRecord]) -> None:
    animated = [record.file for record in records if record.path is not None and record.path.suffix.lower() == ".gif"
                and is_animated(record.path)]
    if animated:
        logger.warning("%d animated GIF(s): the first frame of each is used (%s%s).", len(animated), ", ".join(animated[:5]),
                       ", ..." if len(animated) > 5 else "")


def scan_images(data: str | Path, *, strict: bool = False, verify: bool = True, workers: int = 8,
                folder_labels: bool = True) -> ImageCollection:
    """Collect the images of a data set folder (or of a labels.csv file).

    Every image is decoded once when ``verify`` is set, so that unreadable ones are found
    before any model runs; they are skipped with a warning, or raise when ``strict``.
    ``folder_labels=False`` reads a folder of sub-folders as unlabelled (--no-folder-labels).
    """
    path = Path(resolve_data(data)).expanduser()
    if path.is_file() and path.name.endswith(".csv"):
        root, manifest = path.parent, path
    elif path.is_dir():
        root, manifest = path, path / MANIFEST_NAME
    else:
        if not path.exists():
            raise DiffclustError(missing_data_message(data))
        raise DiffclustError(f"Data path '{data}' is not a folder (or a labels.csv file).")

    if manifest.is_file():
        records, skipped, source = _records_from_manifest(root, manifest), [], FROM_MANIFEST
    else:
        (records, skipped), source = _records_from_folder(root, folder_labels), FROM_FOLDERS
    records, bad = _verified(records, root, strict, workers) if verify else (records, [])
    _warn_about_animations(records)
    if not records:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DiffclustError(f"No usable images found under {root} (looked for {extensions}, recursively).")
    collection = ImageCollection(root, records, skipped + bad)
    collection.label_source = source if collection.has_labels else None
    return collection


def _verified(records: list[ImageRecord], where, strict: bool, workers: int = 8) -> tuple[list[ImageRecord], list[SkippedFile]]:
    """(the records that decode, the skipped rest), warned about or refused when `strict`."""
    if not records:
        return records, []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = list(pool.map(_check_decodable, records))
    bad = [SkippedFile(record.file, problem) for record, problem in zip(records, problems) if problem]
    if bad:
        listing = "\n".join(f"  {item.file}: {item.reason}" for item in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        if strict:
            raise DiffclustError(f"{len(bad)} image(s) under {where} cannot be read (strict mode):\n{listing}{more}")
        logger.warning("Skipping %d unreadable image(s) under %s:\n%s%s", len(bad), where, listing, more)
    return [record for record, problem in zip(records, problems) if not problem], bad


def _is_image_path(item) -> bool:
    return isinstance(item, (str, os.PathLike)) and Path(item).suffix.lower() in IMAGE_EXTENSIONS and not Path(item).is_dir()


def _in_memory_images(data) -> list[Image.Image] | None:
    """PIL images or pixel arrays as a list of images; None when `data` is not of that kind."""
    if isinstance(data, Image.Image):
        return [data]
    if isinstance(data, np.ndarray):
        if data.ndim == 2 or (data.ndim == 3 and data.shape[-1] in (1, 3, 4)):
            return [array_to_image(data)]
        if data.ndim in (3, 4):
            return [array_to_image(item) for item in data]
        raise DiffclustError(f"An image array must be (H, W), (H, W, C) or (N, H, W[, C]); got shape {data.shape}.")
    if isinstance(data, Sequence) and data and all(isinstance(item, (Image.Image, np.ndarray)) for item in data):
        return [image for item in data for image in _in_memory_images(item)]
    return None


def collect_images(data, *, strict: bool = False, folder_labels: bool = True) -> ImageCollection:
    """Any image input as a collection: an ImageCollection, a folder or labels.csv (scan_images),
    one image file, a list of image files, PIL images, or uint8 arrays (H, W[, C]) / (N, H, W[, C]).
    In-memory images are named image-0, image-1, ... in outputs; files keep the path given."""
    if isinstance(data, ImageCollection):
        return data
    images = _in_memory_images(data)
    if images is not None:
        return ImageCollection(None, [ImageRecord(None, f"image-{index}", image=image) for index, image in enumerate(images)])
    if _is_image_path(data):
        data = [data]
    if isinstance(data, (list, tuple)):
        return _collect_files(data, strict)
    if isinstance(data, (str, os.PathLike)):
        return scan_images(data, strict=strict, folder_labels=folder_labels)
    raise DiffclustError(f"Cannot read images from a {type(data).__name__}: give a folder, a labels.csv, image files, "
                         "PIL images or uint8 arrays.")


def _collect_files(paths: Sequence, strict: bool) -> ImageCollection:
    """A list of image files (each must exist and have an image extension)."""
    for item in paths:
        if not _is_image_path(item):
            raise DiffclustError(f"'{item}' is not an image file ({', '.join(sorted(IMAGE_EXTENSIONS))}); a list of inputs "
                                 "must name image files (give a folder on its own).")
        if not Path(item).is_file():
            raise DiffclustError(f"Image file '{item}' does not exist.")
    records = [ImageRecord(Path(item).expanduser(), str(item)) for item in paths]
    records, bad = _verified(records, "the given files", strict)
    if not records:
        raise DiffclustError("None of the given image files can be read: " + "; ".join(f"{b.file}: {b.reason}" for b in bad[:5]))
    return ImageCollection(None, records, bad)
