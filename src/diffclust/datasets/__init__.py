"""Data sets that ship inside the package, so that the quick start, the docs' examples and the
tests run from a bare install with nothing beside it.

A built-in name (``usps``) is accepted wherever a data folder is: ``diffclust fit usps ...``,
``predict RUN usps``, ``evaluate --labels usps``, ``DiEC(...).fit("usps")``. The first use lays
the packed pixels out once as an ordinary data folder (``images/``, ``labels.csv``, the data
card) under ``$DIFFCLUST_HOME/datasets/``, so every command reads it through the same code as a
user's own folder, and its runs, reports and evaluations look the same as for that folder.
An existing path of the same name always wins over a built-in name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from diffclust.errors import DiffclustError

if TYPE_CHECKING:
    import numpy as np

PACKAGE_FOLDER = Path(__file__).resolve().parent

#: built-in name -> (packed file, data card), both inside this package; usps-odd is the odd digits
#: of the same pack, the ones the bundled usps-text model never saw, and usps-odd-test those of the
#: test split only (DiFiC's offline example, small enough for minutes on a CPU)
BUILTIN_DATASETS = {name: ("usps.npz", "USPS.md") for name in ("usps", "usps-odd", "usps-odd-test")}
#: the packed split codes (tools/pack_usps.py)
SPLITS = ("train", "test")


@dataclass(frozen=True)
class DigitImages:
    """A built-in digit set in memory, in scikit-learn's ``load_*`` spirit."""

    images: np.ndarray  # (N, 16, 16) uint8
    labels: np.ndarray  # (N,) int64, 0-9
    split: np.ndarray  # (N,) str, 'train' or 'test'
    files: list[str]  # the names the data folder gives them: train_00000.png, ...
    description: str  # the data card

    def __len__(self) -> int:
        return len(self.labels)


def builtin_names() -> list[str]:
    return sorted(BUILTIN_DATASETS)


def is_builtin(name) -> bool:
    return isinstance(name, str) and name in BUILTIN_DATASETS


def load_usps() -> DigitImages:
    """The 9,298 USPS digits (7,291 train, 2,007 test) with their labels, from the package."""
    import numpy as np

    packed, card = BUILTIN_DATASETS["usps"]
    with np.load(PACKAGE_FOLDER / packed, allow_pickle=False) as arrays:
        images, labels, codes = arrays["images"], arrays["labels"].astype(np.int64), arrays["split"]
    split = np.array(SPLITS)[codes]
    return DigitImages(images, labels, split, split_file_names(split), (PACKAGE_FOLDER / card).read_text(encoding="utf-8"))


def split_file_names(splits) -> list[str]:
    """The built-in digits' file names, `{split}_{index within the split:05d}.png` in row order
    (the pack stores no names: tools/pack_usps.py refuses a source that breaks this rule)."""
    counters: dict[str, int] = {}
    names = []
    for split in splits:
        names.append(f"{split}_{counters.get(split, 0):05d}.png")
        counters[split] = counters.get(split, 0) + 1
    return names


def load_usps_odd(split: str | None = None) -> DigitImages:
    """The 4,422 odd USPS digits (1, 3, 5, 7, 9), or the 914 of one split (`split="test"`), with
    their usual file names and labels: the digits the bundled usps-text model, pretrained on the
    even ones, never saw."""
    digits = load_usps()
    keep = (digits.labels % 2 == 1) & ((digits.split == split) if split else True)
    return DigitImages(digits.images[keep], digits.labels[keep], digits.split[keep], [f for f, k in zip(digits.files, keep) if k],
                       digits.description)


LOADERS = {"usps": load_usps, "usps-odd": load_usps_odd, "usps-odd-test": lambda: load_usps_odd("test")}


def builtin_folder(name: str) -> Path:
    """The built-in data set `name` as a data folder, laid out on first use (seconds) and kept.

    The folder is written under a temporary name and renamed into place, so a crash or a
    second process never leaves a half-written set that a later run would read as complete.
    """
    if not is_builtin(name):
        raise DiffclustError(f"'{name}' is not a built-in data set (built-in: {', '.join(builtin_names())}).")
    from diffclust.home import building_in_home, cache_root

    packed, _ = BUILTIN_DATASETS[name]
    digest = hashlib.sha256((PACKAGE_FOLDER / packed).read_bytes()).hexdigest()[:12]
    parent = cache_root() / "datasets" / f"{name}-{digest}"
    folder = parent / name  # the folder keeps the set's own name: runs default to runs/<name>
    if (folder / "labels.csv").is_file():
        return folder
    parent.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=parent.parent))
    try:
        with building_in_home(f"the built-in data set '{name}'", parent.parent):
            write_digits_folder(LOADERS[name](), staging / name)
        try:
            os.replace(staging, parent)
        except OSError:  # another process laid it out first: theirs is complete, use it
            if not (folder / "labels.csv").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def write_digits_folder(digits: DigitImages, folder: Path) -> None:
    """Lay `digits` out as a data folder: images/*.png, labels.csv (file, label, class_name, split)
    and the data card as README.md (a built-in set, or a subset of one)."""
    import csv

    from PIL import Image

    (folder / "images").mkdir(parents=True)
    for pixels, file in zip(digits.images, digits.files):
        Image.fromarray(pixels, "L").save(folder / "images" / file)
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "label", "class_name", "split"])
        writer.writerows([file, int(label), str(int(label)), split] for file, label, split in zip(digits.files, digits.labels, digits.split))
    (folder / "README.md").write_text(digits.description, encoding="utf-8")


def resolve_data(value):
    """A data argument as a path: an existing path is kept as given, a built-in name becomes
    its folder, anything else is returned unchanged (the caller's own check refuses it)."""
    if isinstance(value, (str, os.PathLike)) and not Path(value).expanduser().exists() and is_builtin(str(value)):
        return builtin_folder(str(value))
    return value


def missing_data_message(value) -> str:
    """The one line for a data argument that is neither a path nor a built-in name."""
    return (f"Data path '{value}' does not exist, and is not a built-in data set ({', '.join(builtin_names())}): "
            "give an image folder, a labels.csv, or a built-in name.")
