"""One writer per run folder: an exclusive lock held for the whole fit.

Without it, a second `fit` into the same --out truncates the first one's cache files in place
and both finish with wrong clusters. The lock is an OS file lock (released when the process
ends, even on kill -9); beside it, a note names the holder for the error message.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from filelock import FileLock, Timeout

from diffclust.data.collection import RUN_MARKER
from diffclust.errors import DiffclustError

LOCK_NAME = ".diffclust.lock"
HOLDER_NAME = ".diffclust.holder"
#: what holding the lock leaves in a folder
LOCK_FILES = (LOCK_NAME, HOLDER_NAME, RUN_MARKER)


class RunFolderLock:
    """Context manager: hold `folder`'s lock, or refuse at once if another process holds it."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._lock = FileLock(str(self.folder / LOCK_NAME), timeout=0)

    def __enter__(self) -> RunFolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            holder = self.folder / HOLDER_NAME
            who = holder.read_text().strip() if holder.is_file() else "another process"
            raise DiffclustError(f"{self.folder} is in use by another diffclust run ({who}). Wait for it to finish, or "
                                 "choose another output folder (--out): two runs in one folder would corrupt each other.") from None
        (self.folder / RUN_MARKER).touch()  # stays after the run: a scan of the data never reads this folder as images
        (self.folder / HOLDER_NAME).write_text(f"PID {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        return self

    def __exit__(self, *exc) -> None:
        (self.folder / HOLDER_NAME).unlink(missing_ok=True)
        self._lock.release()


def remove_if_only_locks(folder: Path) -> None:
    """Remove a run folder that holds nothing but the lock's own files (the run never started)."""
    folder = Path(folder)
    try:
        if folder.is_dir() and {path.name for path in folder.iterdir()} <= set(LOCK_FILES):
            for path in folder.iterdir():
                path.unlink()
            folder.rmdir()
    except OSError:
        pass  # another process took it meanwhile: leave it
