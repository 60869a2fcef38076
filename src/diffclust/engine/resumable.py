"""What every epoch-based trainer shares: a metrics log, and a checkpoint that resumes exactly."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from diffclust.engine.checkpoint import checkpoint_path, load_resume_state, save_run_checkpoint
from diffclust.engine.history import MetricsLog

logger = logging.getLogger(__name__)


class ResumableTrainer:
    """Subclasses say what their checkpoint holds (`checkpoint_state`, `restore`) and which
    settings must not change between a run and its resumption (`resume_keys`)."""

    resume_keys: tuple[str, ...] = ()

    def __init__(self, params: dict[str, Any], accelerator: Accelerator, run_dir: Path | None):
        self.p = params
        self.accelerator = accelerator
        self.run_dir = run_dir
        self.log = MetricsLog(run_dir if accelerator.is_main_process else None)
        self.start_epoch = 0

    def checkpoint_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def restore(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def save_checkpoint(self, epochs_done: int) -> None:
        save_run_checkpoint(self.run_dir, self.accelerator.is_main_process, self.checkpoint_state(), epochs_done,
                            self.log.records, self.p, self.resume_keys)

    def resume(self) -> bool:
        """Load the interrupted run's state; False when there was none (the run starts afresh)."""
        state = load_resume_state(checkpoint_path(self.run_dir), self.p, self.resume_keys)
        if state is None:
            return False
        self.restore(state)
        self.log.records = json.loads(state["history"])
        self.start_epoch = int(state["epochs_done"])
        logger.info("Resuming %s after epoch %d.", self.run_dir, self.start_epoch)
        return True
