"""Settings of a pretraining run: saved beside the model so a run can be resumed or inspected."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from diffclust.errors import DiffclustError


@dataclass
class PretrainSettings:
    """A compact diffusion backbone: SD-1.x block topology, pixel space, small widths.

    The text-conditioned model keeps SD's block layout (3 cross-attention levels and a plain
    one), so module paths such as ``up_blocks.2.attentions.0`` (DiFiC's block b) exist.
    """

    conditional: bool = True
    caption_template: str = "a photo of a {class_name}"
    text_encoder: str | None = None  # folder with a transformers encoder + tokenizer; None: bundled all-MiniLM-L6-v2
    caption_embeddings: str | None = None  # folder from --write-caption-embeddings: train without loading the encoder
    text_max_length: int = 48
    caption_dropout: float = 0.1  # empty caption this often: enables classifier-free guidance in samples
    resolution: int = 32
    channels: int | None = None  # None: 1 if every image is grayscale, else 3
    block_out_channels: tuple[int, ...] = (32, 64, 128, 128)
    layers_per_block: int = 2
    attention_head_dim: int = 8
    beta_schedule: str = "linear"
    steps: int = 10_000
    time_budget: float | None = None  # seconds of training: the step count is set from the speed of the first ones
    batch_size: int = 64
    lr: float = 2e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    checkpoint_every: int = 1000
    log_every: int = 50
    hflip: bool = True
    eval_split: str = "test"  # labels.csv rows held out of training for the diffusion classifier
    eval_fraction: float = 0.1  # held out at random when the data has no such split
    eval_images: int = 200  # held-out images the diffusion classifier scores after training
    eval_timesteps: int = 8
    eval_seconds: float | None = None  # stop the classifier after this long (it reports how many images it scored)
    sample_steps: int = 50  # DDIM steps of the sample grids
    export_dtype: str = "fp32"  # "fp16" halves the exported UNet (it loads back as fp32)
    seed: int = 0
    device: str = "auto"
    mixed_precision: str = "no"
    num_workers: int = 8

    def check(self) -> None:
        problems = []
        levels = len(self.block_out_channels)
        if self.conditional and levels != 4:
            problems.append("a text-conditioned model needs 4 levels (SD's layout), e.g. --channels-per-level 32,64,128,128")
        if self.resolution % 2 ** (levels - 1):
            problems.append(f"resolution {self.resolution} must be a multiple of {2 ** (levels - 1)} for {levels} levels")
        if self.steps < 1 or self.batch_size < 1:
            problems.append("steps and batch size must be >= 1")
        if not 0 <= self.caption_dropout < 1:
            problems.append("caption dropout must be in [0, 1)")
        if self.time_budget is not None and self.time_budget <= 0:
            problems.append("the time budget must be positive seconds")
        if self.export_dtype not in ("fp32", "fp16", "bf16"):
            problems.append("export dtype must be fp32, fp16 or bf16")
        if self.eval_images < 0 or self.eval_timesteps < 1 or self.sample_steps < 1:
            problems.append("eval images must be >= 0, eval timesteps and sample steps >= 1")
        if self.channels not in (None, 1, 3):
            problems.append("channels must be 1 or 3")
        if problems:
            raise DiffclustError("Invalid pretraining settings: " + "; ".join(problems) + ".")

    def save(self, path: Path) -> None:
        from diffclust.engine.checkpoint import atomic_write_json

        atomic_write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> PretrainSettings:
        data = json.loads(Path(path).read_text())
        names = {f.name for f in fields(cls)}
        data = {key: value for key, value in data.items() if key in names}
        data["block_out_channels"] = tuple(data.get("block_out_channels", cls.block_out_channels))
        return cls(**data)
