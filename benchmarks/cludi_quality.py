"""CLUDI against k-means on the same features, over several seeds (mean ± sd of ACC, NMI, ARI and wall time).

Each --set NAME=FOLDER names a folder holding features.npy and labels.npy (../shared/data/in50-vits-dev,
or the USPS features benchmarks/diec_quality.py writes at DiEC's searched pair); `blobs` adds
imbalanced Gaussian blobs (K = 10, 2,000 x 64). Labels only score. CLUDI runs with its
defaults unless --variants gives JSON settings per row:

    python benchmarks/cludi_quality.py --out benchmarks/results/cludi_quality \\
        --set in50-vits-dev=../shared/data/in50-vits-dev --set blobs \\
        --variants '{"CLUDI (defaults)": {}, "CLUDI (k-means start)": {"init": "kmeans"}}'
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
from diffclust.cluster.kmeans import fit_kmeans  # noqa: E402
from diffclust.cluster.metrics import clustering_scores  # noqa: E402
from diffclust.engine.checkpoint import atomic_write_json, atomic_write_text  # noqa: E402


def load_set(spec: str) -> tuple[str, np.ndarray, np.ndarray]:
    if spec == "blobs":
        rng = np.random.default_rng(0)
        sizes = np.round(200 * np.linspace(0.5, 1.5, 10)).astype(int)
        labels = np.repeat(np.arange(10), sizes)
        features = rng.normal(size=(10, 64))[labels] * 0.6 + rng.normal(size=(len(labels), 64))
        return "blobs (K=10, imbalanced, 64-d)", features.astype(np.float32), labels
    name, folder = spec.split("=", 1)
    return name, np.load(Path(folder) / "features.npy", allow_pickle=False), np.load(Path(folder) / "labels.npy", allow_pickle=False)


def summary(rows: list[dict]) -> dict:
    return {key: (float(np.mean([r[key] for r in rows])), float(np.std([r[key] for r in rows]))) for key in ("acc", "nmi", "ari", "seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", required=True, metavar="NAME=FOLDER or blobs")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default='{"CLUDI (defaults)": {}}', help="JSON: row name -> CLUDI settings")
    args = parser.parse_args()
    variants = json.loads(args.variants)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    report = {"device": f"cpu ({platform.machine()}), {torch.get_num_threads()} threads", "seeds": seeds, "variants": variants, "sets": []}
    lines = ["# CLUDI against k-means", "", f"`python benchmarks/cludi_quality.py` (seeds {args.seeds}; labels only score). "
             f"Device: {report['device']}. CLUDI settings: its defaults, changed per row as named.", ""]
    for spec in args.set:
        name, features, labels = load_set(spec)
        k = len(np.unique(labels))
        runs: dict[str, list[dict]] = {"k-means": []}
        for seed in seeds:
            started = time.perf_counter()
            runs["k-means"].append({**clustering_scores(labels, fit_kmeans(features, k, seed=seed)[1]),
                                    "seconds": time.perf_counter() - started})
            for row, settings in variants.items():
                started = time.perf_counter()
                model = CLUDI(k, random_state=seed, device="cpu", progress=False, **settings).fit(features, labels)
                runs.setdefault(row, []).append({**clustering_scores(labels, model.labels_), "seconds": time.perf_counter() - started})
                print(name, row, seed, {key: round(value, 4) for key, value in runs[row][-1].items()}, flush=True)
        table = {row: summary(values) for row, values in runs.items()}
        report["sets"].append({"name": name, "rows": len(features), "dims": int(features.shape[1]), "k": k, "runs": runs, "summary": table})
        lines += [f"## {name}: {len(features)} x {features.shape[1]}, K = {k}", "",
                  "| method | ACC % | NMI | ARI | seconds per run |", "|---|---|---|---|---|"]
        lines += [f"| {row} | {100 * s['acc'][0]:.2f} ± {100 * s['acc'][1]:.2f} | {s['nmi'][0]:.4f} ± {s['nmi'][1]:.4f} | "
                  f"{s['ari'][0]:.4f} ± {s['ari'][1]:.4f} | {s['seconds'][0]:.0f} |" for row, s in table.items()]
        lines.append("")
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out / "results.json", report)
        atomic_write_text(args.out / "results.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
