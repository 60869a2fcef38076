"""DiFiC training throughput with cached per-image constants versus recomputing them every step.

Both modes run the very same training step (DiFiCTrainer._step); the only difference is where
the latent, z and the object mask come from: the cache, or the backbone (image read, VAE, UNet
to block b at t-hat, UNet with attention capture at t-tilde, GMM) for every batch. Blocks of
steps alternate between the two modes so both see the same machine load.

    python benchmarks/difc_throughput.py ../shared/data/butterflies10 --backbone tiny-random
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from diffclust.backbones import load_backbone
from diffclust.data import ImageTensorDataset, scan_images
from diffclust.engine.runtime import make_accelerator
from diffclust.methods.difc import DiFiC
from diffclust.methods.difc.constants import ConstantComputer, ConstantSettings, load_or_compute_constants
from diffclust.methods.difc.network import DiFiCNetwork
from diffclust.methods.difc.training import DiFiCTrainer


class RecomputingStore:
    """Looks like a ConstantStore but computes each batch's constants from the images."""

    def __init__(self, computer: ConstantComputer, dataset: ImageTensorDataset, length: int):
        self.computer, self.dataset, self.length = computer, dataset, length
        self._key, self._values = None, None

    def __len__(self):
        return self.length

    def has(self, name):
        return True

    def batch(self, name, indices, device="cpu"):
        key = tuple(np.asarray(indices).tolist())
        if key != self._key:  # one computation per step serves latents, features and masks
            pixels = torch.stack([self.dataset[i][1] for i in key])
            self._key, self._values = key, self.computer(pixels)
        return self._values[name].float().to(device)


def time_steps(trainer: DiFiCTrainer, steps: int, batch_size: int, generator: torch.Generator) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        indices = torch.randint(len(trainer.store), (batch_size,), generator=generator)
        parts = trainer._step(trainer.network, indices, None, generator)
        parts["loss"].backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--backbone", default="tiny-random")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=3, help="alternating blocks per mode")
    args = parser.parse_args()

    accelerator = make_accelerator("auto")
    backbone = load_backbone(args.backbone, device=accelerator.device)
    collection = scan_images(args.data)
    params = DiFiC(10, backbone=args.backbone, batch_size=args.batch_size, progress=False, epochs=1, warmup_epochs=1).get_params()
    settings = ConstantSettings(backbone.resolution, params["feature_layer"], params["feature_timestep"], params["mask_timestep"],
                                params["mask_prompt"], True, 0)
    computer = ConstantComputer(backbone, settings, torch.randn(backbone.latent_shape(backbone.resolution), generator=torch.Generator().manual_seed(0)))
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        cached = load_or_compute_constants(computer, collection, folder, accelerator, args.batch_size, show_progress=False)
        cache_seconds = time.perf_counter() - started
        recompute = RecomputingStore(computer, ImageTensorDataset(collection, backbone.resolution), len(collection))
        torch.manual_seed(0)
        network = DiFiCNetwork(cached.shape("features")[0], backbone.token_dim, 10, with_head=False).to(accelerator.device)
        trainers = {mode: DiFiCTrainer(params, backbone, store, network, accelerator, None, None)
                    for mode, store in (("cached", cached), ("recomputed", recompute))}
        generator = torch.Generator().manual_seed(0)
        for trainer in trainers.values():  # warm-up: first calls allocate and compile kernels
            time_steps(trainer, 2, args.batch_size, generator)
        seconds = {mode: 0.0 for mode in trainers}
        for _ in range(args.rounds):
            for mode, trainer in trainers.items():
                seconds[mode] += time_steps(trainer, args.steps, args.batch_size, generator)
    images = args.steps * args.rounds * args.batch_size
    rate = {mode: images / value for mode, value in seconds.items()}
    print(f"backbone {args.backbone} on {accelerator.device}, batch {args.batch_size}, {images} images per mode, "
          f"{len(collection)} images cached once in {cache_seconds:.1f} s")
    for mode, value in rate.items():
        print(f"  {mode:>10}: {value:8.1f} images/s")
    print(f"  speed-up from caching: {rate['cached'] / rate['recomputed']:.2f}x")


if __name__ == "__main__":
    main()
