"""Crash-safe writing of files, without torch: every file goes to a temp name in the same
folder, is flushed to disk, then renamed (and the folder flushed too).

A run killed mid-write, or a machine losing power, therefore leaves the previous file (or
nothing), never half a file; a write that fails for want of space says so. Files get the
permissions the umask allows, like any other program's. Commands that only read and write
tables (evaluate, the checks before a run) use this without loading torch.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffclust.data.names import NAME_ERRORS
from diffclust.errors import DiffclustError, DiskFullError
from diffclust.failures import DISK_FULL_ERRNOS, disk_full_message, free_space

#: a write that fails with less than this free beside it failed for want of space
DISK_NEARLY_FULL = 1 << 20


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(temp_path), then rename the temp file onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        write(temp)
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(temp, 0o666 & ~_current_umask())  # mkstemp makes 0600; outputs follow the umask
        os.replace(temp, path)
        _fsync_folder(path.parent)
    except Exception as error:
        if looks_like_disk_full(error, path.parent):  # torch, numpy and safetensors each word it their own way
            raise DiskFullError(disk_full_message(path, path.stat().st_size if path.is_file() else None)) from error
        raise
    finally:
        temp.unlink(missing_ok=True)
    return path


def looks_like_disk_full(error: Exception, folder: Path) -> bool:
    """ENOSPC, or a writer's own error while the disk has (almost) nothing left."""
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return True
    free = free_space(folder)
    return free is not None and free < DISK_NEARLY_FULL


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (the folder's entry); a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def atomic_write_text(path: str | Path, text: str) -> Path:
    # file names that are not UTF-8 are written as the disk's bytes (data.names), as they are read back
    return atomic_write(path, lambda temp: temp.write_text(text, encoding="utf-8", errors=NAME_ERRORS))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def atomic_save_array(path: str | Path, array) -> Path:
    """A .npy file (np.save given a file name would append .npy to the temp name, so a handle)."""
    import numpy as np

    def write(temp: Path) -> None:
        with open(temp, "wb") as handle:
            np.save(handle, np.asarray(array))

    return atomic_write(path, write)


def writable_folder(folder: str | Path, setting: str) -> Path:
    """`folder` as a Path, created if need be and checked to take files, before any work is done."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise DiffclustError(f"{setting} '{folder}' is a file, not a folder: choose a folder name.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".diffclust-write-test-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise DiffclustError(f"Cannot write to {setting} '{folder}' ({type(error).__name__}: {error.strerror or error}); "
                             "choose a folder you can write to.") from None
    return folder


def check_output_folder(folder: str | Path, marker: str, setting: str, what: str, earlier: tuple[str, ...] = (),
                        ignore: tuple[str, ...] = ()) -> Path:
    """Refuse, writing nothing, a `folder` that is not new, empty, or one diffclust marked before
    with `marker` (or, from versions before the marker, holding one of the `earlier` files):
    anything else is someone's folder. Files named in `ignore` (the caller's own lock) do not count."""
    folder = Path(folder).expanduser()
    ours = (folder / marker).is_file() or any((folder / name).is_file() for name in earlier)
    if folder.is_dir() and any(path.name not in ignore for path in folder.iterdir()) and not ours:
        raise DiffclustError(f"{setting} '{folder}' holds files that diffclust did not write there; nothing was overwritten. "
                             f"Choose a new or empty folder for {what} (or one an earlier run of the same command wrote).")
    return folder


def claim_output_folder(folder: str | Path, marker: str, setting: str, what: str, earlier: tuple[str, ...] = (),
                        ignore: tuple[str, ...] = ()) -> Path:
    """`folder` for diffclust to write `what` into (see check_output_folder), created and marked:
    the marker stays, so the folder is never read back as data and a later run may write there again."""
    folder = check_output_folder(folder, marker, setting, what, earlier, ignore)
    writable_folder(folder, setting)
    (folder / marker).touch()
    return folder


def read_json_object(path: str | Path) -> dict | None:
    """A JSON object diffclust wrote, or None when it is absent, unreadable or not an object:
    side files (plans, cache keys, run summaries) that a damaged copy must not stop."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
