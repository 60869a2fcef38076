"""`diffclust pretrain`: train a compact diffusion backbone in the layout the loaders read.

Output folder:
  unet/, scheduler/ (+ text_encoder/, tokenizer/ when text-conditioned): the EMA model,
      in safetensors shards of at most 15 MB; `--backbone DIR` loads it.
  samples/step_NNNNNNN.png (+ .txt with the captions of the rows): a grid at each checkpoint.
  training/: settings.json, checkpoint.pt (atomic, for --resume), metrics.csv (loss log).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from diffclust.backbones.base import match_channels
from diffclust.backbones.hub import library_progress_bars
from diffclust.backbones.stable_diffusion import StableDiffusionBackbone
from diffclust.data.collection import ImageCollection
from diffclust.data.images import load_image_array, uint8_to_model_range
from diffclust.engine.checkpoint import atomic_torch_save, atomic_write_json, load_training_state
from diffclust.engine.history import MetricsLog
from diffclust.engine.runtime import make_accelerator, progress
from diffclust.errors import DiffclustError
from diffclust.backbones.text_encoders import bundled_minilm_folder, write_reference
from diffclust.pretrain.architecture import build_conditioned_unet, build_scheduler, build_unconditional_unet
from diffclust.pretrain.captions import caption_for, held_out_indices
from diffclust.engine.ema import EMA
from diffclust.pretrain.sampling import sample, save_grid
from diffclust.pretrain.settings import PretrainSettings
from diffclust.seeding import make_generator, seed_everything

logger = logging.getLogger(__name__)
SHARD = "15MB"


def _all_grayscale(collection: ImageCollection, probe: int = 64) -> bool:
    from PIL import Image

    for record in collection.records[:probe]:
        with Image.open(record.path) as image:
            if image.mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
                return False
    return True


class Pretrainer:
    def __init__(self, settings: PretrainSettings, collection: ImageCollection, out_dir: str | Path, show_progress: bool = True):
        settings.check()
        self.s = settings
        self.out = Path(out_dir)
        self.show_progress = show_progress
        self.accelerator = make_accelerator(settings.device, settings.mixed_precision)
        seed_everything(settings.seed)
        if settings.channels is None:
            settings.channels = 1 if _all_grayscale(collection) else 3
        held = set(held_out_indices(collection, settings.eval_split, settings.eval_fraction, settings.seed).tolist()) if settings.conditional else set()
        self.train_rows = [i for i in range(len(collection)) if i not in held]
        if not self.train_rows:
            raise DiffclustError("No images left for training after holding out the evaluation split.")
        self.collection = collection
        self.scheduler = build_scheduler(settings)
        self.text = self._load_text_encoder() if settings.conditional else None
        context_dim = self.text[0].config.hidden_size if self.text else None
        self.unet = (build_conditioned_unet(settings, settings.channels, context_dim) if settings.conditional
                     else build_unconditional_unet(settings, settings.channels))
        self.ema = EMA(self.unet, settings.ema_decay)
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=settings.lr, weight_decay=0.01)
        self.step = 0
        self.generator = make_generator(settings.seed + 1_000_003 * self.accelerator.process_index)
        self.log = MetricsLog(self.out / "training" if self.accelerator.is_main_process else None)

    # ------------------------------------------------------------------ text
    def _load_text_encoder(self):
        source = Path(self.s.text_encoder) if self.s.text_encoder else bundled_minilm_folder()
        try:
            with library_progress_bars(self.show_progress):
                encoder = AutoModel.from_pretrained(source, local_files_only=True)
                tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        except OSError as error:
            raise DiffclustError(f"Could not load a text encoder and tokenizer from '{source}': {error}") from error
        tokenizer.model_max_length = self.s.text_max_length
        return encoder.eval().requires_grad_(False), tokenizer

    def _frozen_backbone(self) -> StableDiffusionBackbone:
        """The EMA model with the text encoder, seen through the backbone protocol (for prompts)."""
        encoder, tokenizer = self.text
        return StableDiffusionBackbone(self.ema.model, encoder, tokenizer, self.scheduler, vae=None, reference=str(self.out))

    def _caption_table(self) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]:
        """Embeddings of every distinct caption (computed once), each training row's caption index,
        the captions, and the empty caption's embedding."""
        captions = [caption_for(self.collection.records[i], self.s.caption_template) for i in self.train_rows]
        distinct = sorted(set(captions))
        index = {caption: i for i, caption in enumerate(distinct)}
        backbone = self._frozen_backbone().to(self.accelerator.device)
        table = torch.cat([backbone.encode_prompt(caption, 1).embeddings for caption in distinct])
        empty = backbone.encode_prompt("", 1).embeddings
        return table, torch.tensor([index[c] for c in captions]), distinct, empty

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_path(self) -> Path:
        return self.out / "training" / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        if not self.accelerator.is_main_process:
            return
        atomic_torch_save(self._checkpoint_path(), {
            "unet": self.accelerator.unwrap_model(self.unet).state_dict(),
            "ema": self.ema.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "generator": self.generator.get_state(),
            "history": json.dumps(self.log.records),
        })

    def resume(self) -> None:
        path = self._checkpoint_path()
        if not path.is_file():
            logger.warning("No checkpoint in %s: starting from step 0.", path.parent)
            return
        saved = PretrainSettings.load(self.out / "training" / "settings.json")
        for key in ("conditional", "block_out_channels", "layers_per_block", "resolution", "channels", "text_encoder", "seed"):
            if getattr(saved, key) != getattr(self.s, key):
                raise DiffclustError(f"Cannot resume {self.out}: setting '{key}' was {getattr(saved, key)!r}, now {getattr(self.s, key)!r}.")
        state = load_training_state(path)
        self.unet.load_state_dict(state["unet"])
        self.ema.model.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.generator.set_state(state["generator"])
        self.log.records = json.loads(state["history"])
        logger.info("Resuming %s at step %d.", self.out, self.step)

    def export(self) -> None:
        """Write the EMA model in the diffusers layout, in shards of at most 15 MB."""
        if not self.accelerator.is_main_process:
            return
        self.ema.model.save_pretrained(self.out / "unet", max_shard_size=SHARD)
        self.scheduler.save_pretrained(self.out / "scheduler")
        if self.text and not (self.out / "tokenizer").is_dir():
            encoder, tokenizer = self.text
            if self.s.text_encoder is None:  # the bundled encoder: refer to it, do not copy 90 MB
                write_reference(self.out / "text_encoder")
            else:
                encoder.save_pretrained(self.out / "text_encoder", max_shard_size=SHARD)
            tokenizer.save_pretrained(self.out / "tokenizer")
        kind = "StableDiffusionPipeline" if self.s.conditional else "DDPMPipeline"
        atomic_write_json(self.out / "model_index.json", {"_class_name": kind, "diffclust": {"pretrained_steps": self.step}})

    def write_samples(self, captions: list[str] | None, table: torch.Tensor | None, empty: torch.Tensor | None) -> Path | None:
        if not self.accelerator.is_main_process:
            return None
        generator = make_generator(self.s.seed)
        shape = (self.s.channels, self.s.resolution, self.s.resolution)
        path = self.out / "samples" / f"step_{self.step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if captions is None:
            images = sample(self.ema.model, self.scheduler, (32, *shape), generator)
            return save_grid(images, 4, path)
        chosen = list(range(min(8, len(captions))))
        context = table[chosen].repeat_interleave(4, dim=0)
        images = sample(self.ema.model, self.scheduler, (len(context), *shape), generator, context, empty)
        path.with_suffix(".txt").write_text("".join(f"row {row + 1}: {captions[i]}\n" for row, i in enumerate(chosen)))
        return save_grid(images, len(chosen), path)

    # ------------------------------------------------------------------ training
    def run(self, resume: bool = False) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
        elif self._checkpoint_path().is_file():
            raise DiffclustError(f"{self.out} already holds a pretraining run: pass --resume to continue it, or use another --out.")
        if self.accelerator.is_main_process:
            self.s.save(self.out / "training" / "settings.json")
        device = self.accelerator.device
        paths = [self.collection.records[i].path for i in self.train_rows]
        images = load_image_array(paths, self.s.resolution, self.s.num_workers)
        table = caption_index = captions = empty = None
        if self.s.conditional:
            table, caption_index, captions, empty = self._caption_table()
        unet, optimizer = self.accelerator.prepare(self.unet, self.optimizer)
        self.ema.model.to(device)  # the copy was made before prepare() moved the UNet
        bar = progress(range(self.step, self.s.steps), self.accelerator, self.show_progress, desc="pretrain", unit="step", initial=self.step, total=self.s.steps)
        running, started = [], time.perf_counter()
        unet.train()
        for step in bar:
            learning_rate = self.s.lr * min(1.0, (step + 1) / max(1, self.s.warmup_steps))  # a function of the step: resumes exactly
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            rows = torch.randint(len(images), (self.s.batch_size,), generator=self.generator)
            pixels = uint8_to_model_range(images[rows])
            if self.s.hflip:
                flip = torch.rand(len(rows), generator=self.generator) < 0.5
                pixels = torch.where(flip.view(-1, 1, 1, 1), pixels.flip(-1), pixels)
            pixels = match_channels(pixels, self.s.channels).to(device)
            noise = torch.randn(pixels.shape, generator=self.generator).to(device)
            timesteps = torch.randint(self.scheduler.config.num_train_timesteps, (len(rows),), generator=self.generator).to(device)
            noisy = self.scheduler.add_noise(pixels, noise, timesteps)
            with self.accelerator.autocast():
                if table is None:
                    prediction = unet(noisy, timesteps).sample
                else:
                    context = table[caption_index[rows]]
                    dropped = (torch.rand(len(rows), generator=self.generator) < self.s.caption_dropout).to(device)
                    context = torch.where(dropped.view(-1, 1, 1), empty.expand_as(context), context)
                    prediction = unet(noisy, timesteps, encoder_hidden_states=context).sample
            loss = F.mse_loss(prediction.float(), noise)
            self.accelerator.backward(loss)
            self.accelerator.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            self.step = step + 1
            self.ema.update(self.accelerator.unwrap_model(unet), self.step)
            running.append(float(loss.detach()))
            if self.step % self.s.log_every == 0 or self.step == self.s.steps:
                record = {"step": self.step, "loss": float(np.mean(running)), "lr": learning_rate,
                          "seconds": round(time.perf_counter() - started, 2)}
                self.log.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                running = []
            if self.step % self.s.checkpoint_every == 0 or self.step == self.s.steps:
                self.save_checkpoint()
                self.export()
                self.write_samples(captions, table, empty)
                unet.train()
        if self.step >= self.s.steps and not (self.out / "unet").is_dir():
            self.export()  # a resumed run that had already finished
        self.unet = self.accelerator.unwrap_model(unet)
        self.accelerator.wait_for_everyone()
        return self.out
