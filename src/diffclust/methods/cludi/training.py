"""CLUDI's teacher-student loop.

Each step: the teacher (EMA of the student) samples assignment embeddings for the clean
features with stochastic DDIM and reads its logits from them. With `teacher_neighbours` k > 0
(our addition), the teacher reads, for each row, one of its k nearest neighbours picked at
random: the student learns to give a row its neighbours' cluster (SCAN's consistency, brought
into the teacher-student), so the clusters follow the data's neighbourhoods, not only
k-means' cells. The student gets the teacher's assignment as an embedding of its own
centres, noised at a random timestep, and noised, dropped-out features; it predicts the
clean embedding (self-conditioned half of the time) and its logits. Loss: embedding MSE + ce_weight * two-way cross-entropy (teacher -> student). Then
the teacher takes its EMA step. The learning rate follows a cosine from lr to min_lr (the
centres at centre_lr_scale of both).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from diffclust.cluster.consensus import consensus_partition, spectral_partition
from diffclust.cluster.kmeans import fit_kmeans
from diffclust.cluster.neighbours import nearest_neighbours
from diffclust.engine.checkpoint import atomic_write_json
from diffclust.engine.ema import EMA
from diffclust.engine.runtime import epoch_batches, progress
from diffclust.engine.trainer import EpochTrainer
from diffclust.methods.cludi.diffusion import EmbeddingDiffusion
from diffclust.methods.cludi.losses import balanced_probabilities, cluster_offsets, two_way_cross_entropy
from diffclust.methods.cludi.network import CLUDINetwork
from diffclust.seeding import make_generator

logger = logging.getLogger(__name__)

RESUME_KEYS = ("n_clusters", "embedding_dim", "hidden_dim", "depth", "batch_size", "random_state", "num_train_timesteps", "beta_schedule", "init",
               "teacher_neighbours", "epoch_steps")
#: the logit scale of the one-hot start targets of a clustering start (sharp at the 0.05-0.1 temperatures)
INIT_LOGIT = 5.0
#: the consensus start's record in the run folder
START_PARTITION_NAME = "start_partition.json"
#: rows (seeded) on which the start's copy is checked between rounds of init_steps
INIT_CHECK_ROWS = 2048
#: the copy stops after INIT_PATIENCE rounds of init_steps that did not raise the best agreement
#: by INIT_MIN_GAIN (a plateau: clusters that overlap under the feature noise cannot be copied
#: exactly). One flat round is not enough: on half-moons the copy can sit still for a round
#: before it jumps to near agreement.
INIT_MIN_GAIN = 0.005
INIT_PATIENCE = 2
#: above this many rows, each epoch's logged assignment is of a seeded sample of this many: the
#: log shows the trend at a cost that does not grow with the data
MONITOR_ROWS = 4096


def distinct_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows to compute, row of that list for every row): each distinct row once, in order of
    first appearance, so `result[copies]` gives every row the result of its first copy."""
    _, first, inverse = np.unique(values.reshape(len(values), -1), axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    return first[order], position[inverse.reshape(-1)]


@torch.no_grad()
def mean_logits(network: CLUDINetwork, diffusion: EmbeddingDiffusion, features: torch.Tensor, samples: int, steps: int,
                eta: float, generator: torch.Generator, chunk: int = 4096, keep_samples: bool = False):
    """Logits averaged over `samples` sampled embeddings per row (CLUDI's prediction); with
    `keep_samples`, also every sample's logits (samples, N, K), to measure their spread."""
    total = torch.zeros(len(features), network.classifier.out_features, device=features.device)
    kept = torch.zeros(samples, *total.shape) if keep_samples else None
    for draw in range(samples):
        for rows in torch.arange(len(features)).split(chunk):
            logits = network.classifier(diffusion.sample(network, features[rows], steps, eta, generator))
            total[rows] += logits
            if kept is not None:
                kept[draw, rows] = logits.cpu()
    mean = total / samples
    return (mean, kept) if keep_samples else mean


def sample_agreement(sampled_logits: torch.Tensor, labels: np.ndarray, column_temperature: float, offsets: torch.Tensor) -> np.ndarray:
    """For each row, the share of its samples whose own balanced assignment is the row's final
    cluster: 1.0 when every sample agrees, lower when the teacher's samples are spread."""
    votes = (sampled_logits.float() / column_temperature - offsets).argmax(dim=2)
    return (votes == torch.from_numpy(labels)).float().mean(dim=0).numpy()


def assign(logits: torch.Tensor, column_temperature: float, offsets: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """(clusters, confidences, offsets) from mean logits: the balanced assignment, with the
    cluster offsets computed on these rows unless given (those of the training set)."""
    offsets = cluster_offsets(logits, column_temperature) if offsets is None else offsets
    probabilities = balanced_probabilities(logits, column_temperature, offsets)
    return probabilities.argmax(dim=1).numpy(), probabilities.max(dim=1).values.numpy(), offsets


class CLUDITrainer(EpochTrainer):
    resume_keys = RESUME_KEYS

    def __init__(self, params: dict, features: torch.Tensor, network: CLUDINetwork, accelerator: Accelerator,
                 labels: np.ndarray | None, run_dir: Path | None):
        super().__init__(params, accelerator, labels, run_dir)
        self.features = features.to(accelerator.device)
        self.network = network.to(accelerator.device)
        self.teacher = EMA(self.network, params["ema_decay"], warmup=False)
        self.diffusion = EmbeddingDiffusion(params["num_train_timesteps"], params["beta_schedule"])
        centres = [network.embedding.centres]
        others = [p for name, p in network.named_parameters() if not name.startswith("embedding.")]
        self.optimizer = torch.optim.AdamW(
            [{"params": others, "scale": 1.0}, {"params": centres, "scale": params["centre_lr_scale"]}],
            lr=params["lr"], betas=tuple(params["betas"]), weight_decay=params["weight_decay"])
        full_pass = math.ceil(math.ceil(len(features) / accelerator.num_processes) / params["batch_size"])
        #: an epoch is a fixed budget of steps (a fresh seeded sample of rows each epoch) once the
        #: data outgrows it, so the training's cost does not grow with N; 0: every row once (published)
        self.steps_per_epoch = min(full_pass, params["epoch_steps"]) if params.get("epoch_steps") else full_pass
        #: the rows whose assignment each epoch logs: all of them, or a seeded sample on many rows
        self.monitor_rows = (None if len(features) <= MONITOR_ROWS else
                             torch.randperm(len(features), generator=make_generator(params["random_state"] + 37))[:MONITOR_ROWS].sort().values)
        #: the partition the networks copied (None for the random start); kept in checkpoints, as
        #: the fit compares its final clusters with it
        self.start_labels: np.ndarray | None = None
        #: seconds per denoiser row pass, measured on the last monitoring pass (the ETA's unit)
        self.seconds_per_row_pass: float | None = None
        k = params.get("teacher_neighbours", 0)
        #: (N, k) nearest neighbours of each row, whose clean features the teacher reads: Euclidean,
        #: as in the start's kNN graphs (cosine neighbours of features that are not unit vectors
        #: cross the start's clusters, and the training then undoes them; docs/benchmarks/cludi.md)
        self.neighbours = torch.from_numpy(nearest_neighbours(features, k, metric="euclidean")) if k else None
        #: teacher logits of every row after the last epoch (monitoring samples)
        self.logits: torch.Tensor | None = None
        #: the consensus start's choice and every candidate's agreement (None for other starts, and on resume)
        self.start_partition: dict | None = None
        #: how closely the networks copied the start: steps run and agreement (None without a start, and on resume)
        self.start_copy: dict | None = None

    # ------------------------------------------------------------------ schedule
    def set_learning_rate(self, step: int) -> None:
        total = max(1, self.p["epochs"] * self.steps_per_epoch)
        progress_fraction = min(1.0, step / total)
        cosine = 0.5 * (1 + math.cos(math.pi * progress_fraction))
        for group in self.optimizer.param_groups:
            group["lr"] = group["scale"] * (self.p["min_lr"] + (self.p["lr"] - self.p["min_lr"]) * cosine)

    # ------------------------------------------------------------------ one step
    def _noisy_features(self, features: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Features + sigma * noise, then dropout, with sigma and the rate drawn from their ranges."""
        low, high = self.p["feature_noise"]
        sigma = low + (high - low) * float(torch.rand((), generator=generator))
        low, high = self.p["feature_dropout"]
        rate = low + (high - low) * float(torch.rand((), generator=generator))
        noisy = features + sigma * torch.randn(features.shape, generator=generator).to(features.device)
        keep = (torch.rand(features.shape, generator=generator) >= rate).to(features.device)
        return noisy * keep / (1.0 - rate)

    def _step(self, rows: torch.Tensor, generator: torch.Generator, given_logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One student update's losses; `given_logits` stand in for the teacher's (initialisation)."""
        p, student, device = self.p, self.network, self.accelerator.device
        features = self.features[rows]
        if given_logits is None:
            teacher_rows = rows
            if self.neighbours is not None:
                teacher_rows = self.neighbours[rows, torch.randint(self.neighbours.shape[1], (len(rows),), generator=generator)]
            teacher_embedding = self.diffusion.sample(self.teacher.model, self.features[teacher_rows], p["teacher_steps"],
                                                      p["teacher_eta"], generator)
            with torch.no_grad():
                teacher_logits = self.teacher.model.classifier(teacher_embedding)
        else:
            teacher_logits = given_logits[rows].to(device)
        target = student.embedding(teacher_logits, p["embedding_temperature"])
        timesteps = torch.randint(self.diffusion.num_train_timesteps, (len(rows),), generator=generator).to(device)
        noisy = self.diffusion.add_noise(target, torch.randn(target.shape, generator=generator).to(device), timesteps)
        inputs = self._noisy_features(features, generator)
        estimate = torch.zeros_like(noisy)
        if float(torch.rand((), generator=generator)) < p["self_conditioning"]:
            with torch.no_grad():
                estimate = student.denoiser(noisy, timesteps, inputs, estimate)
        prediction = student.denoiser(noisy, timesteps, inputs, estimate)
        student_logits = student.classifier(prediction)
        mse = F.mse_loss(prediction, target)
        ce, to_student, to_teacher = two_way_cross_entropy(teacher_logits, student_logits, p["row_temperature"], p["column_temperature"])
        return {"loss": mse + p["ce_weight"] * ce, "embedding_mse": mse.detach(), "cross_entropy": ce.detach(),
                "cross_entropy_teacher_to_student": to_student.detach(), "cross_entropy_student_to_teacher": to_teacher.detach()}

    def start_clusters(self) -> np.ndarray:
        """The partition the networks start from: the median of k-means and spectral clusterings
        at several kNN-graph sizes ("consensus", see diffclust.cluster.consensus), spectral
        clustering of the `init_neighbours`-nearest-neighbour graph, or k-means."""
        seed = self.p["random_state"]
        if self.p["init"] == "consensus":
            result = consensus_partition(self.features, self.p["n_clusters"], seed)
            self.start_partition = {"chosen": result.chosen, "mean_nmi_to_others": result.agreement, "uncertain": result.uncertain}
            if self.run_dir is not None and self.accelerator.is_main_process:
                atomic_write_json(self.run_dir / START_PARTITION_NAME, self.start_partition)
            return result.labels
        if self.p["init"] == "spectral":
            return spectral_partition(self.features.cpu().numpy(), self.p["n_clusters"], self.p["init_neighbours"], seed)
        return fit_kmeans(self.features, self.p["n_clusters"], seed=seed)[1]

    def initialise_from_clusters(self) -> np.ndarray:
        """Start teacher and student from a partition of the features (`start_clusters`):
        updates toward its one-hot assignments in place of the teacher's, `init_steps` at a
        time, until the student's own assignment agrees with the partition on at least
        `init_agreement` of the rows, INIT_PATIENCE rounds bring it no closer, or
        `max_init_steps` are spent; then the teacher copies the student. Returns the partition.

        Our addition (the published method starts from random weights): from random weights a
        balanced self-distillation can settle in a partition that splits one group and merges
        two others, which no later step undoes; a clustering puts the start in the right basin.
        The agreement check (label-free: the start is the reference) is there because a fixed
        number of steps copied curved clusters badly, and training never won the difference back
        (docs/benchmarks/cludi.md).
        """
        targets = self.start_clusters()
        given = torch.nn.functional.one_hot(torch.from_numpy(targets), self.p["n_clusters"]).float() * INIT_LOGIT
        generator = make_generator(self.p["random_state"] + 11)
        parameters = list(self.network.parameters())
        check_rows = torch.randperm(len(self.features), generator=make_generator(self.p["random_state"] + 13))[:INIT_CHECK_ROWS]
        self.set_learning_rate(0)
        steps, agreement, best, flat_rounds = 0, 0.0, 0.0, 0
        while True:
            self.network.train()
            for _ in range(min(self.p["init_steps"], self.p["max_init_steps"] - steps)):
                rows = torch.randperm(len(self.features), generator=generator)[: self.p["batch_size"]]
                self.optimise(self._step(rows, generator, given)["loss"], parameters)
                steps += 1
            agreement = self.start_agreement(targets, check_rows)
            flat_rounds = 0 if agreement >= best + INIT_MIN_GAIN else flat_rounds + 1
            best = max(best, agreement)
            if (agreement >= self.p["init_agreement"] or flat_rounds >= INIT_PATIENCE
                    or steps >= self.p["max_init_steps"] or self.p["init_steps"] == 0):
                break
        self.start_copy = {"init_steps_run": steps, "agreement_with_start": round(agreement, 4)}
        logger.info("After %d steps the networks reproduce the start partition on %.1f%% of the rows%s.", steps, 100 * agreement,
                    "" if agreement >= self.p["init_agreement"] else f" (asked: {100 * self.p['init_agreement']:.1f}%; "
                    + ("the step cap, max_init_steps, was reached)" if steps >= self.p["max_init_steps"] else "no closer in the last rounds)"))
        if agreement < self.p["init_agreement"]:
            logger.warning("The networks reproduce only %.1f%% of the start partition: clusters this fine for the features' noise "
                           "and the denoiser's width are hard to copy, and training may move further away. The fit compares its "
                           "final clusters with the start and keeps the one that follows the data's neighbourhoods better.",
                           100 * agreement)
        self.optimizer.state.clear()
        self.teacher.model.load_state_dict(self.network.state_dict())
        return targets

    def start_agreement(self, targets: np.ndarray, rows: torch.Tensor) -> float:
        """The share of `rows` whose assignment by the student (one sample, as the epochs'
        monitoring) is their cluster in `targets`."""
        self.network.eval()
        logits = mean_logits(self.network, self.diffusion, self.features[rows], 1, self.p["teacher_steps"], self.p["teacher_eta"],
                             make_generator(self.p["random_state"] + 17)).cpu()
        return float((assign(logits, self.p["column_temperature"])[0] == targets[rows.numpy()]).mean())

    # ------------------------------------------------------------------ cost
    @torch.no_grad()
    def estimated_seconds(self, predict_samples: int, predict_steps: int) -> float:
        """Seconds the fit will take, from a timed denoiser pass over one batch: every cost is a
        number of such row passes (a training step's backward counts as two more)."""
        p = self.p
        rows = self.features[: p["batch_size"]]
        noisy = torch.zeros(len(rows), self.network.denoiser.embedding_dim, device=rows.device)
        timesteps = torch.full((len(rows),), self.diffusion.num_train_timesteps // 2, device=rows.device)
        self.network.denoiser(noisy, timesteps, rows, noisy)  # the first call pays one-off costs
        started = time.perf_counter()
        for _ in range(3):
            self.network.denoiser(noisy, timesteps, rows, noisy)
        per_row = (time.perf_counter() - started) / (3 * len(rows))
        student = 3 + p["self_conditioning"]  # forward, backward (about two forwards), self-conditioning
        monitored = len(self.features) if self.monitor_rows is None else len(self.monitor_rows)
        per_epoch = (self.steps_per_epoch * p["batch_size"] * (p["teacher_steps"] + student)
                     + monitored * p["monitor_samples"] * p["teacher_steps"])
        epochs_left = max(0, p["epochs"] - self.start_epoch)
        init = p["init_steps"] * p["batch_size"] * student if p["init"] != "random" and self.start_labels is None else 0
        return per_row * (epochs_left * per_epoch + len(self.features) * predict_samples * predict_steps + init)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict:
        state = {"student": self.network.state_dict(), "teacher": self.teacher.model.state_dict(),
                 "optimizer": self.optimizer.state_dict()}
        if self.start_labels is not None:
            state["start_labels"] = torch.from_numpy(self.start_labels.astype(np.int64))
        return state

    def restore(self, state: dict) -> None:
        self.network.load_state_dict(state["student"])
        self.teacher.model.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "start_labels" in state:  # checkpoints written before the start was kept have none
            self.start_labels = state["start_labels"].numpy()

    # ------------------------------------------------------------------ loop
    def train_epoch(self, epoch: int) -> dict[str, float]:
        generator = make_generator(self.p["random_state"] + 7919 * (epoch + 1) + 104729 * self.accelerator.process_index)
        batches = epoch_batches(len(self.features), self.p["batch_size"], self.p["random_state"], epoch,
                                self.accelerator)[: self.steps_per_epoch]
        bar = progress(batches, self.accelerator, self.p["progress"], desc=f"epoch {epoch + 1}/{self.p['epochs']}", unit="batch")
        parameters = list(self.network.parameters())
        totals: dict[str, float] = {}
        self.network.train()
        for number, rows in enumerate(bar):
            step = epoch * self.steps_per_epoch + number
            self.set_learning_rate(step)
            parts = self._step(rows, generator)
            self.optimise(parts.pop("loss"), parameters)
            self.teacher.update(self.network, step)
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + float(value)
            bar.set_postfix({key: f"{value / (bar.n + 1):.4f}" for key, value in totals.items() if "_" not in key})
        self.network.eval()
        return {key: value / max(1, len(batches)) for key, value in totals.items()}

    def monitor_logits(self, epoch: int) -> torch.Tensor:
        """The teacher's logits of the monitored rows (all rows, or MONITOR_ROWS of them), timed:
        the ETA's cost of one row pass comes from here."""
        generator = make_generator(self.p["random_state"] + 31 * (epoch + 1))
        rows = self.features if self.monitor_rows is None else self.features[self.monitor_rows.to(self.features.device)]
        started = time.perf_counter()
        logits = mean_logits(self.teacher.model, self.diffusion, rows, self.p["monitor_samples"], self.p["teacher_steps"],
                             self.p["teacher_eta"], generator).cpu()
        passes = len(rows) * self.p["monitor_samples"] * self.p["teacher_steps"]
        self.seconds_per_row_pass = (time.perf_counter() - started) / passes
        return logits

    def prediction_seconds(self, rows: int, samples: int, steps: int) -> float:
        """The final prediction's seconds at the cost per row pass measured while monitoring."""
        return (self.seconds_per_row_pass or 0.0) * rows * samples * steps

    def run(self, resume: bool = False) -> None:
        if resume:
            self.resume()
        if self.start_epoch == 0 and self.p["init"] != "random" and self.start_labels is None:
            started = time.perf_counter()
            self.start_labels = self.initialise_from_clusters()
            # epoch 0: the start partition itself, scored like the epochs, so every run shows what training added
            chosen = (self.start_partition or {}).get("chosen", self.p["init"])
            self.log_record({"epoch": 0, "phase": f"start: {chosen}", **(self.start_copy or {})}, self.start_labels, started)
            self.save_checkpoint(0)  # an interruption in epoch 1 does not cost the start again
        done = self.start_epoch
        try:
            for epoch in range(self.start_epoch, self.p["epochs"]):
                started = time.perf_counter()
                record: dict = {"epoch": epoch + 1, **self.train_epoch(epoch)}
                self.logits = self.monitor_logits(epoch)
                record["lr"] = self.optimizer.param_groups[0]["lr"]
                if self.monitor_rows is not None:
                    record["monitored_rows"] = len(self.monitor_rows)
                self.end_epoch(epoch + 1, record, assign(self.logits, self.p["column_temperature"])[0], started, self.monitor_rows)
                done = epoch + 1
        except KeyboardInterrupt:
            if self.run_dir is not None and self.accelerator.is_main_process:
                logger.warning("Interrupted in epoch %d. %s keeps %s: the same command with --resume continues%s.", done + 1,
                               self.run_dir, f"the start and {done} trained epoch(s)" if done else "the start",
                               f"; with --resume --epochs {done} it finishes now from epoch {done}" if done else "")
            raise

    def seconds_after_training(self) -> float:
        return self.prediction_seconds(len(self.features), self.p["predict_samples"], self.p["predict_steps"])
