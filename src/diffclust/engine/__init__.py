"""Training machinery shared by all methods: devices, checkpoints, logs, progress."""

from diffclust.engine.checkpoint import (
    atomic_save_tensors,
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    load_tensors,
    load_training_state,
)
from diffclust.engine.history import MetricsLog
from diffclust.engine.runtime import make_accelerator, progress

__all__ = [
    "MetricsLog",
    "atomic_save_tensors",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "load_tensors",
    "load_training_state",
    "make_accelerator",
    "progress",
]
