"""Training machinery shared by all methods: devices, checkpoints, logs, progress (loaded on first use)."""

from diffclust._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "MetricsLog": "diffclust.engine.history",
    "atomic_save_tensors": "diffclust.engine.checkpoint",
    "atomic_torch_save": "diffclust.engine.checkpoint",
    "atomic_write": "diffclust.engine.checkpoint",
    "atomic_write_json": "diffclust.engine.checkpoint",
    "atomic_write_text": "diffclust.engine.checkpoint",
    "load_tensors": "diffclust.engine.checkpoint",
    "load_training_state": "diffclust.engine.checkpoint",
    "make_accelerator": "diffclust.engine.runtime",
    "progress": "diffclust.engine.runtime",
})

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
