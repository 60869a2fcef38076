"""The consensus start (k-means + spectral candidates, their median partition) from 1k to 300k rows.

Synthetic data where k-means is known to fail and a kNN graph to succeed: three pairs of
interleaved half-moons (K = 6), put in a random 2-d plane of a 384-d space with a little noise
in every dimension. Each size runs in its own process, so the peak memory is that size's.
Above `MAX_SPECTRAL_ROWS` the spectral candidates share one approximate neighbour search
(pynndescent) and a sparse multigrid eigen-solver; at the sizes of `--both` both paths run side
by side. `--kind` takes another of `cludi_scale.py`'s sets instead of these moons (overlapping
Gaussians in 16-d, where the exact path is slowest).

    python benchmarks/consensus_scale.py --sizes 1000,6000,10000,30000,60000,100000,300000 --out benchmarks/results/consensus_scale
    python benchmarks/consensus_scale.py --kind overlapping --sizes 10000 --both 10000 --out benchmarks/results/consensus_scale
    python benchmarks/consensus_scale.py --sizes 10000,30000,100000 --cludi-epochs 2 --out benchmarks/results/consensus_scale

With --cludi-epochs, each size runs a whole CLUDI fit instead (the start, training epochs, the
prediction), timed part by part.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from peak_memory import peak_resident_bytes  # noqa: E402
from provenance import save_results  # noqa: E402

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def moons(rows: int, dim: int = 384, pairs: int = 3, seed: int = 0):
    """(rows x dim features, labels): `pairs` pairs of half-moons, 4 units apart, noise 0.08 in
    the plane and 0.01 in every dimension."""
    import numpy as np

    rng = np.random.default_rng(seed)
    per = rows // (2 * pairs)
    points, labels = [], []
    for pair in range(pairs):
        angle = rng.uniform(0, np.pi, (2, per))
        upper = np.stack([np.cos(angle[0]), np.sin(angle[0])], axis=1)
        lower = np.stack([1 - np.cos(angle[1]), 0.5 - np.sin(angle[1])], axis=1)
        for label, moon in ((2 * pair, upper), (2 * pair + 1, lower)):
            points.append(moon + [4.0 * pair, 0.0] + rng.normal(0, 0.08, moon.shape))
            labels += [label] * per
    plane = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:2]
    features = np.concatenate(points) @ plane + rng.normal(0, 0.01, (len(labels), dim))
    return features.astype(np.float32), np.array(labels)


def data_set(kind: str, rows: int):
    """(features, labels): the moons above, or one of cludi_scale.py's kinds."""
    if kind == "moons":
        return moons(rows)
    from cludi_scale import make_set

    return make_set(kind, rows)


def one_size(rows: int, scalable: bool | None, kind: str = "moons") -> dict:
    """Time, peak memory and scores of the consensus start on `rows` rows of `kind` (in this process)."""
    from diffclust.cluster import consensus
    from diffclust.cluster.kmeans import fit_kmeans
    from diffclust.cluster.metrics import clustering_scores

    features, labels = data_set(kind, rows)
    k = int(labels.max()) + 1
    if scalable is not None:  # force one path whatever the size
        consensus.MAX_SPECTRAL_ROWS = 0 if scalable else 10**9
    started = time.perf_counter()
    result = consensus.consensus_partition(features, k, seed=0)
    seconds = time.perf_counter() - started
    kmeans = clustering_scores(labels, fit_kmeans(features, k, seed=0)[1])
    return {"rows": rows, "path": "approximate" if len(features) > consensus.MAX_SPECTRAL_ROWS else "exact", "seconds": round(seconds, 1),
            "peak_mb": round(peak_resident_bytes() / 2**20), "chosen": result.chosen,
            "acc": clustering_scores(labels, result.labels)["acc"], "kmeans_acc": kmeans["acc"], "labels": result.labels.tolist()}


def cludi_size(rows: int, epochs: int, predict_samples: int | None) -> dict:
    """Time, peak memory and scores of a whole CLUDI fit (defaults but `epochs`, and
    `predict_samples` if given) on `rows` moons: the start, each training epoch, the prediction."""
    from diffclust import CLUDI
    from diffclust.cluster.metrics import clustering_scores

    features, labels = moons(rows)
    started = time.perf_counter()
    model = CLUDI(6, epochs=epochs, device="cpu", progress=False, random_state=0,
                  **({"predict_samples": predict_samples} if predict_samples else {})).fit(features, labels)
    seconds = time.perf_counter() - started
    start = model.history_[0]
    trained = [record for record in model.history_ if record.get("epoch", 0) > 0]
    return {"rows": rows, "path": "cludi", "seconds": round(seconds, 1), "peak_mb": round(peak_resident_bytes() / 2**20),
            "start_seconds": start["seconds"], "epoch_seconds": [record["seconds"] for record in trained],
            "predict_seconds": round(seconds - start["seconds"] - sum(record["seconds"] for record in trained), 1),
            "start_acc": start["acc"], "acc": clustering_scores(labels, model.labels_)["acc"], "epochs": epochs,
            "predict_samples": model.predict_samples, "start_copy_steps": start.get("init_steps_run")}


def cludi_markdown(rows: list[dict]) -> str:
    lines = ["# CLUDI's whole fit on 6 half-moons in 384-d (K = 6), defaults but the epochs", "",
             f"{os.cpu_count()} CPU cores; one process per size. Labels only score. The start is the consensus partition "
             "(it runs inside the fit, with the copy of the start); prediction: that many samples x 20 steps over every "
             "row (16 is CLUDI's default).", "",
             "| rows | epochs | start s | s per epoch | prediction samples | predict s | total s | peak MB | start ACC % | ACC % |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        per_epoch = sum(row["epoch_seconds"]) / max(1, len(row["epoch_seconds"]))
        lines.append(f"| {row['rows']:,} | {row['epochs']} | {row['start_seconds']:.1f} | {per_epoch:.1f} | {row.get('predict_samples', 16)} | "
                     f"{row['predict_seconds']} | {row['seconds']} | {row['peak_mb']} | {100 * row['start_acc']:.2f} | {100 * row['acc']:.2f} |")
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict], kind: str) -> str:
    title = "6 half-moons in 384-d, K = 6" if kind == "moons" else f"cludi_scale.py's {kind} set"
    lines = [f"# The consensus start as the rows grow ({title})", "",
             f"{os.cpu_count()} CPU cores; one process per size (peak memory is that size's). Labels only score.", "",
             "| rows | path | seconds | peak MB | chosen candidate | ACC % | k-means ACC % |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['rows']:,} | {row['path']} | {row['seconds']} | {row['peak_mb']} | {row['chosen']} | "
                     f"{100 * row['acc']:.2f} | {100 * row['kmeans_acc']:.2f} |")
    lines += [f"\nAt {row['rows']:,} rows the approximate path's partition agrees with the exact one's at NMI {row['nmi_to_exact']:.4f}."
              for row in rows if "nmi_to_exact" in row]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,6000,10000,30000,60000,100000,300000")
    parser.add_argument("--both", default="30000", help="sizes at which the exact and the approximate path run side by side")
    parser.add_argument("--kind", default="moons", choices=["moons", "separable", "non-convex", "overlapping"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=["auto", "exact", "approximate", "cludi"], default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--predict-samples", type=int, default=None, help="with --cludi-epochs: CLUDI's prediction samples (default: its own, 16)")
    parser.add_argument("--cludi-epochs", type=int, default=None,
                        help="time CLUDI's whole fit (this many epochs) at each size instead of the start alone (cludi_scale.json/md)")
    args = parser.parse_args()
    if args.one is not None:  # the child: one size, its result on stdout
        if args.path == "cludi":
            print(json.dumps(cludi_size(args.one, args.cludi_epochs, args.predict_samples)))
        else:
            print(json.dumps(one_size(args.one, {"auto": None, "exact": False, "approximate": True}[args.path], args.kind)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    cludi = args.cludi_epochs is not None
    name = "cludi_scale" if cludi else "scale" if args.kind == "moons" else f"scale-{args.kind}"
    results_file = args.out / f"{name}.json"
    rows = json.loads(results_file.read_text()) if results_file.is_file() else []
    both = {int(size) for size in args.both.split(",") if size} if not cludi else set()
    plan = [(int(size), path) for size in args.sizes.split(",")
            for path in (["cludi"] if cludi else ["exact", "approximate"] if int(size) in both else ["auto"])]
    labels_by_path = {}
    for size, path in plan:
        if any(row["rows"] == size and (path == "auto" or row["path"] == path) for row in rows):
            continue  # measured before (the script resumes size by size)
        child = subprocess.run([sys.executable, __file__, "--out", str(args.out), "--one", str(size), "--path", path, "--kind", args.kind,
                                *(["--cludi-epochs", str(args.cludi_epochs)] if cludi else []),
                                *(["--predict-samples", str(args.predict_samples)] if args.predict_samples else [])],
                               capture_output=True, text=True, check=True)
        row = json.loads(child.stdout.strip().splitlines()[-1])
        if size in both:
            labels_by_path[size, row["path"]] = row["labels"]
            if (size, "exact") in labels_by_path and (size, "approximate") in labels_by_path:
                from diffclust.cluster.metrics import normalized_mutual_information

                row["nmi_to_exact"] = normalized_mutual_information(labels_by_path[size, "exact"], labels_by_path[size, "approximate"])
        row.pop("labels", None)
        rows.append(row)
        rows.sort(key=lambda r: (r["rows"], r["path"]))
        results_file.write_text(json.dumps(rows, indent=1))
        print(f"{size} rows ({row['path']}): {row['seconds']} s, {row['peak_mb']} MB, ACC {100 * row['acc']:.2f}%", flush=True)
    table = cludi_markdown(rows) if cludi else markdown(rows, args.kind)
    save_results(args.out, name, None, table)
    print(table)

if __name__ == "__main__":
    main()
