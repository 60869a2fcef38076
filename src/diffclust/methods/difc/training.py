"""DiFiC's training loop: masked diffusion distillation, then cluster guidance after warm-up.

Each epoch: recompute every proxy word (cheap: z is cached), find each one's neighbours if
the cluster head is training, then go once through the images in a seeded order. The epoch
ends with an assignment of every image (head, or k-means during warm-up), a log record and an
atomic checkpoint. Randomness is drawn from generators seeded by (seed, epoch, process), so a
resumed run continues exactly as an uninterrupted one would.

With n_clusters "auto", the estimator chooses K on z before training (the rows the hand-over
partition is built from) and the trainer runs as with a given K; the checkpoint keeps K.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator

from diffclust.backbones.base import DiffusionBackbone
from diffclust.cluster.kmeans import fit_kmeans
from diffclust.cluster.losses import AssignmentMemoryBank, cluster_guidance_loss, cluster_shares
from diffclust.cluster.neighbours import nearest_neighbours
from diffclust.engine.runtime import epoch_batches, progress
from diffclust.engine.trainer import EpochTrainer
from diffclust.errors import DiffclustError
from diffclust.methods.difc.balance import GradientShare
from diffclust.methods.difc.constants import ConstantStore
from diffclust.methods.difc.hand_over import feature_rows, manifold_start
from diffclust.methods.difc.losses import masked_diffusion_loss
from diffclust.methods.difc.network import DiFiCNetwork, assign, assign_probabilities
from diffclust.methods.difc.timesteps import TimestepSampler, cosine_timestep_probabilities, uniform_timestep_probabilities
from diffclust.seeding import make_generator

logger = logging.getLogger(__name__)

#: settings that must not change between an interrupted run and its resumption
RESUME_KEYS = (
    "n_clusters", "feature_layer", "feature_timestep", "mask_timestep", "prompt_template", "mask_prompt",
    "object_concentration", "cluster_guidance", "timestep_sampling", "warmup_epochs", "batch_size",
    "random_state", "extractor_hidden", "n_neighbours", "memory_bank_size", "head_init", "cluster_gradient_ratio",
    "size_prior", "neighbour_space",
)
HEAD_INIT_STEPS = 200
#: the head's learning rate ramps up over this many steps once guidance starts: a fresh Adam
#: state makes the first steps sign(g) * lr for every weight, which flips a good head at once
HEAD_WARMUP_STEPS = 100
#: steps between progress-bar loss updates (each one waits for the device)
POSTFIX_EVERY = 10
TIMESTEP_DISTRIBUTIONS = {"cosine": cosine_timestep_probabilities, "uniform": uniform_timestep_probabilities}


class DiFiCTrainer(EpochTrainer):
    resume_keys = RESUME_KEYS

    def __init__(self, params: dict, backbone: DiffusionBackbone, store: ConstantStore, network: DiFiCNetwork,
                 accelerator: Accelerator, labels: np.ndarray | None, run_dir: Path | None, k: int | None = None,
                 z_rows: np.ndarray | None = None):
        super().__init__(params, accelerator, labels, run_dir)
        self.backbone = backbone
        self.store = store
        self.network = network
        network.gradient_share = GradientShare(params["cluster_gradient_ratio"])
        #: K: `k` (n_clusters "auto": chosen by the estimator), else the given n_clusters
        self.k = int(params["n_clusters"] if k is None else k)
        self.optimizer = torch.optim.AdamW([{"params": network.extractor.parameters()}], lr=params["lr"], weight_decay=params["weight_decay"])
        self.bank = AssignmentMemoryBank(params["memory_bank_size"], self.k)
        if network.head is not None:  # in a group of its own: its learning rate ramps up (HEAD_WARMUP_STEPS)
            self.optimizer.add_param_group({"params": network.head.parameters(), "name": "head"})
        self.sampler = TimestepSampler(TIMESTEP_DISTRIBUTIONS[params["timestep_sampling"]](backbone.num_train_timesteps))
        self.centres: np.ndarray | None = None
        #: (proxy words, labels, confidence) of every image after the last epoch run
        self.assignment: tuple[torch.Tensor, np.ndarray, np.ndarray] | None = None
        #: with size_prior "start": the hand-over partition's cluster shares, which the balance
        #: term pulls the mean assignment towards (None: the paper's equal sizes)
        self.size_shares: torch.Tensor | None = None
        #: the hand-over partition, which the fit checks its final clusters against (kept in the
        #: checkpoint: a resume past the hand-over does not compute it again)
        self.start_labels: np.ndarray | None = None
        #: every image's z as a row (see hand_over), read once when the hand-over or the neighbours need it
        self._feature_rows: np.ndarray | None = z_rows
        #: with neighbour_space "features": each image's neighbours in z, found once (z never changes)
        self._feature_neighbours: torch.Tensor | None = None

    # ------------------------------------------------------------------ phases and assignment
    def guided(self, epoch: int) -> bool:
        """True once the cluster head trains (after warm-up, when cluster guidance is on)."""
        return self.p["cluster_guidance"] and epoch >= self.p["warmup_epochs"]

    def phase(self, epoch: int) -> str:
        """The epoch's phase, as the log and the progress bar name it: warm-up, then guided; or,
        without cluster guidance, distillation throughout."""
        if self.guided(epoch):
            return "guided"
        return "warm-up" if self.p["cluster_guidance"] else "distillation"

    @torch.no_grad()
    def all_proxies(self, chunk: int = 256) -> torch.Tensor:
        extractor = self.accelerator.unwrap_model(self.network).extractor
        was_training = extractor.training
        extractor.eval()
        device = self.accelerator.device
        rows = torch.arange(len(self.store))
        words = [extractor(self.store.batch("features", part, device)).float() for part in rows.split(chunk)]
        extractor.train(was_training)
        return torch.cat(words)

    def assign_all(self, epoch: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """(proxy words, labels, confidence) for every image with the model as it is after `epoch`."""
        proxies = self.all_proxies()
        if self.guided(epoch):
            self.centres = None
            head = self.accelerator.unwrap_model(self.network).head
            head.calibrate(proxies)
            labels, confidence = assign(proxies, head, None)
        else:
            self.centres, _ = fit_kmeans(proxies, self.k, seed=self.p["random_state"])
            labels, confidence = assign(proxies, None, self.centres)
        return proxies, labels, confidence

    def z_rows(self) -> np.ndarray:
        if self._feature_rows is None:
            self._feature_rows = feature_rows(self.store, self.p["random_state"])
        return self._feature_rows

    def start_partition(self, proxies: Callable[[], torch.Tensor]) -> np.ndarray:
        """The hand-over partition: UMAP + k-means of z (head_init "manifold"), else k-means of S*
        (`proxies()` gives every image's S*)."""
        if self.p["head_init"] == "manifold":
            return manifold_start(self.z_rows(), self.k, self.p["random_state"])
        return fit_kmeans(proxies(), self.k, seed=self.p["random_state"])[1]

    def neighbours(self, proxies: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Each image's n_neighbours nearest others: in z, found once ("features"), or in this
        epoch's S* ("proxies", read from `proxies()`)."""
        if self.p["neighbour_space"] == "proxies":
            return torch.from_numpy(nearest_neighbours(proxies(), self.p["n_neighbours"]))
        if self._feature_neighbours is None:
            self._feature_neighbours = torch.from_numpy(nearest_neighbours(self.z_rows(), self.p["n_neighbours"]))
        return self._feature_neighbours

    def hand_over(self, proxies: Callable[[], torch.Tensor], epoch: int) -> None:
        """What the first guided epoch (or a resume into the guided phase) needs from the
        hand-over partition: the head's start, and the size prior's shares (`proxies()` gives
        every image's S*). Every process computes the same thing from the same seed."""
        first = epoch == self.p["warmup_epochs"]
        start_head = first and self.p["head_init"] != "random"
        need_shares = self.p["size_prior"] == "start" and self.size_shares is None
        if not (start_head or need_shares):
            return
        start = self.start_partition(proxies)
        self.start_labels = start
        if start_head:
            self.initialise_head(proxies(), start)
        if need_shares:
            self.size_shares = cluster_shares(start, self.k)
            logger.info("Cluster sizes are held near the hand-over partition's shares: %s",
                        ", ".join(f"{share:.1%}" for share in self.size_shares.tolist()))

    def initialise_head(self, proxies: torch.Tensor, start: np.ndarray) -> None:
        """Start g from the hand-over partition: fit it to the labels `start` (cross-entropy).

        A randomly initialised head often settles in a merged local optimum (two groups in one
        cluster) and throws away what warm-up found; this hand-over gives it a partition to
        start from.
        """
        targets = torch.from_numpy(start).to(proxies.device)
        head = self.accelerator.unwrap_model(self.network).head.train()
        optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
        for _ in range(HEAD_INIT_STEPS):
            loss = torch.nn.functional.cross_entropy(head(proxies), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def _set_head_lr(self, optimizer, guided_step: int) -> None:
        for group in optimizer.param_groups:
            if group.get("name") == "head":
                group["lr"] = self.p["lr"] * min(1.0, (guided_step + 1) / HEAD_WARMUP_STEPS)

    @torch.no_grad()
    def fill_bank(self, proxies: torch.Tensor, epoch: int) -> None:
        """Start the memory bank with the head's assignments of up to `memory_bank_size` images.

        An empty bank makes the first steps' mean assignment that of one small batch: any
        imbalance in it is 'corrected' by the entropy term, and the first Adam steps on the
        fresh head can push every image into one cluster, where the softmax saturates.
        """
        order = torch.randperm(len(proxies), generator=make_generator(self.p["random_state"] + epoch))[: self.p["memory_bank_size"]]
        head = self.accelerator.unwrap_model(self.network).head
        head.calibrate(proxies)
        self.bank.push(assign_probabilities(head, proxies[order]))

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict:
        state = {"network": self.accelerator.unwrap_model(self.network).state_dict(), "optimizer": self.optimizer.state_dict(),
                 "bank": self.bank.state(), "n_clusters": self.k}
        if self.size_shares is not None:
            state["size_shares"] = self.size_shares
        if self.start_labels is not None:
            state["start_labels"] = torch.from_numpy(np.asarray(self.start_labels, dtype=np.int64))
        return state

    def restore(self, state: dict) -> None:
        if self.network.head is not None and not any(name.startswith("head.") for name in state["network"]):
            raise DiffclustError(f"{self.run_dir} holds a checkpoint from the warm-up of a `--k auto` run of an earlier diffclust, "
                                 "which chose K after warm-up; this version chooses it before training and cannot continue that "
                                 "run. Start it again without --resume (or with another --out).")
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.bank.load_state(state["bank"])
        self.size_shares = state.get("size_shares")
        if "start_labels" in state:  # checkpoints written before the start was kept have none
            self.start_labels = state["start_labels"].numpy()

    # ------------------------------------------------------------------ training
    def cached_names(self) -> list[str]:
        """The constants a training step reads for its own rows."""
        return ["features", "latents"] + (["masks"] if self.p["object_concentration"] else [])

    def _step(self, model, indices: torch.Tensor, neighbours: torch.Tensor | None, generator: torch.Generator,
              cached: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """One training step's losses; `cached` holds the rows' constants when they were prefetched."""
        device, store, backbone = self.accelerator.device, self.store, self.backbone
        batch = len(indices)
        cached = cached or {name: store.batch(name, indices, device) for name in self.cached_names()}
        z, latents, mask = cached["features"], cached["latents"], cached.get("masks")
        if neighbours is not None:
            picks = torch.randint(neighbours.shape[1], (batch,), generator=generator)
            z = torch.cat([z, store.batch("features", neighbours[indices, picks], device)])
        timesteps = self.sampler(batch, generator).to(device)
        noise = torch.randn(latents.shape, generator=generator).to(device)
        with self.accelerator.autocast():
            proxies, logits = model(z)
            noisy = backbone.add_noise(latents, noise, timesteps)
            prompt = backbone.encode_prompt(self.p["prompt_template"], batch, proxy=proxies[:batch])
            prediction = backbone.run_unet(noisy, timesteps, prompt).prediction
        target = backbone.prediction_target(latents, noise, timesteps)
        diffusion = masked_diffusion_loss(prediction, target, mask)
        parts = {"loss": diffusion, "diffusion_loss": diffusion.detach()}
        if neighbours is not None:
            probs = logits.float().softmax(dim=1)
            total, consistency, spread = cluster_guidance_loss(probs[:batch], probs[batch:], self.bank, self.p["entropy_weight"],
                                                               self.size_shares)
            self.bank.push(probs[:batch])
            parts["loss"] = diffusion + self.p["cluster_loss_weight"] * total
            parts.update(consistency_loss=consistency.detach(), assignment_entropy=spread.detach())
        return parts

    def train_epoch(self, model, optimizer, epoch: int) -> dict[str, float]:
        guided = self.guided(epoch)
        neighbours = None
        if guided:  # one pass of f over every cached z serves the hand-over, the bank and the neighbours, made only
            # when one of them needs S* (with neighbours in z, a guided epoch after the first needs none)
            proxies = functools.cache(self.all_proxies)
            if self.accelerator.unwrap_model(model).head is None:
                raise RuntimeError("cluster guidance started without a head; run() builds it once K is known")
            self.hand_over(proxies, epoch)
            if len(self.bank) == 0:
                self.fill_bank(proxies(), epoch)
            neighbours = self.neighbours(proxies)
            self._feature_rows = None  # the start and the neighbours are found: N x 4,096 floats need not stay
        generator = make_generator(self.p["random_state"] + 7919 * (epoch + 1) + 104729 * self.accelerator.process_index)
        batches = epoch_batches(len(self.store), self.p["batch_size"], self.p["random_state"], epoch, self.accelerator)
        bar = progress(batches, self.accelerator, self.p["progress"], desc=f"epoch {epoch + 1}/{self.p['epochs']} ({self.phase(epoch)})",
                       unit="batch")
        totals: dict[str, torch.Tensor] = {}
        model.train()
        guided_steps_before = (epoch - self.p["warmup_epochs"]) * len(batches)
        cached_rows = self.store.prefetch(self.cached_names(), batches, self.accelerator.device)
        for number, (indices, cached) in enumerate(zip(bar, cached_rows)):
            if guided:
                self._set_head_lr(optimizer, guided_steps_before + number)
            parts = self._step(model, indices, neighbours, generator, cached)
            self.accelerator.backward(parts.pop("loss"))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for key, value in parts.items():  # summed on the device: reading a value each step would wait for the GPU
                totals[key] = totals[key] + value if key in totals else value.clone()
            if number % POSTFIX_EVERY == POSTFIX_EVERY - 1:
                bar.set_postfix({key: f"{float(value) / (number + 1):.4f}" for key, value in totals.items()})
        means = {key: float(value) / max(1, len(batches)) for key, value in totals.items()}
        share = self.accelerator.unwrap_model(model).gradient_share.mean_and_reset()
        if share is not None:  # the mean scale on the cluster gradient reaching f (1: not capped)
            means["cluster_gradient_scale"] = share
        if self.accelerator.num_processes > 1:  # average over processes
            keys = sorted(means)
            reduced = self.accelerator.reduce(torch.tensor([means[k] for k in keys], device=self.accelerator.device), "mean")
            means = dict(zip(keys, reduced.tolist()))
        return means

    def run(self, resume: bool = False) -> None:
        if resume:
            self.resume()
        model, optimizer = self.accelerator.prepare(self.network, self.optimizer)
        for epoch in range(self.start_epoch, self.p["epochs"]):
            started = time.perf_counter()
            record: dict = {"epoch": epoch + 1, "phase": self.phase(epoch)}
            record.update(self.train_epoch(model, optimizer, epoch))
            self.assignment = self.assign_all(epoch)
            _, labels, confidence = self.assignment
            record["mean_confidence"] = float(confidence.mean())
            self.end_epoch(epoch + 1, record, labels, started)
        self.network = self.accelerator.unwrap_model(model)
        if self.assignment is None:  # nothing left to train (a finished run resumed, or epochs == 0)
            self.assignment = self.assign_all(self.p["epochs"] - 1)
