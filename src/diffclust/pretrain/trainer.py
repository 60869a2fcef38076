"""`diffclust pretrain`: train a compact diffusion backbone in the layout the loaders read.

Output folder:
  unet/, scheduler/ (+ text_encoder/, tokenizer/ when text-conditioned): the EMA model,
      in safetensors shards of at most 15 MB; `--backbone DIR` loads it.
  samples/step_NNNNNNN.png (+ .txt with the captions of the rows): a grid at each checkpoint.
  training/: settings.json, checkpoint.pt (atomic, for --resume), metrics.csv (loss log),
      record.json (the command, steps, speed, final loss, the zero-shot check, and the wall
      time of every stage, the end-of-run work included).
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from diffclust.backbones.base import match_channels
from diffclust.backbones.stable_diffusion import StableDiffusionBackbone
from diffclust.backbones.text_encoders import BUNDLED_MINILM, write_reference
from diffclust.data.collection import ImageCollection
from diffclust.data.images import load_image_array, uint8_to_model_range
from diffclust.engine.checkpoint import atomic_torch_save, atomic_write_json, load_training_state
from diffclust.engine.ema import EMA
from diffclust.engine.history import MetricsLog
from diffclust.engine.runtime import make_accelerator, progress
from diffclust.engine.timing import StageTimer, readable_duration
from diffclust.errors import DiffclustError
from diffclust.pretrain.architecture import build_conditioned_unet, build_scheduler, build_unconditional_unet
from diffclust.pretrain.caption_embeddings import CaptionTable, encode_captions, load_text_encoder
from diffclust.pretrain.captions import caption_for, class_captions, held_out_indices
from diffclust.pretrain.classifier import diffusion_classifier_accuracy
from diffclust.pretrain.sampling import sample, save_grid
from diffclust.pretrain.settings import PretrainSettings
from diffclust.seeding import make_generator, seed_everything

logger = logging.getLogger(__name__)
SHARD = "15MB"
EXPORT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: a time-limited run sets its step count from the speed over this many seconds (or a quarter of the budget)
CALIBRATION_SECONDS = 30.0


def _command_line() -> str:
    """The command as a user would type it again ('diffclust pretrain ...', whatever launched it)."""
    import shlex

    program = Path(sys.argv[0]).name
    head = ["diffclust"] if program in ("diffclust", "cli.py", "__main__.py") else [sys.executable, *sys.argv[:1]]
    return shlex.join([*head, *sys.argv[1:]])


def _all_grayscale(collection: ImageCollection, probe: int = 64) -> bool:
    from PIL import Image

    for record in collection.records[:probe]:
        with Image.open(record.path) as image:
            if image.mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
                return False
    return True


#: the steps a warning asks for at least: a rule of thumb, two thirds of the built-in usps-ddpm's 1,500 (not a measured threshold)
MIN_USEFUL_STEPS = 1000
#: the loss must have fallen by this share from the first logged value to the last
LOSS_FALL_NEEDED = 0.2


def undertrained(steps: int, warmup_steps: int, losses: list[float]) -> str | None:
    """Why a finished pretraining is not a usable backbone yet (label-free), or None."""
    if steps < warmup_steps:
        return f"it ran {steps} steps, inside the {warmup_steps}-step learning-rate warm-up"
    if len(losses) >= 2 and losses[-1] > (1 - LOSS_FALL_NEEDED) * losses[0]:
        return f"its loss has not fallen (first {losses[0]:.3f}, last {losses[-1]:.3f})"
    return None


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
        self.held_out = sorted(held)
        self.captions_given = CaptionTable.load(settings.caption_embeddings) if settings.conditional and settings.caption_embeddings else None
        if self.captions_given is not None:
            self._check_caption_table(self.captions_given)
        self.text = self._load_text_encoder() if settings.conditional and self.captions_given is None else None
        context_dim = (self.captions_given.embeddings.shape[-1] if self.captions_given is not None
                       else self.text[0].config.hidden_size if self.text else None)
        self.unet = (build_conditioned_unet(settings, settings.channels, context_dim) if settings.conditional
                     else build_unconditional_unet(settings, settings.channels))
        self.ema = EMA(self.unet, settings.ema_decay)
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=settings.lr, weight_decay=0.01)
        self.step = 0
        self.generator = make_generator(settings.seed + 1_000_003 * self.accelerator.process_index)
        # noise is drawn where the model runs: a CPU draw and copy per step would starve a GPU
        device = self.accelerator.device
        noise_seed = settings.seed + 7 + 1_000_003 * self.accelerator.process_index
        self.noise_generator = self.generator if device.type == "cpu" else make_generator(noise_seed, device)
        self.log = MetricsLog(self.out / "training" if self.accelerator.is_main_process else None)
        self.record: dict = {"command": _command_line()}
        self.timer = StageTimer()

    # ------------------------------------------------------------------ text
    def _load_text_encoder(self):
        return load_text_encoder(self.s.text_encoder, self.s.text_max_length, self.show_progress)

    def _check_caption_table(self, table: CaptionTable) -> None:
        """Embeddings made by another encoder, or at another length, would train a model that
        DiFiC then prompts through a different text pathway."""
        expected = self.s.text_encoder or BUNDLED_MINILM
        if table.text_encoder != expected or table.max_length != self.s.text_max_length:
            raise DiffclustError(
                f"The caption embeddings in '{self.s.caption_embeddings}' come from text encoder '{table.text_encoder}' at "
                f"{table.max_length} tokens, but this run uses '{expected}' at {self.s.text_max_length}: "
                "write them again with the same --text-encoder and --text-max-length.")
        if self.s.text_encoder is not None:
            raise DiffclustError("--caption-embeddings works with the bundled text encoder only (the model folder refers to it "
                                 "instead of copying it); with --text-encoder, train without --caption-embeddings.")
        if not (Path(self.s.caption_embeddings) / "tokenizer").is_dir():
            raise DiffclustError(f"'{self.s.caption_embeddings}' has no tokenizer/ folder; write it again with --write-caption-embeddings.")

    def _frozen_backbone(self) -> StableDiffusionBackbone:
        """The EMA model (with the text encoder, when loaded), seen through the backbone protocol."""
        encoder, tokenizer = self.text or (None, None)
        return StableDiffusionBackbone(self.ema.model, encoder, tokenizer, self.scheduler, vae=None, reference=str(self.out))

    def caption_table(self) -> CaptionTable:
        """Every caption of the data (held-out rows too: the classifier asks for them) through the
        text encoder, or as given by --caption-embeddings."""
        if self.captions_given is not None:
            return self.captions_given
        captions = [caption_for(record, self.s.caption_template) for record in self.collection.records]
        encoder, tokenizer = self.text
        return encode_captions(captions, encoder, tokenizer, self.s.text_max_length, self.s.text_encoder or BUNDLED_MINILM)

    def _tokenizer(self):
        if self.text:
            return self.text[1]
        return AutoTokenizer.from_pretrained(Path(self.s.caption_embeddings) / "tokenizer", local_files_only=True)

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
            "noise_generator": self.noise_generator.get_state(),
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
        if "noise_generator" in state and self.noise_generator is not self.generator:
            self.noise_generator.set_state(state["noise_generator"])
        self.log.records = json.loads(state["history"])
        logger.info("Resuming %s at step %d.", self.out, self.step)

    def export(self) -> None:
        """Write the EMA model in the diffusers layout, in shards of at most 15 MB."""
        if not self.accelerator.is_main_process:
            return
        dtype = EXPORT_DTYPES[self.s.export_dtype]
        if dtype == torch.float32:
            self.ema.model.save_pretrained(self.out / "unet", max_shard_size=SHARD)
        else:  # a half copy for the files only (diffusers' warning about casting concerns training in half, not storage)
            from diffusers.utils import logging as diffusers_logging

            verbosity = diffusers_logging.get_verbosity()
            diffusers_logging.set_verbosity_error()
            try:
                copy.deepcopy(self.ema.model).to(dtype).save_pretrained(self.out / "unet", max_shard_size=SHARD)
            finally:
                diffusers_logging.set_verbosity(verbosity)
        self.scheduler.save_pretrained(self.out / "scheduler")
        if self.s.conditional and not (self.out / "tokenizer").is_dir():
            if self.s.text_encoder is None:  # the bundled encoder and tokenizer: refer to them, do not copy 90 MB
                write_reference(self.out / "text_encoder")
                write_reference(self.out / "tokenizer", model_max_length=int(self._tokenizer().model_max_length))
            else:
                self.text[0].save_pretrained(self.out / "text_encoder", max_shard_size=SHARD)
                self._tokenizer().save_pretrained(self.out / "tokenizer")
        kind = "StableDiffusionPipeline" if self.s.conditional else "DDPMPipeline"
        atomic_write_json(self.out / "model_index.json", {"_class_name": kind, "diffclust": {"pretrained_steps": self.step}})

    def write_samples(self, captions: list[str] | None, table: torch.Tensor | None, empty: torch.Tensor | None) -> Path | None:
        """A grid of samples from the EMA model: 8 captions x 4 (or 32 unconditional)."""
        if not self.accelerator.is_main_process:
            return None
        generator = make_generator(self.s.seed)
        shape = (self.s.channels, self.s.resolution, self.s.resolution)
        path = self.out / "samples" / f"step_{self.step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        bar = {"show_progress": self.show_progress, "desc": f"samples at step {self.step}"}
        if captions is None:
            images = sample(self.ema.model, self.scheduler, (32, *shape), generator, steps=self.s.sample_steps, **bar)
            return save_grid(images, 4, path)
        chosen = list(range(min(8, len(captions))))
        context = table[chosen].repeat_interleave(4, dim=0)
        images = sample(self.ema.model, self.scheduler, (len(context), *shape), generator, context, empty, steps=self.s.sample_steps, **bar)
        path.with_suffix(".txt").write_text("".join(f"row {row + 1}: {captions[i]}\n" for row, i in enumerate(chosen)))
        return save_grid(images, len(chosen), path)

    def evaluate(self, table: CaptionTable) -> dict | None:
        """The zero-shot diffusion classifier on the held-out images, from the caption table (no
        text encoder needed), bounded by --eval-images and --eval-seconds."""
        if not self.accelerator.is_main_process or not self.held_out or not self.s.eval_images or not self.collection.has_labels:
            return None
        captions = class_captions(self.collection, self.s.caption_template)
        rows = table.rows(list(captions.values()))
        contexts = {label: table.embeddings[row][None] for label, row in zip(captions, rows.tolist())}
        result = diffusion_classifier_accuracy(self._frozen_backbone(), self.collection.subset(self.held_out), contexts,
                                               n_timesteps=self.s.eval_timesteps, max_images=self.s.eval_images, seed=self.s.seed,
                                               show_progress=self.show_progress, max_seconds=self.s.eval_seconds)
        logger.info("Diffusion classifier on %d held-out images, %d captions: accuracy %.1f%% (chance %.1f%%).",
                    result["images"], result["classes"], 100 * result["accuracy"], 100 * result["chance"])
        return result

    def _fit_budget(self, elapsed: float, steps_done: int, bar) -> None:
        """Set the step count that fills --time-budget from the speed so far (once, after the
        calibration window), and end the run at the budget whatever the estimate said."""
        budget = self.s.time_budget
        if budget is None:
            return
        calibrated = "budget_steps" in self.record
        if not calibrated and elapsed >= min(CALIBRATION_SECONDS, budget / 4) and steps_done:
            rate = steps_done / elapsed
            self.s.steps = max(self.step + 1, self.step + int(rate * (budget - elapsed)))
            self.record.update(budget_steps=self.s.steps, calibration={"seconds": round(elapsed, 2), "steps": steps_done,
                                                                      "steps_per_second": round(rate, 3),
                                                                      "images_per_second": round(rate * self.s.batch_size, 1)})
            logger.info("Time budget %.0f s: %.2f steps/s (%.0f images/s) over the first %.0f s, so %d steps in all.",
                        budget, rate, rate * self.s.batch_size, elapsed, self.s.steps)
            bar.total = self.s.steps
            if self.accelerator.is_main_process:
                self.s.save(self.out / "training" / "settings.json")
        if elapsed >= budget and self.step < self.s.steps:
            self.s.steps = self.step  # out of time: end here, with the usual final checkpoint and export
            self.record["budget_steps"] = self.step

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
        if self.s.time_budget is not None and "budget_steps" not in self.record:
            self.s.steps = 10**9  # until the speed is measured: the budget, not --steps, ends the run
        paths = [self.collection.records[i].path for i in self.train_rows]
        with self.timer("load_images"):
            images = load_image_array(paths, self.s.resolution, self.s.num_workers).to(device)  # on the device once
        table = caption_index = captions = empty = None
        if self.s.conditional:
            with self.timer("caption_embeddings"):
                captions_table = self.caption_table()
            caption_index = captions_table.rows([caption_for(self.collection.records[i], self.s.caption_template) for i in self.train_rows]).to(device)
            table, empty, captions = captions_table.embeddings.to(device), captions_table.empty.to(device), captions_table.captions
        unet, optimizer = self.accelerator.prepare(self.unet, self.optimizer)
        self.ema.model.to(device)  # the copy was made before prepare() moved the UNet
        bar = progress(None, self.accelerator, self.show_progress, desc="pretrain", unit="step", initial=self.step, total=self.s.steps)
        running, running_count, started, first_step = torch.zeros((), device=device), 0, time.perf_counter(), self.step
        unet.train()
        step = self.step
        while step < self.s.steps:  # the step count may change under a time budget
            learning_rate = self.s.lr * min(1.0, (step + 1) / max(1, self.s.warmup_steps))  # a function of the step: resumes exactly
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            rows = torch.randint(len(images), (self.s.batch_size,), generator=self.generator).to(device)
            pixels = uint8_to_model_range(images[rows])
            if self.s.hflip:
                flip = (torch.rand(len(rows), generator=self.generator) < 0.5).to(device)
                pixels = torch.where(flip.view(-1, 1, 1, 1), pixels.flip(-1), pixels)
            pixels = match_channels(pixels, self.s.channels)
            noise = torch.randn(pixels.shape, generator=self.noise_generator, device=self.noise_generator.device).to(device)
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
            step = self.step = step + 1
            self.ema.update(self.accelerator.unwrap_model(unet), self.step)
            running += loss.detach()  # summed on the device: no host sync per step
            running_count += 1
            bar.update(1)
            self._fit_budget(time.perf_counter() - started, self.step - first_step, bar)
            if self.step % self.s.log_every == 0 or self.step == self.s.steps:
                record = {"step": self.step, "loss": float(running) / running_count, "lr": learning_rate,
                          "seconds": round(time.perf_counter() - started, 2)}
                self.log.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                running, running_count = torch.zeros((), device=device), 0
            if self.step % self.s.checkpoint_every == 0 or self.step == self.s.steps:
                self._end_of_interval(captions, table, empty)
                unet.train()
        bar.close()
        self.timer.seconds["train"] = time.perf_counter() - started  # the loop, its checkpoints included
        if self.step >= self.s.steps and not (self.out / "unet").is_dir():
            with self.timer("export"):
                self.export()  # a resumed run that had already finished
        self.unet = self.accelerator.unwrap_model(unet)
        if self.s.conditional:
            with self.timer("classifier"):
                self.record["classifier"] = self.evaluate(captions_table)
        self._write_record(first_step, started)
        self.accelerator.wait_for_everyone()
        return self.out

    def _end_of_interval(self, captions, table, empty) -> None:
        with self.timer("checkpoint"):
            self.save_checkpoint()
        with self.timer("export"):
            self.export()
        with self.timer("samples"):
            self.write_samples(captions, table, empty)

    def _write_record(self, first_step: int, started: float) -> None:
        if not self.accelerator.is_main_process:
            return
        trained = self.step - first_step
        stages = self.timer.seconds
        seconds = stages.get("train", 0.0) - sum(stages.get(name, 0.0) for name in ("checkpoint", "export", "samples"))
        losses = [row["loss"] for row in self.log.records]
        self.record.update(stage_seconds=self.timer.rounded(), steps=self.step, steps_this_run=trained, batch_size=self.s.batch_size,
                           images_per_second=round(trained * self.s.batch_size / seconds, 1) if seconds else None,
                           first_loss=losses[0] if losses else None, final_loss=losses[-1] if losses else None,
                           device=str(self.accelerator.device), wall_seconds=round(time.perf_counter() - started, 2))
        rate = trained / seconds if trained and seconds else None
        problem = undertrained(self.step, self.s.warmup_steps, losses)
        if problem:
            self.record["undertrained"] = problem
            needed = max(MIN_USEFUL_STEPS, 5 * self.s.warmup_steps)
            at_this_speed = f" (about {readable_duration(needed / rate)} at this run's {rate:.2f} steps/s)" if rate else ""
            logger.warning("The model is not trained yet: %s. Saved as it is, but its features will cluster poorly. Train for at "
                           "least %d steps%s with --steps %d or a longer --time-budget (the built-in usps-ddpm took 1,500 steps; "
                           "see the pretraining guide).", problem, needed, at_this_speed, needed)
        atomic_write_json(self.out / "training" / "record.json", self.record)
