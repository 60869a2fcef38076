"""The peak resident set of this process, for benchmarks that measure each case in a child process.

`ru_maxrss` is not that on Linux: a child started by fork and exec reports at least its parent's
peak (the kernel carries the high-water mark over), so a parent that built a large model made
every child look as large. /proc/self/status's VmHWM starts afresh at exec.
"""

from __future__ import annotations

import resource
from pathlib import Path


def peak_resident_bytes() -> int:
    """This process's own peak resident set in bytes (VmHWM; ru_maxrss where /proc is absent)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
