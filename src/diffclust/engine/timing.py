"""Wall time per stage of a run, so slowness can be seen where it is (and run.json records it)."""

from __future__ import annotations

import time
from contextlib import contextmanager


def readable_duration(seconds: float) -> str:
    """'45 s', '12 min' or '3.5 h': how long a person should expect to wait."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class StageTimer:
    """`with timer("constants"): ...` adds that block's seconds to `seconds["constants"]`."""

    def __init__(self):
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        begun = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - begun

    @property
    def total(self) -> float:
        return time.perf_counter() - self.started

    def rounded(self) -> dict[str, float]:
        return {stage: round(value, 3) for stage, value in self.seconds.items()}
