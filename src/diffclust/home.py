"""Where diffclust keeps what it builds or lays out once: built-in backbones, the built-in data
sets and DiFiC's per-image constants ($DIFFCLUST_HOME, else ~/.cache/diffclust)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from diffclust.errors import DiskFullError, EnvironmentProblem


def cache_root() -> Path:
    """Where built-in backbones and DiFiC's constants are kept: $DIFFCLUST_HOME, else
    ~/.cache/diffclust; created on first use, with an error naming DIFFCLUST_HOME when it
    cannot be (a file in the way, an unwritable home folder)."""
    given = os.environ.get("DIFFCLUST_HOME")
    root = Path(given or Path.home() / ".cache" / "diffclust").expanduser()
    source = f"DIFFCLUST_HOME='{given}'" if given else f"the default cache folder '{root}' (in your home folder)"
    if root.exists() and not root.is_dir():
        raise EnvironmentProblem(f"{source} is a file, not a folder: point DIFFCLUST_HOME to a folder diffclust may use for its cache.")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-")
        probe.close()
    except OSError as error:
        raise EnvironmentProblem(f"Cannot use {source} for diffclust's cache ({type(error).__name__}: {error.strerror or error}): "
                                 "set DIFFCLUST_HOME to a folder you can write to (e.g. export DIFFCLUST_HOME=/tmp/diffclust).") from None
    return root


@contextlib.contextmanager
def building_in_home(what: str, folder: Path) -> Iterator[None]:
    """Around a build into the cache: a full disk, however the writer words it (safetensors,
    PIL, numpy), becomes one line that names the folder and DIFFCLUST_HOME."""
    from diffclust.engine.atomic import looks_like_disk_full
    from diffclust.failures import free_space, megabytes

    try:
        yield
    except Exception as error:
        if isinstance(error, EnvironmentProblem) or not looks_like_disk_full(error, folder):
            raise
        free = free_space(folder)
        raise DiskFullError(f"the disk is full while building {what} in '{folder}'" + (f" ({megabytes(free)} free there)" if free is not None else "")
                            + ". Free some space, or set DIFFCLUST_HOME to a folder on another disk. Nothing half-built was kept.") from error
