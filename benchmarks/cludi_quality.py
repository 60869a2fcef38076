"""CLUDI against k-means on the same features, over several seeds (mean ± sd of ACC, NMI, ARI and wall time).

Each --set NAME=FOLDER names a folder holding features.npy and labels.npy (../shared/data/in50-vits-dev,
or the USPS features benchmarks/diec_quality.py writes at DiEC's searched pair); `blobs` adds
imbalanced Gaussian blobs (K = 10, 2,000 x 64). Labels only score. CLUDI runs with its
defaults unless --variants gives JSON settings per row. Each CLUDI row also gives its start
partition's ACC (the metrics log's epoch 0), the teacher's before self-labelling, and the gain
over the start:

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

from provenance import save_results  # noqa: E402


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
    """(mean, sd) of each score over the runs; the start's ACC and the gain over it where runs have a start."""
    keys = ("acc", "nmi", "ari", "seconds") + (("start_acc", "gain") if all("start_acc" in r for r in rows) else ()) \
        + tuple(key for key in ("teacher_acc", "trained_acc") if all(key in r for r in rows))
    return {key: (float(np.mean([r[key] for r in rows])), float(np.std([r[key] for r in rows]))) for key in keys}


def start_and_curve(history: list[dict], final_acc: float) -> dict:
    """The start partition's ACC (the epoch-0 row of the metrics log), what training added to it
    (the final prediction's ACC minus the start's), and ACC by epoch (one monitoring sample)."""
    curve = [round(record["acc"], 4) for record in history if "acc" in record]
    teacher = [record["final_acc"] for record in history if "final_acc" in record]  # before self-labelling
    extra = {"teacher_acc": teacher[-1]} if teacher and history[-1].get("phase") == "self-labelling" else {}
    checked = [at for at, record in enumerate(history) if str(record.get("phase", "")).startswith("kept the")]
    if checked and checked[0] > 0 and "acc" in history[checked[0] - 1]:  # the trained partition, compared with its start
        extra["trained_acc"] = history[checked[0] - 1]["acc"]
    if not history or history[0].get("epoch") != 0:
        return {"acc_by_epoch": curve, **extra}
    return {"start_acc": history[0]["acc"], "gain": final_acc - history[0]["acc"], "acc_by_epoch": curve, **extra}


def set_lines(result: dict) -> list[str]:
    """The markdown table of one feature set's runs."""
    lines = [f"## {result['name']}: {result['rows']} x {result['dims']}, K = {result['k']}", "",
             "| method | ACC % | NMI | ARI | start ACC % (epoch 0) | teacher's ACC % (before self-labelling) | gain over the start (points) "
             "| trained partition's ACC % (before the start check) | runs that kept the start | seconds per run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {row} | {cell(s, 'acc')} | {cell(s, 'nmi', 1, 4)} | {cell(s, 'ari', 1, 4)} | {cell(s, 'start_acc')} | "
              f"{cell(s, 'teacher_acc')} | {cell(s, 'gain')} | {cell(s, 'trained_acc')} | {kept_start(result['runs'][row])} | "
              f"{s['seconds'][0]:.0f} |" for row, s in result["summary"].items()]
    return lines + [""]


def kept_start(runs: list[dict]) -> str:
    """How many runs returned their start partition (CLUDI's start check), as "n of m"; empty for
    runs without the check (k-means, results from before it)."""
    checked = [run for run in runs if "kept" in run]
    return f"{sum(run['kept'] == 'start' for run in checked)} of {len(checked)}" if checked else ""


def header(report: dict) -> list[str]:
    return ["# CLUDI against k-means", "", f"`python benchmarks/cludi_quality.py` (seeds {','.join(map(str, report['seeds']))}; "
            f"labels only score). Device: {report['device']}. CLUDI settings: its defaults, changed per row as named.", ""]


def cell(scores: dict, key: str, scale: float = 100.0, digits: int = 2) -> str:
    if key not in scores:
        return ""
    mean, sd = scores[key]
    return f"{scale * mean:.{digits}f} ± {scale * sd:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", metavar="NAME=FOLDER or blobs")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default='{"CLUDI (defaults)": {}}', help="JSON: row name -> CLUDI settings")
    parser.add_argument("--refresh", action="store_true", help="rewrite OUT/results.md from OUT/results.json (gains from the final ACC)")
    args = parser.parse_args()
    if args.refresh:
        report = json.loads((args.out / "results.json").read_text())
        for result in report["sets"]:
            for runs in result["runs"].values():
                for run in runs:
                    if "start_acc" in run:
                        run["gain"] = run["acc"] - run["start_acc"]
            order = [row for row in ["k-means", *report["variants"]] if row in result["runs"]]  # the JSON file keeps keys sorted
            result["summary"] = {row: summary(result["runs"][row]) for row in order}
        save_results(args.out, "results", report)
        save_results(args.out, "results", None, "\n".join(header(report) + [line for r in report["sets"] for line in set_lines(r)]))
        return
    if not args.set:
        parser.error("--set is required (unless --refresh)")
    variants = json.loads(args.variants)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    report = {"device": f"cpu ({platform.machine()}), {torch.get_num_threads()} threads", "seeds": seeds, "variants": variants, "sets": []}
    lines = header(report)
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
                scores = clustering_scores(labels, model.labels_)
                runs.setdefault(row, []).append({**scores, "seconds": time.perf_counter() - started,
                                                 **start_and_curve(model.history_, scores["acc"]),
                                                 "kept": model.kept_partition_, "start_agreement": model.start_agreement_})
                print(name, row, seed, {key: round(value, 4) if isinstance(value, float) else value
                                           for key, value in runs[row][-1].items() if key != "acc_by_epoch"}, flush=True)
        table = {row: summary(values) for row, values in runs.items()}
        report["sets"].append({"name": name, "rows": len(features), "dims": int(features.shape[1]), "k": k, "runs": runs, "summary": table})
        lines += set_lines(report["sets"][-1])
        args.out.mkdir(parents=True, exist_ok=True)
        save_results(args.out, "results", report)
        save_results(args.out, "results", None, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
