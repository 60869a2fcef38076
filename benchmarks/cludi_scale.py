"""CLUDI's whole fit (defaults) as the rows grow, on three kinds of synthetic groups.

- separable: 50 Gaussian groups in 384-d, rows L2-normalised as ViT features are (k-means solves it);
- non-convex: six pairs of interleaved half-moons (K = 12), each pair in its own random plane of a
  64-d space, rotated (k-means about 75%);
- overlapping: 10 Gaussian groups in 16-d whose spread equals their centres' (k-means about 60%).

Each (kind, size) runs in its own process, so the peak memory is that fit's. Labels only score.
Prints seconds, peak memory, the start's ACC (the metrics log's epoch 0), the final ACC and which
partition the fit kept (trained, or its start when training moved far from it).

    python benchmarks/cludi_scale.py --runs separable:10000,separable:100000,non-convex:10000,non-convex:60000 \\
        --out benchmarks/results/cludi_scale
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from peak_memory import peak_resident_bytes  # noqa: E402
from provenance import save_results  # noqa: E402

KINDS = ("separable", "non-convex", "overlapping")


def make_set(kind: str, rows: int, seed: int = 0):
    """(features float32, labels) of one synthetic kind (see the module's docstring)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if kind == "non-convex":
        pairs, dim = 6, 64
        per = rows // (2 * pairs)
        points, labels = [], []
        for pair in range(pairs):
            angle = rng.uniform(0, np.pi, (2, per))
            upper = np.stack([np.cos(angle[0]), np.sin(angle[0])], 1)
            lower = np.stack([1 - np.cos(angle[1]), 0.5 - np.sin(angle[1])], 1)
            turn = rng.uniform(0, 2 * np.pi)
            rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
            plane = np.linalg.qr(rng.normal(size=(dim, 2)))[0].T
            centre = rng.normal(0, 1.0, dim)
            for label, moon in ((2 * pair, upper), (2 * pair + 1, lower)):
                points.append(((moon - [0.5, 0.25]) @ rotation.T + rng.normal(0, 0.08, moon.shape)) @ plane + centre)
                labels += [label] * per
        features = np.concatenate(points) + rng.normal(0, 0.01, (len(labels), dim))
        return features.astype(np.float32), np.array(labels)
    k, dim, spread = (50, 384, 0.6) if kind == "separable" else (10, 16, 1.0)
    labels = np.arange(rows) % k
    features = rng.normal(size=(k, dim))[labels] + spread * rng.normal(size=(rows, dim))
    if kind == "separable":
        features /= np.linalg.norm(features, axis=1, keepdims=True)
    return features.astype(np.float32), labels


def one_run(kind: str, rows: int) -> dict:
    """A whole CLUDI fit with its defaults on one set, in this process."""
    from diffclust import CLUDI
    from diffclust.cluster.kmeans import fit_kmeans
    from diffclust.cluster.metrics import clustering_scores

    features, labels = make_set(kind, rows)
    k = int(labels.max()) + 1
    kmeans_acc = clustering_scores(labels, fit_kmeans(features, k, seed=0)[1])["acc"]
    started = time.perf_counter()
    model = CLUDI(k, device="cpu", progress=False, random_state=0).fit(features, labels)
    seconds = time.perf_counter() - started
    start = model.history_[0]
    return {"kind": kind, "rows": len(labels), "dims": features.shape[1], "k": k, "seconds": round(seconds, 1),
            "peak_mb": round(peak_resident_bytes() / 2**20), "start_seconds": start["seconds"],
            "start_acc": start.get("acc"), "copy_agreement": start.get("agreement_with_start"),
            "acc": clustering_scores(labels, model.labels_)["acc"], "kmeans_acc": kmeans_acc, "kept": model.kept_partition_,
            "agreement_with_start": model.start_agreement_, "timings": model.timings_}


def markdown(rows: list[dict]) -> str:
    lines = ["# CLUDI's whole fit as the rows grow (defaults)", "",
             f"{os.cpu_count()} CPU cores; one process per run. Labels only score. \"kept\": the partition the fit returned "
             "(trained, or its start when training moved more than 10% of the rows and the start's kNN modularity was higher).", "",
             "| set | rows x dims, K | seconds | peak MB | start s | k-means ACC % | start ACC % | copy agreement % | final ACC % | kept |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['kind']} | {row['rows']:,} x {row['dims']}, {row['k']} | {row['seconds']} | {row['peak_mb']} | "
                     f"{row['start_seconds']:.0f} | {100 * row['kmeans_acc']:.2f} | {100 * row['start_acc']:.2f} | "
                     f"{100 * row['copy_agreement']:.1f} | {100 * row['acc']:.2f} | {row['kept']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="separable:10000,separable:100000,non-convex:10000,non-convex:60000,overlapping:10000")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:  # the child: one run, its result on stdout
        kind, rows = args.one.split(":")
        print(json.dumps(one_run(kind, int(rows))))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "cludi_scale.json"
    done = json.loads(results_file.read_text())["results"] if results_file.is_file() else []
    for run in args.runs.split(","):
        kind, rows = run.split(":")
        if kind not in KINDS:
            parser.error(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
        child = subprocess.run([sys.executable, __file__, "--out", str(args.out), "--one", run], capture_output=True, text=True)
        if child.returncode != 0:
            print(child.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"{run} failed")
        result = json.loads(child.stdout.strip().splitlines()[-1])
        done = [row for row in done if (row["kind"], row["rows"]) != (result["kind"], result["rows"])] + [result]
        print(json.dumps({key: value for key, value in result.items() if key != "timings"}), flush=True)
        save_results(args.out, "cludi_scale", done, markdown(done))


if __name__ == "__main__":
    main()
