"""Devices, processes and progress bars, through accelerate, for every training loop."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from tqdm.auto import tqdm

from diffclust.engine.atomic import writable_folder  # noqa: F401 - re-exported
from diffclust.errors import DiffclustError
from diffclust.seeding import make_generator

DEVICES = ("auto", "cpu", "cuda", "mps")
MIXED_PRECISION = ("no", "fp16", "bf16")


def make_accelerator(device: str | None = "auto", mixed_precision: str = "no") -> Accelerator:
    """One Accelerator per run. `device` is auto/cpu/cuda/mps; several processes come from
    `accelerate launch` (or torchrun), not from a setting here."""
    device = device or "auto"
    if device not in DEVICES:
        raise DiffclustError(f"device must be one of {', '.join(DEVICES)} (got '{device}'); pick GPUs with CUDA_VISIBLE_DEVICES.")
    if mixed_precision not in MIXED_PRECISION:
        raise DiffclustError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)} (got '{mixed_precision}').")
    no_accelerator = not torch.cuda.is_available() and not torch.backends.mps.is_available()
    accelerator = Accelerator(
        # "auto" without a GPU must say cpu=True: only then does accelerate join the processes
        # that torchrun started (otherwise each believes it is alone).
        cpu=device == "cpu" or (device == "auto" and no_accelerator),
        mixed_precision=mixed_precision,
        # warm-up epochs leave the cluster head unused; DDP must tolerate that
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    wanted = {"cuda": "cuda", "mps": "mps"}.get(device)
    if wanted and accelerator.device.type != wanted:
        raise DiffclustError(f"device '{device}' was asked for but is not available here (found {accelerator.device}).")
    return accelerator


def is_main_launch_process() -> bool:
    """True in a single process, and in the process of rank 0 under torchrun or accelerate
    launch (read from the launcher's RANK, before any accelerator exists)."""
    return int(os.environ.get("RANK", "0")) == 0


class LineProgress(tqdm):
    """For logs and pipes (stderr is no terminal): a whole line every tenth of the way, and at
    the end, instead of a bar redrawn with carriage returns hundreds of times."""

    STEPS = 10

    def __init__(self, *args, **kwargs):
        self._printed = -1
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):
        if self.total:
            tenth = int(self.STEPS * self.n / self.total)
            if tenth == self._printed and self.n < self.total:
                return True
            self._printed = tenth
        self.fp.write((msg or self.__str__()).strip() + "\n")
        self.fp.flush()
        return True

    def close(self):
        if self.disable:
            return
        if not self.total or int(self.STEPS * self.n / self.total) != self._printed:
            self.display()  # the last line, once
        self._decr_instances(self)
        self.disable = True  # tqdm's own close would add a blank line or a carriage return


def progress(iterable: Iterable | None = None, accelerator: Accelerator | None = None, enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar shown by the main process only (as lines when stderr is not a terminal)."""
    show = enabled and (accelerator is None or accelerator.is_main_process)
    if show and not sys.stderr.isatty():
        return LineProgress(iterable, mininterval=1.0, **kwargs)
    return tqdm(iterable, disable=not show, dynamic_ncols=True, **kwargs)


def epoch_order(count: int, seed: int, epoch: int, accelerator: Accelerator) -> torch.Tensor:
    """This process's share of a permutation seeded by (seed, epoch), padded so every process
    takes the same number of steps."""
    world = accelerator.num_processes
    order = torch.randperm(count, generator=make_generator(seed * 1_000_003 + epoch))
    padded = math.ceil(count / world) * world
    order = torch.cat([order, order[: padded - count]])
    return order[accelerator.process_index :: world]


def epoch_batches(count: int, batch_size: int, seed: int, epoch: int, accelerator: Accelerator) -> list[torch.Tensor]:
    """This process's batches for one epoch (see `epoch_order`). A last batch of one image is
    merged into the one before: batch statistics (BatchNorm, batch-wise softmax) need two rows,
    and N = k * batch_size + 1 images must not crash a run."""
    batches = list(epoch_order(count, seed, epoch, accelerator).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def average_gradients(parameters: Iterable[torch.nn.Parameter], accelerator: Accelerator) -> None:
    """Mean of each gradient over processes, for modules trained outside a DDP wrapper."""
    if accelerator.num_processes == 1:
        return
    for parameter in parameters:
        if parameter.grad is not None:
            parameter.grad.copy_(accelerator.reduce(parameter.grad, "mean"))
