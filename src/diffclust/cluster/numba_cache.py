"""numba's disk cache as an optimisation only: a cache that cannot be read, written or placed
costs a compile, never a run.

umap-learn and pynndescent keep their compiled kernels in numba's disk cache (diffclust turns
it on for theirs too, see cluster.manifold). numba lets every cache problem through: a damaged
index file raises an unpickling error on every later run, a full disk an OSError while saving,
and a read-only install with no writable home "no locator available" at import. Each of these
only means the kernel must be compiled in this process; the wrappers below say so once (with the
folder to delete) and compile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

from diffclust.errors import library_reason

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_installed = False
_said: set[str] = set()


def _say_once(kind: str, message: str) -> None:
    with _lock:
        if kind in _said:
            return
        _said.add(kind)
    logger.warning(message)


def guard_numba_cache() -> None:
    """Wrap numba's cache reads, writes and set-up (once per process) so that each failure falls
    back to compiling. Call before importing a library that decorates with cache=True."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    from numba.core import caching, dispatcher

    load, save, enable = caching.Cache.load_overload, caching.Cache.save_overload, dispatcher.Dispatcher.enable_caching

    def load_overload(self, sig, target_context):
        try:
            return load(self, sig, target_context)
        except Exception as error:  # noqa: BLE001 - any unreadable cache entry is a miss
            # the damaged index goes, so the save after this compile writes a sound one (numba would keep failing on it)
            index = getattr(self._cache_file, "_index_path", None)
            if index:
                with contextlib.suppress(OSError):
                    os.unlink(index)
            _say_once("read", f"numba's compile cache in {self.cache_path} could not be read ({library_reason(error)}): "
                              "compiling instead and rewriting the damaged entries (slower once, same results).")
            return None  # numba compiles on a miss

    def save_overload(self, sig, data):
        try:
            save(self, sig, data)
        except Exception as error:  # noqa: BLE001 - a cache that cannot be written is only not written
            _say_once("write", f"numba's compile cache in {self.cache_path} could not be written ({library_reason(error)}): "
                               "this run compiles without it (slower, same results).")

    def enable_caching(self):
        try:
            enable(self)
        except RuntimeError as error:  # no writable folder for the cache (numba: "no locator available")
            _say_once("place", f"numba finds no writable folder for its compile cache ({library_reason(error)}): kernels are "
                               "compiled in every run (slower, same results). Set NUMBA_CACHE_DIR to a writable folder to keep them.")

    caching.Cache.load_overload = load_overload
    caching.Cache.save_overload = save_overload
    dispatcher.Dispatcher.enable_caching = enable_caching
