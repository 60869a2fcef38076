"""What CLUDI clusters: a feature matrix from a file or an array, or activations of images.

Every input becomes a FeatureTable (values, row names, optional labels, skipped files), so a
feature file and a backbone's activations go down the same path from there on. Rows of a
matrix are named by their index (0..N-1): assignments.csv's `file` column then holds the row
index, and `diffclust evaluate` works with a labels.csv of (file = row index, label).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.utils import check_array

from diffclust.choices import FEATURE_SUFFIXES
from diffclust.data.collection import SkippedFile
from diffclust.engine.checkpoint import load_tensors
from diffclust.errors import DiffclustError, library_reason
from diffclust.outputs import read_labels


@dataclass
class FeatureTable:
    values: torch.Tensor  # (N, d) float32
    names: list[str]
    labels: np.ndarray | None = None
    skipped: list[SkippedFile] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def files(self) -> list[str]:
        """Row names, as an image collection's files: assignments.csv's first column."""
        return self.names


def _checked(values, source: str) -> torch.Tensor:
    """A float32 (N, d) tensor with N >= 2 and every value finite; scikit-learn's input checks
    (and its messages) for shape, dtype and complex values."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        values = check_array(values, dtype=[np.float64, np.float32], ensure_all_finite=False, ensure_min_samples=2,
                             input_name=source)
    except ValueError as error:  # a TypeError (an object array from Python code) keeps its type
        reason = str(error).splitlines()[0]  # scikit-learn appends the array itself
        raise DiffclustError(f"{source}: features must be a numeric matrix of N >= 2 rows (samples) by d >= 1 columns: {reason}") from None
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if len(bad):
        raise DiffclustError(f"{source}: {len(bad)} rows hold NaN or infinite values (first: row {int(bad[0])}). Clean them first.")
    too_large = np.flatnonzero((np.abs(values) > np.finfo(np.float32).max).any(axis=1))
    if len(too_large):
        raise DiffclustError(f"{source}: {len(too_large)} rows hold values beyond float32's range (+-3.4e38; first: row "
                             f"{int(too_large[0])}). Rescale the features first.")
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def read_feature_file(path: str | Path) -> tuple[torch.Tensor, np.ndarray | None]:
    """(features, labels or None) from .npy, .pt/.pth (a tensor, or a dict with 'features' and
    optional 'labels') or .safetensors (a 'features' tensor, or the only one; optional 'labels')."""
    path = Path(path)
    if not path.is_file():
        raise DiffclustError(f"Feature file '{path}' does not exist.")
    suffix = path.suffix.lower()
    labels = None
    try:
        if suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        elif suffix in (".pt", ".pth"):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            values, labels = (loaded.get("features"), loaded.get("labels")) if isinstance(loaded, dict) else (loaded, None)
        elif suffix == ".safetensors":
            tensors = load_tensors(path)
            labels = tensors.pop("labels", None)
            values = tensors.get("features", next(iter(tensors.values())) if len(tensors) == 1 else None)
        else:
            raise DiffclustError(f"'{path}': feature files must end in {', '.join(FEATURE_SUFFIXES)}.")
    except DiffclustError:
        raise
    except Exception as error:  # a truncated or foreign file; a pickle that weights_only / allow_pickle=False refuses
        raise DiffclustError(f"Could not read the feature file '{path}' ({library_reason(error, 200)}). "
                             "Feature files hold one numeric N x d matrix (no pickled objects).") from None
    if values is None:
        raise DiffclustError(f"'{path}' holds no 'features' entry (a dict or safetensors file needs one).")
    return _checked(values, str(path)), None if labels is None else integer_labels(labels, str(path))


def integer_labels(labels, source: str) -> np.ndarray:
    """Labels as int64, refusing values that are not whole numbers (1.7 must not quietly become 1)."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels).reshape(-1)
    if array.dtype.kind in "iub":
        return array.astype(np.int64)
    if array.dtype.kind == "f" and np.isfinite(array).all() and np.array_equal(array, np.round(array)):
        return array.astype(np.int64)
    raise DiffclustError(f"Unknown label type in {source}: labels must be whole numbers (class ids), got {array.dtype} "
                         f"values such as {array[:3].tolist()}.")


def read_row_labels(path: str | Path, count: int) -> np.ndarray:
    """Labels of rows 0..count-1 from a .npy vector or a labels.csv whose `file` is the row index."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        if not path.is_file():
            raise DiffclustError(f"Labels file '{path}' does not exist.")
        try:
            labels = integer_labels(np.load(path, allow_pickle=False), str(path))
        except DiffclustError:
            raise
        except Exception as error:  # a pickled object array, a truncated or foreign file
            raise DiffclustError(f"Could not read the labels file '{path}' ({library_reason(error, 200)}); "
                                 "give a .npy vector of whole numbers, or a labels.csv.") from None
    else:
        by_row = read_labels(path)
        extra = sorted(set(by_row) - {str(row) for row in range(count)})
        if extra:
            raise DiffclustError(f"{path}: {len(by_row)} labelled rows for {count} feature rows (rows such as "
                                 f"{', '.join(extra[:5])} do not exist); the `file` column must hold row indices 0..{count - 1}: "
                                 "is it the labels of another feature file?")
        missing = [str(row) for row in range(count) if str(row) not in by_row]
        if missing:
            raise DiffclustError(f"{path}: no label for rows {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                                 "(the `file` column must hold row indices 0..N-1).")
        labels = np.array([by_row[str(row)] for row in range(count)], dtype=np.int64)
    if len(labels) != count:
        raise DiffclustError(f"{path}: {len(labels)} labels for {count} feature rows.")
    return labels


def table_from_matrix(values, labels=None, source: str = "features") -> FeatureTable:
    values = _checked(values, source)
    labels = None if labels is None else integer_labels(labels, source)
    if labels is not None and len(labels) != len(values):
        raise DiffclustError(f"{source}: {len(labels)} labels for {len(values)} feature rows.")
    return FeatureTable(values, [str(row) for row in range(len(values))], labels)
