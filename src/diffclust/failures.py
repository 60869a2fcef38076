"""Any failure of a command as one line that says what happened, where, and what to do.

The command line promises "one line, no traceback, nothing lost": a user error exits 2, a
problem of the machine (a full disk, no memory) 1, Ctrl-C 130. The traceback is shown only
with --debug or DIFFCLUST_DEBUG=1, for bug reports.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from diffclust.errors import DiffclustError

EXIT_USER, EXIT_ENVIRONMENT, EXIT_INTERRUPTED = 2, 1, 130
DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def debug_requested(args=None) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("DIFFCLUST_DEBUG", "") not in ("", "0")


def free_space(path: str | Path | None) -> int | None:
    """Free bytes on the disk holding `path` (its nearest existing folder), or None."""
    if path is None:
        return None
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder if folder.is_dir() else folder.parent).free
    except OSError:
        return None


def megabytes(count: int) -> str:
    return f"{count / 1e6:,.1f} MB"


def disk_full_message(where: str | Path | None, needed: int | None = None) -> str:
    free = free_space(where)
    return (f"the disk is full while writing '{where}'" + (f" ({megabytes(free)} free there" if free is not None else "")
            + (f"; it needs at least {megabytes(needed)} more)" if needed else (")" if free is not None else ""))
            + ". Free some space or choose a folder on another disk (--out; for DiFiC's constants, --cache-dir or "
            "DIFFCLUST_HOME). Nothing was half-written: the last complete files and checkpoint are intact.")


def _resume_hint(command: str, args) -> str:
    out = getattr(args, "out", None)
    if command in ("fit", "pretrain") and out is not None:
        return f" {out} keeps its last checkpoint: run the same command with --resume to continue."
    if command == "fit":
        return " The run folder keeps its last checkpoint: run the same command with --resume to continue."
    if command == "features":
        return " Run the same command again: it continues after the last finished shard."
    return " Nothing was half-written."


def explain(error: BaseException, command: str, args=None) -> tuple[str, int]:
    """(the one line after 'diffclust COMMAND: error: ', the exit code)."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted." + _resume_hint(command, args), EXIT_INTERRUPTED
    if isinstance(error, DiffclustError):
        return str(error), error.exit_code
    if isinstance(error, OSError):
        where = error.filename
        if error.errno in DISK_FULL_ERRNOS:
            return disk_full_message(where), EXIT_ENVIRONMENT
        what = error.strerror or str(error)
        if isinstance(error, PermissionError):
            return f"permission denied: '{where}' ({what}). Choose a file or folder you can write to, or change its permissions.", EXIT_USER
        if isinstance(error, (FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError)):
            return f"{what}: '{where}'. Check the path.", EXIT_USER
        return f"{what}" + (f": '{where}'" if where else "") + ".", EXIT_ENVIRONMENT
    if isinstance(error, MemoryError) or "out of memory" in str(error).lower():
        return ("out of memory" + (f" ({str(error).splitlines()[0][:200]})" if str(error) else "")
                + ". Lower --batch-size (or --resolution), or use a machine with more memory." + _resume_hint(command, args)), EXIT_ENVIRONMENT
    first_line = (str(error).strip().splitlines() or [""])[0][:300]
    return (f"unexpected {type(error).__name__}: {first_line}. This is a bug in diffclust or a damaged file; run again with "
            "--debug (or DIFFCLUST_DEBUG=1) for the traceback and report it."), EXIT_ENVIRONMENT
