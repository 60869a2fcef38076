"""What every epoch-based trainer shares: the update step, the metrics log, and checkpoints that resume exactly."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import Accelerator

from diffclust.cluster.metrics import clustering_scores
from diffclust.data.names import name_bytes
from diffclust.engine.checkpoint import checkpoint_path, load_resume_state, save_run_checkpoint
from diffclust.engine.history import MetricsLog
from diffclust.engine.runtime import average_gradients
from diffclust.engine.timing import readable_duration

logger = logging.getLogger(__name__)


class EpochTrainer:
    """Subclasses say what their checkpoint holds (`checkpoint_state`, `restore`) and which
    settings must not change between a run and its resumption (`resume_keys`)."""

    resume_keys: tuple[str, ...] = ()
    #: what the run is about, in every trainer's params: a resume with other data, another
    #: backbone or another resolution would mix two runs, so it is refused like a changed setting
    identity_keys: tuple[str, ...] = ("data", "backbone", "resolution")

    def __init__(self, params: dict[str, Any], accelerator: Accelerator, labels: np.ndarray | None, run_dir: Path | None):
        self.p = params
        self.accelerator = accelerator
        self.labels = labels  # only for the metrics log
        self.run_dir = run_dir
        self.log = MetricsLog(run_dir if accelerator.is_main_process else None)
        self.start_epoch = 0

    def optimise(self, loss, parameters: list) -> None:
        """One update of `self.optimizer`, gradients averaged over processes by hand (for
        modules that run outside a DDP wrapper, such as a UNet called through hooks)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        average_gradients(parameters, self.accelerator)
        self.optimizer.step()

    def end_epoch(self, epochs_done: int, record: dict[str, Any], clusters: np.ndarray | None, started: float,
                  rows=None) -> None:
        """Complete the epoch's record (clusters in use, scores against known labels, seconds),
        log it, and checkpoint. `clusters` is None for an epoch that assigns none (a warm-up
        before K is chosen); `rows`, when given, are the rows `clusters` belong to (a sample)."""
        self.log_record(record, clusters, started, rows)
        self.save_checkpoint(epochs_done)
        left = int(self.p.get("epochs", 0)) - epochs_done
        if epochs_done == self.start_epoch + 1:  # the first epoch of this process: say how long the rest takes
            after = self.seconds_after_training()
            if left > 0 or after >= 1:
                logger.info("Epoch %d took %s; %s will take about %s%s.", epochs_done, readable_duration(record["seconds"]),
                            " and ".join(([f"the {left} epochs left"] if left > 0 else []) + (["the final assignment"] if after >= 1 else [])),
                            readable_duration(left * record["seconds"] + after), " (fewer with --epochs)" if left > 0 else "")
        self.accelerator.wait_for_everyone()

    def seconds_after_training(self) -> float:
        """Seconds of work left after the last epoch (a trainer with a costly final step says so)."""
        return 0.0

    def log_record(self, record: dict[str, Any], clusters: np.ndarray | None, started: float, rows=None) -> None:
        """Add the clusters in use, the scores against known labels (of `rows` only, when the
        clusters are of a sample) and the seconds to `record`, and log it."""
        if clusters is not None:
            record["clusters_used"] = int(len(np.unique(clusters)))
            if self.labels is not None:
                record.update(clustering_scores(self.labels if rows is None else self.labels[np.asarray(rows)], clusters))
        record["seconds"] = round(time.perf_counter() - started, 3)
        self.log.append(record)

    def checkpoint_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def restore(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def save_checkpoint(self, epochs_done: int) -> None:
        save_run_checkpoint(self.run_dir, self.accelerator.is_main_process, self.checkpoint_state(), epochs_done,
                            self.log.records, self.p, self.identity_keys + self.resume_keys)

    @classmethod
    def check_resumable(cls, run_dir: Path | None, params: dict[str, Any]) -> dict[str, Any] | None:
        """Refuse a resume with other data, backbone, resolution or settings before any costly
        or destructive work (DiFiC's cache is rewritten for other data); return the saved state
        (None without a checkpoint)."""
        path = checkpoint_path(run_dir)
        if path is None or path.is_file():  # no folder: the same clear error as resume(); no checkpoint: resume() says so
            return load_resume_state(path, params, cls.identity_keys + cls.resume_keys)
        return None

    def resume(self) -> bool:
        """Load the interrupted run's state; False when there was none (the run starts afresh)."""
        state = load_resume_state(checkpoint_path(self.run_dir), self.p, self.identity_keys + self.resume_keys)
        if state is None:
            return False
        self.restore(state)
        self.log.records = json.loads(state["history"])
        self.start_epoch = int(state["epochs_done"])
        logger.info("Resuming %s after epoch %d.", self.run_dir, self.start_epoch)
        return True


def files_identity(files: list[str]) -> str:
    """A short, readable identity of a list of image files (their names, in order)."""
    return f"{len(files)} files, sha256 {hashlib.sha256(name_bytes(chr(10).join(files))).hexdigest()[:16]}"


def contents_identity(records) -> str:
    """The images' names with their size and modification time (or pixels): an image edited
    under the same name changes it, as it changes DiFiC's cache key."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(name_bytes(f"{record.file}\0{record.identity()}\n"))
    return f"{len(records)} images, sha256 {digest.hexdigest()[:16]}"


def weights_identity(folder: str | Path) -> str:
    """Sizes and hashes of a model folder's weight files: weights replaced under the same path
    change it."""
    folder = Path(folder)
    files = sorted(path for pattern in ("*.safetensors", "*.bin", "*.pt", "*.pth") for path in folder.rglob(pattern) if path.is_file())
    digest = hashlib.sha256()
    for path in files:
        file_digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                file_digest.update(chunk)
        digest.update(name_bytes(f"{path.relative_to(folder)}\0{path.stat().st_size}\0{file_digest.hexdigest()}\n"))
    return f"{len(files)} weight files, sha256 {digest.hexdigest()[:16]}"


def matrix_identity(values) -> str:
    """A short, readable identity of a feature matrix (its shape and bytes)."""
    array = np.ascontiguousarray(values.detach().cpu().numpy() if hasattr(values, "detach") else values)
    return f"{array.shape[0]} x {array.shape[1]} features, sha256 {hashlib.sha256(array.tobytes()).hexdigest()[:16]}"
