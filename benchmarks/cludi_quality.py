"""CLUDI against k-means on the same features, over several seeds (mean and spread).

Features come from a file (--features, with --labels) or from images through a backbone at a
given layer and timestep (saved as features.npy in --out, so later runs can reuse them):

    python benchmarks/cludi_quality.py --data ../shared/data/usps --backbone .data/usps-ddpm \
        --layer mid_block --timestep 150 --out benchmarks/results/cludi_usps --epochs 20
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from diffclust import CLUDI, DiEC
from diffclust.cluster.kmeans import fit_kmeans
from diffclust.cluster.metrics import clustering_scores
from diffclust.engine.checkpoint import atomic_write_json, atomic_write_text
from diffclust.methods.cludi.inputs import read_feature_file, read_row_labels


def load_features(args) -> tuple[torch.Tensor, np.ndarray, str]:
    if args.features is not None:
        values, labels = read_feature_file(args.features)
        if args.labels is not None:
            labels = read_row_labels(args.labels, len(values))
        if labels is None:
            raise SystemExit("The features need labels to be scored: pass --labels.")
        return values, labels, str(args.features)
    reader = DiEC(2, backbone=args.backbone, layer=args.layer, timestep=args.timestep, noise_draws=args.noise_draws,
                  pool_size=args.pool_size, batch_size=256, device="cpu", progress=False)
    collection, values, layer, timestep = reader.extract_features(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "features.npy", values.numpy())
    np.save(args.out / "labels.npy", collection.labels)
    return values, collection.labels, f"{args.data} through {args.backbone} at {layer}, t={timestep} (pool {args.pool_size}, {args.noise_draws} draws)"


def summary(rows: list[dict], method: str) -> dict:
    picked = [row for row in rows if row["method"] == method]
    return {key: (float(np.mean([r[key] for r in picked])), float(np.std([r[key] for r in picked])))
            for key in ("acc", "nmi", "ari", "seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path)
    parser.add_argument("--labels", type=Path)
    parser.add_argument("--data")
    parser.add_argument("--backbone")
    parser.add_argument("--layer", default="mid_block")
    parser.add_argument("--timestep", type=int, default=150)
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--noise-draws", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--k", type=int, default=None)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden-dim", type=int, default=256)
    parser.add_argument("--teacher-steps", type=int, default=10)
    parser.add_argument("--predict-samples", type=int, default=8)
    parser.add_argument("--predict-steps", type=int, default=20)
    parser.add_argument("--monitor-samples", type=int, default=1, help="samples behind the per-epoch metrics")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--inits", default="kmeans,random", help="CLUDI starts to compare")
    args = parser.parse_args()

    values, labels, source = load_features(args)
    k = args.k or len(np.unique(labels))
    standardised = ((values - values.mean(dim=0)) / values.std(dim=0).clamp_min(1e-6)).numpy()
    settings = dict(epochs=args.epochs, hidden_dim=args.hidden_dim, teacher_steps=args.teacher_steps, lr=args.lr,
                    predict_samples=args.predict_samples, predict_steps=args.predict_steps,
                    monitor_samples=args.monitor_samples, device="cpu", progress=False)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        started = time.perf_counter()
        _, predicted = fit_kmeans(standardised, k, seed=seed)
        rows.append({"method": "k-means", "seed": seed, **clustering_scores(labels, predicted),
                     "seconds": round(time.perf_counter() - started, 1)})
        for init in args.inits.split(","):
            started = time.perf_counter()
            model = CLUDI(k, random_state=seed, init=init, **settings).fit(values, labels)
            rows.append({"method": f"CLUDI (init {init})", "seed": seed, **clustering_scores(labels, model.labels_),
                         "seconds": round(time.perf_counter() - started, 1)})
            print(rows[-1], flush=True)
    methods = list(dict.fromkeys(row["method"] for row in rows))
    report = {"features": source, "rows_in_data": len(values), "dims": int(values.shape[1]), "k": k, "settings": settings,
              "device": f"cpu ({platform.machine()})", "runs": rows, "summary": {m: summary(rows, m) for m in methods}}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "results.json", report)
    lines = [f"# CLUDI vs k-means: {source}", "", f"{len(values)} rows x {values.shape[1]} dims, K={k}, seeds {args.seeds}; "
             f"CLUDI settings {settings} (CPU: fewer epochs and samples than the published 200 epochs, 64 x 50).", "",
             "| method | ACC % (mean ± sd) | NMI | ARI | seconds per run |", "|---|---|---|---|---|"]
    for method in methods:
        s = report["summary"][method]
        lines.append(f"| {method} | {100 * s['acc'][0]:.2f} ± {100 * s['acc'][1]:.2f} | {s['nmi'][0]:.4f} ± {s['nmi'][1]:.4f} | "
                     f"{s['ari'][0]:.4f} ± {s['ari'][1]:.4f} | {s['seconds'][0]:.0f} |")
    atomic_write_text(args.out / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
