"""DiEC's training loop at the chosen (layer, timestep).

Each epoch starts from every image's soft assignment q under the current model: the target P
and the k nearest neighbours in the embedding (the adaptive graph) are fixed from it for the
epoch. P is the start partition, label-smoothed, for the first ``self_label_epochs`` epochs
(self-labelling) and DEC's sharpened q after them. Each step then minimises

    KL(P || Q) - graph_weight * mean_j log(q_i . q_j) - entropy_weight * H(mean q)
               + denoising_weight * |UNet(x_t, t) - target|^2   (fine-tuning only)

With ``finetune_unet`` the UNet is trained too: the features are recomputed through it every
step (one fresh noise draw) and a parallel denoising loss at random timesteps keeps it a
diffusion model. Frozen, the features are read once (averaged over the noise draws) and reused.
Gradients are averaged over processes by hand, so the UNet need not sit inside a DDP wrapper.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from diffclust.backbones.base import DiffusionBackbone
from diffclust.cluster.dec import dec_kl_loss, partition_target, target_distribution
from diffclust.cluster.losses import entropy, neighbour_consistency_loss
from diffclust.cluster.neighbours import nearest_neighbours
from diffclust.engine.runtime import epoch_batches, progress
from diffclust.engine.trainer import EpochTrainer
from diffclust.methods.diec.features import LayerFeatureReader
from diffclust.methods.diec.network import DiECNetwork
from diffclust.seeding import make_generator

logger = logging.getLogger(__name__)

#: settings that must not change between an interrupted run and its resumption
#: the layer and timestep trained at are the run's identity too: a search.json replaced under a
#: run would otherwise resume its head at another pair
RESUME_KEYS = ("layer_", "timestep_", "n_clusters", "batch_size", "random_state", "finetune_unet", "noise_draws", "pool_size", "mapping_hidden", "n_neighbours",
               "init", "self_label_epochs")
#: label smoothing of the start partition while it is the target
SELF_LABEL_SMOOTHING = 0.1


class DiECTrainer(EpochTrainer):
    resume_keys = RESUME_KEYS

    def __init__(self, params: dict, backbone: DiffusionBackbone | None, reader: LayerFeatureReader | None,
                 latents: torch.Tensor | None, network: DiECNetwork, accelerator: Accelerator, labels: np.ndarray | None,
                 run_dir: Path | None, features: torch.Tensor | None = None):
        """`features` at hand (frozen UNet only) make the backbone, reader and latents optional:
        the head then trains on any feature matrix (benchmarks/diec_training_stage.py)."""
        super().__init__(params, accelerator, labels, run_dir)
        if reader is None and (features is None or params["finetune_unet"]):
            raise ValueError("DiECTrainer needs a backbone, reader and latents unless frozen features are given")
        self.backbone = backbone
        self.reader = reader
        self.layer = reader.layers[0] if reader is not None else None
        self.timestep = int(params["timestep_"])
        self.latents = latents
        self.n_items = len(features) if features is not None else len(latents)
        #: the start partition (N,): the target of the self-labelling epochs, kept in the checkpoint
        self.start_labels: torch.Tensor | None = None
        self.network = network.to(accelerator.device)
        self.finetune = bool(params["finetune_unet"])
        self.unet = backbone.denoiser() if self.finetune else None
        groups = [{"params": list(network.parameters()), "lr": params["lr"]}]
        if self.unet is not None:
            self.unet.requires_grad_(True)
            groups.append({"params": list(self.unet.parameters()), "lr": params["unet_lr"]})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=params["weight_decay"])
        #: a frozen UNet's features never change: read once (or handed over, when choosing K read them)
        self._frozen_features: torch.Tensor | None = None if self.finetune else features
        #: (embedding, q) of every image under the model as it is now
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ features and assignments
    def features(self) -> torch.Tensor:
        """Every image's feature at (layer, t), averaged over the noise draws, with the UNet as it
        is (read once when frozen). The UNet stays in eval mode even while it is fine-tuned:
        diffusers UNets have no dropout by default and GroupNorm keeps no running statistics."""
        if self._frozen_features is not None:
            return self._frozen_features
        features = self.reader.read_all(self.latents, self.timestep, self.p["batch_size"], self.p["progress"])[self.layer]
        if not self.finetune:
            self._frozen_features = features
        return features

    @torch.no_grad()
    def assign_all(self, features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding, q) of every image; `features` saves reading them again when at hand."""
        features = (self.features() if features is None else features).to(self.accelerator.device)
        parts = [self.network(chunk) for chunk in features.split(4096)]
        return torch.cat([e for e, _ in parts]).cpu(), torch.cat([q for _, q in parts]).cpu()

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict:
        state = {"network": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "pair": json.dumps([self.layer, self.timestep]), "start_labels": self.start_labels}
        if self.unet is not None:
            state["unet"] = self.unet.state_dict()
        return state

    def restore(self, state: dict) -> None:
        self.network.load_state_dict(state["network"])
        if self.unet is not None:
            self.unet.load_state_dict(state["unet"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_labels = state["start_labels"]

    # ------------------------------------------------------------------ training
    def _denoising_loss(self, latents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        timesteps = torch.randint(self.backbone.num_train_timesteps, (len(latents),), generator=generator).to(latents.device)
        noise = torch.randn(latents.shape, generator=generator).to(latents.device)
        noisy = self.backbone.add_noise(latents, noise, timesteps)
        prediction = self.backbone.run_unet(noisy, timesteps, self.reader.prompt(len(latents))).prediction
        return F.mse_loss(prediction.float(), self.backbone.prediction_target(latents, noise, timesteps).float())

    def _step(self, rows: torch.Tensor, target: torch.Tensor, neighbour_q: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        device = self.accelerator.device
        if self.finetune:
            latents = self.latents[rows].to(device).float()
            with self.accelerator.autocast():
                features = self.reader.one_draw(latents, self.timestep, generator=generator)[self.layer]
        else:
            features = self._frozen_features[rows].to(device)
        _, q = self.network(features)
        kl = dec_kl_loss(q, target[rows].to(device))
        graph = neighbour_consistency_loss(q, neighbour_q[rows].to(device))
        spread = entropy(q.mean(dim=0))
        loss = kl + self.p["graph_weight"] * graph - self.p["entropy_weight"] * spread
        parts = {"kl_loss": kl.detach(), "graph_loss": graph.detach(), "assignment_entropy": spread.detach()}
        if self.finetune and self.p["denoising_weight"] > 0:
            with self.accelerator.autocast():
                denoising = self._denoising_loss(latents, generator)
            loss = loss + self.p["denoising_weight"] * denoising
            parts["denoising_loss"] = denoising.detach()
        parts["loss"] = loss
        return parts

    def target(self, epoch: int, q: torch.Tensor) -> torch.Tensor:
        """The epoch's P: the smoothed start partition while self-labelling, then DEC's."""
        if epoch < self.p["self_label_epochs"]:
            return partition_target(self.start_labels, q.shape[1], SELF_LABEL_SMOOTHING)
        return target_distribution(q)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        embedding, q = self.state
        target = self.target(epoch, q)
        neighbours = torch.from_numpy(nearest_neighbours(embedding, self.p["n_neighbours"]))
        neighbour_q = q[neighbours]  # (N, n, K)
        generator = make_generator(self.p["random_state"] + 7919 * (epoch + 1) + 104729 * self.accelerator.process_index)
        batches = epoch_batches(self.n_items, self.p["batch_size"], self.p["random_state"], epoch, self.accelerator)
        bar = progress(batches, self.accelerator, self.p["progress"], desc=f"epoch {epoch + 1}/{self.p['epochs']}", unit="batch")
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        totals: dict[str, float] = {}
        self.network.train()
        for rows in bar:
            parts = self._step(rows, target, neighbour_q, generator)
            self.optimise(parts.pop("loss"), parameters)
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + float(value)
            bar.set_postfix({key: f"{value / (bar.n + 1):.4f}" for key, value in totals.items()})
        self.network.eval()
        return {key: value / max(1, len(batches)) for key, value in totals.items()}

    def run(self, resume: bool = False) -> None:
        resumed = resume and self.resume()
        features = self.features()
        if not resumed:  # epoch 0: the start, logged and checkpointed like any epoch
            self.start_labels = self.network.initialise(features.to(self.accelerator.device), self.p["random_state"], self.p["init"])
        self.state = self.assign_all(features)
        if not resumed:
            self.end_epoch(0, self._record(0, {}, None), self.clusters(), time.perf_counter())
        for epoch in range(self.start_epoch, self.p["epochs"]):
            started = time.perf_counter()
            before = self.clusters()
            losses = self.train_epoch(epoch)
            self.state = self.assign_all()
            self.end_epoch(epoch + 1, self._record(epoch + 1, losses, before), self.clusters(), started)
        if self.unet is not None:
            self.unet.requires_grad_(False)
            self.unet.eval()

    def clusters(self) -> np.ndarray:
        return self.state[1].argmax(dim=1).numpy()

    def _record(self, epoch: int, losses: dict[str, float], before: np.ndarray | None) -> dict:
        """Losses, mean confidence and the fraction of labels changed since the epoch began."""
        record: dict = {"epoch": epoch, **losses, "mean_confidence": float(self.state[1].max(dim=1).values.mean())}
        if before is not None:
            record["labels_changed"] = float((self.clusters() != before).mean())
        return record
