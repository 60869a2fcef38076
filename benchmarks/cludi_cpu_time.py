"""CLUDI's wall time on a CPU at 2,500 x 384 (the size of ImageNet-50's published ViT-S features):
the default settings run in full, and the estimate printed at the start is set beside the
measured time; the published settings (--paper-settings) are estimated only.

    python benchmarks/cludi_cpu_time.py --out benchmarks/results/cludi_cpu_time

Rows: ../shared/data/in50-vits-dev's 1,250 real ViT-S features, each twice (the second copy
with a little noise, renormalised), K = 50.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from diffclust import CLUDI  # noqa: E402
from diffclust.engine.runtime import make_accelerator  # noqa: E402
from diffclust.methods.cludi.estimator import PAPER_SETTINGS  # noqa: E402
from diffclust.methods.cludi.network import CLUDINetwork  # noqa: E402
from diffclust.methods.cludi.training import CLUDITrainer  # noqa: E402

from provenance import save_results  # noqa: E402

IN50 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "in50-vits-dev"


def estimate(features: torch.Tensor, k: int, **settings) -> float:
    model = CLUDI(k, device="cpu", progress=False, **settings)
    network = CLUDINetwork(features.shape[1], k, model.embedding_dim, model.hidden_dim, model.depth)
    trainer = CLUDITrainer({**model.get_params(), "n_clusters": k}, features, network, make_accelerator("cpu"), None, None)
    return trainer.estimated_seconds(model.predict_samples, model.predict_steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    base = np.load(IN50 / "features.npy", allow_pickle=False)
    copy = base + np.random.default_rng(0).normal(0, 0.01, base.shape).astype(np.float32)
    features = np.concatenate([base, copy / np.linalg.norm(copy, axis=1, keepdims=True)])
    rows = torch.from_numpy(features)  # the timed passes do not depend on the values, only on the shapes
    predicted = {"defaults": estimate(rows, 50), "paper settings": estimate(rows, 50, **PAPER_SETTINGS)}
    started = time.perf_counter()
    CLUDI(50, device="cpu", progress=False).fit(features)
    measured = time.perf_counter() - started
    result = {"rows": len(features), "dims": features.shape[1], "k": 50, "threads": torch.get_num_threads(),
              "device": f"cpu ({platform.machine()})", "estimated_seconds": {k: round(v, 1) for k, v in predicted.items()},
              "measured_seconds_defaults": round(measured, 1)}
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        save_results(args.out, "results", result)
        save_results(args.out, "results", None,
            f"# CLUDI on a CPU: {len(features)} x {features.shape[1]}, K = 50, {result['threads']} torch threads\n\n"
            f"`python benchmarks/cludi_cpu_time.py`\n\n| settings | estimated at start | measured |\n|---|---|---|\n"
            f"| defaults | {predicted['defaults'] / 60:.1f} min | {measured / 60:.1f} min |\n"
            f"| --paper-settings | {predicted['paper settings'] / 60:.0f} min | (not run) |\n")


if __name__ == "__main__":
    main()
