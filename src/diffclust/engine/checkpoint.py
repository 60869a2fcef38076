"""Checkpoints and weights: written through engine.atomic (temp file, flush, rename), so a run
killed mid-write leaves the previous checkpoint intact, and read back with safetensors or
``weights_only=True``: no pickled code is ever executed. The torch-free atomic writers are
re-exported from here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from diffclust.engine.atomic import (  # noqa: F401 - re-exported: every writer imports them from here
    atomic_save_array,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
)
from diffclust.errors import DiffclustError, library_reason, setting_label

logger = logging.getLogger(__name__)


def atomic_save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """safetensors file of contiguous CPU tensors."""
    clean = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    return atomic_write(path, lambda temp: save_file(clean, str(temp), metadata=metadata))


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    return load_file(str(path), device=str(device))


def atomic_torch_save(path: str | Path, state: dict[str, Any]) -> Path:
    """Training state (tensors, numbers, strings, optimizer state) for resuming."""
    return atomic_write(path, lambda temp: torch.save(state, temp))


def load_training_state(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by atomic_torch_save; a truncated, foreign or hostile file is a clear
    error (weights_only=True refuses any pickled code)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, random bytes, a pickle that weights_only refuses
        raise damaged(Path(path).parent, f"{Path(path).name} cannot be read ({library_reason(error, 200)})",
                      "delete it to start the run again (without --resume), or restore it from a copy") from None
    if not isinstance(state, dict):
        raise damaged(Path(path).parent, f"{Path(path).name} holds a {type(state).__name__}, not a diffclust checkpoint",
                      "delete it to start the run again")
    return state


def damaged(folder: Path, what: str, fix: str) -> DiffclustError:
    """The error for a run folder whose files are broken or not ours."""
    return DiffclustError(f"This run folder is damaged: {folder}: {what}. To go on: {fix}.")


#: every trainer's resumable state, in its run folder
CHECKPOINT_NAME = "checkpoint.pt"


def checkpoint_path(run_dir: Path | None) -> Path | None:
    return None if run_dir is None else Path(run_dir) / CHECKPOINT_NAME


def save_run_checkpoint(run_dir: Path | None, is_main_process: bool, state: dict[str, Any], epochs_done: int,
                        history: list[dict], params: dict[str, Any], resume_keys: tuple[str, ...]) -> None:
    """Atomically write a trainer's `state` with the bookkeeping every resume needs: epochs
    done, the metrics so far, and the settings that must not change (main process only)."""
    if run_dir is None or not is_main_process:
        return
    atomic_torch_save(checkpoint_path(run_dir), {
        **state, "epochs_done": epochs_done, "history": json.dumps(history),
        "settings": json.dumps({key: params[key] for key in resume_keys}),
    })


def load_resume_state(path: Path | None, params: dict[str, Any], resume_keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The checkpoint to continue from, or None to start afresh (with a warning) when there is none.

    Refuses, naming each one, if a setting in `resume_keys` differs from the interrupted run.
    """
    if path is None:
        raise DiffclustError("resume needs an output folder (output_dir / --out) holding the interrupted run.")
    if not path.is_file():
        logger.warning("No checkpoint in %s: starting from epoch 1.", path.parent)
        return None
    state = load_training_state(path)
    try:
        saved = json.loads(state["settings"])
        state["epochs_done"], state["history"]  # noqa: B018 - every resume reads them
    except (KeyError, TypeError, ValueError) as error:
        raise damaged(path.parent, f"{path.name} lacks its bookkeeping ({type(error).__name__}: {error})",
                      "delete it to start the run again") from None
    # a key the interrupted run did not record was added by a later version (DiEC's layer_ and timestep_): not compared
    changed = [f"{setting_label(key)}: {saved.get(key)!r} -> {params[key]!r}" for key in resume_keys
               if key in saved and saved[key] != params[key]]
    done = int(state["epochs_done"])
    if "epochs" in params and int(params["epochs"]) < done:
        changed.append(f"{setting_label('epochs')}: {params['epochs']} is fewer than the {done} already trained "
                       f"(give {done} or more: only epochs may grow)")
    if changed:
        raise DiffclustError(
            f"Cannot resume {path.parent}: these settings differ from the interrupted run ({'; '.join(changed)}). "
            "Use the same settings (only epochs may grow), or start a new run in another folder."
        )
    return state
