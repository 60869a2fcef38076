"""DiEC's training stage on fixed features: plain DEC against self-labelling first, over seeds.

The head DiEC trains (residual mapping, Student-t centres, KL + graph + entropy losses) runs on
a feature matrix as a frozen UNet would hand it over, so its training choices can be checked on
data the USPS DDPM never saw. Each --set NAME=FOLDER names a folder with features.npy and
labels.npy (../shared/data/in50-vits-dev: real ViT-S features of ImageNet-50). Each
--self-label-epochs value is one row; every other setting is DiEC's default (init="umap").
Labels only score. Writes training_stage.md and .json to --out:

    python benchmarks/diec_training_stage.py --set in50-vits-dev=../shared/data/in50-vits-dev \
        --out benchmarks/results/diec_training_stage --seeds 0,1,2 --epochs 20 --self-label-epochs 0,10
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from diffclust import DiEC  # noqa: E402
from diffclust.cluster.metrics import clustering_scores  # noqa: E402
from diffclust.methods.diec.network import DiECNetwork  # noqa: E402
from diffclust.methods.diec.training import DiECTrainer  # noqa: E402
from diffclust.seeding import seed_everything  # noqa: E402

from provenance import save_results  # noqa: E402

SCORE_KEYS = ("acc", "nmi", "ari")


def train_head(features: torch.Tensor, labels: np.ndarray, k: int, seed: int, epochs: int, self_label_epochs: int) -> dict:
    """One DiEC training run on `features` with the estimator's own settings (frozen UNet)."""
    estimator = DiEC(k, finetune_unet=False, epochs=epochs, self_label_epochs=self_label_epochs, random_state=seed,
                     device="cpu", progress=False)
    params = {**estimator.get_params(deep=False), "timestep_": 0}
    seed_everything(seed)
    network = DiECNetwork(features.shape[1], k)
    trainer = DiECTrainer(params, None, None, None, network, Accelerator(cpu=True), labels, None, features)
    started = time.perf_counter()
    trainer.run()
    history = trainer.log.records
    return {"seed": seed, "self_label_epochs": self_label_epochs, "seconds": round(time.perf_counter() - started, 1),
            "start": {key: history[0][key] for key in SCORE_KEYS},
            "final": clustering_scores(labels, trainer.clusters()),
            "acc_by_epoch": [round(record["acc"], 4) for record in history]}


def markdown(report: dict) -> str:
    lines = ["# DiEC's training stage on fixed features", "",
             f"`python benchmarks/diec_training_stage.py` with {report['epochs']} epochs, seeds {report['seeds']}, "
             "DiEC's defaults otherwise (init='umap', frozen features). Labels only score. Mean ± sd over seeds.", ""]
    for name, runs in report["sets"].items():
        lines += [f"## {name}", "", "| self_label_epochs | start ACC % | final ACC % | final NMI | final ARI | s per run |",
                  "|---|---|---|---|---|---|"]
        for value in report["self_label_epochs"]:
            rows = [run for run in runs if run["self_label_epochs"] == value]

            def stat(part: str, key: str, scale: float = 1.0, digits: int = 2) -> str:
                values = scale * np.array([row[part][key] for row in rows])
                spread = values.std(ddof=1) if len(values) > 1 else 0.0
                return f"{values.mean():.{digits}f} ± {spread:.{digits}f}"

            seconds = np.mean([row["seconds"] for row in rows])
            lines.append(f"| {value} | {stat('start', 'acc', 100)} | {stat('final', 'acc', 100)} | "
                         f"{stat('final', 'nmi', 1, 4)} | {stat('final', 'ari', 1, 4)} | {seconds:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", required=True, metavar="NAME=FOLDER")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--self-label-epochs", default="0,10")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    values = [int(value) for value in args.self_label_epochs.split(",")]
    report = {"epochs": args.epochs, "seeds": seeds, "self_label_epochs": values, "sets": {}}
    for spec in args.set:
        name, folder = spec.split("=", 1)
        features = torch.from_numpy(np.load(Path(folder) / "features.npy", allow_pickle=False)).float()
        labels = np.load(Path(folder) / "labels.npy", allow_pickle=False)
        k = len(np.unique(labels))
        runs = []
        for seed in seeds:
            for value in values:
                run = train_head(features, labels, k, seed, args.epochs, value)
                print(json.dumps({"set": name, **{key: run[key] for key in ("seed", "self_label_epochs", "seconds", "final")}}),
                      flush=True)
                runs.append(run)
        report["sets"][f"{name} ({len(features)} x {features.shape[1]}, K={k})"] = runs
    args.out.mkdir(parents=True, exist_ok=True)
    save_results(args.out, "training_stage", report)
    save_results(args.out, "training_stage", None, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
