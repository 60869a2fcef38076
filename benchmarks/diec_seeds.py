"""DiEC over seeds with every choice label-free: pixels, the searched pair, the start, full DiEC.

For each seed, DiEC's own search picks (layer, t) on its seeded subset; then, on every image,
k-means and UMAP + k-means on the raw pixels (what any user can run without a diffusion
model), k-means at the searched pair, k-means in a UMAP embedding at the pair
(DiEC's start partition) and DiEC itself (default settings but a frozen UNet and --epochs, for
CPU time) are scored against labels.csv; --plain-dec adds DiEC without its self-labelling
epochs (self_label_epochs=0), side by side. Labels only score. With --label-grid, the pair the
labels would pick (UMAP + k-means accuracy on the search subset, over --grid-timesteps of the
search layer) is reported beside the searched one. Writes seeds.json and seeds.md to --out:

    python benchmarks/diec_seeds.py ../shared/data/usps --backbone .data/usps-ddpm-4000 \
        --out benchmarks/results/diec_usps --seeds 0,1,2 --epochs 20 --label-grid --plain-dec
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
from baselines import pixel_rows  # noqa: E402  (benchmarks/baselines.py)

from diffclust import DiEC, scan_images  # noqa: E402
from diffclust.cluster.kmeans import fit_kmeans  # noqa: E402
from diffclust.cluster.manifold import umap_partition  # noqa: E402
from diffclust.cluster.metrics import clustering_scores, hungarian_accuracy  # noqa: E402
from diffclust.methods.diec.search import SCORES, Criterion  # noqa: E402

from provenance import save_results  # noqa: E402

SCORE_KEYS = ("acc", "nmi", "ari")


def one_seed(collection, backbone_path: str, k: int, seed: int, epochs: int, out: Path, plain_dec: bool) -> dict:
    settings = dict(backbone=backbone_path, random_state=seed, device="cpu", progress=False)
    labels = collection.labels
    rows: dict[str, dict] = {}
    started = time.perf_counter()
    probe = DiEC(k, **settings)
    _, _, backbone, _, latents = probe._prepare(collection)
    rows.update(pixel_rows(latents.numpy(), labels, k, seed))
    search = probe.run_search(backbone, latents)
    search_seconds = time.perf_counter() - started
    features = probe._reader(backbone, [search.layer]).read_all(latents, search.timestep, 256)[search.layer].numpy()
    rows["k-means at the searched pair"] = clustering_scores(labels, fit_kmeans(features, k, seed=seed)[1])
    rows["UMAP + k-means at the searched pair (DiEC's start)"] = clustering_scores(labels, umap_partition(features, k, seed))
    started_fit = time.perf_counter()
    model = DiEC(k, **settings, layer=search.layer, timestep=search.timestep, finetune_unet=False, epochs=epochs,
                 output_dir=out / f"run-seed{seed}")
    model.fit(collection)
    fit_seconds = round(time.perf_counter() - started_fit, 1)
    rows[f"DiEC (frozen UNet, {epochs} epochs) at the searched pair"] = clustering_scores(labels, model.labels_)
    if plain_dec:
        plain = DiEC(k, **settings, layer=search.layer, timestep=search.timestep, finetune_unet=False, epochs=epochs,
                     self_label_epochs=0, output_dir=out / f"run-seed{seed}-plain-dec")
        rows["DiEC with plain DEC targets (self_label_epochs=0)"] = clustering_scores(labels, plain.fit(collection).labels_)
    result = {"seed": seed, "layer": search.layer, "timestep": search.timestep, "search_score": search.score,
              "search_evaluations": search.n_evaluations, "search_seconds": round(search_seconds, 1),
              "fit_seconds": fit_seconds,
              "rows": rows, "history": model.history_}
    print(json.dumps({key: value for key, value in result.items() if key != "history"}), flush=True)
    return result


def label_grid(collection, backbone_path: str, k: int, layer: str, timesteps: list[int]) -> dict:
    """Reporting only: UMAP + k-means accuracy on seed 0's search subset at each timestep of
    `layer`, and the label-free index at the same points."""
    settings = dict(backbone=backbone_path, random_state=0, device="cpu", progress=False, search="grid",
                    search_layers=[layer], search_timesteps=timesteps)
    probe = DiEC(k, **settings)
    _, _, backbone, _, latents = probe._prepare(collection)
    subset_labels = np.asarray(collection.labels)[probe.search_rows(len(latents)).numpy()]
    accuracy = Criterion(lambda data, predicted: hungarian_accuracy(subset_labels, predicted), SCORES["umap_silhouette"].embedding)
    by_labels = probe.run_search(backbone, latents, score=accuracy, score_name="acc")
    by_index = probe.run_search(backbone, latents)
    index = {item.timestep: item.score for item in by_index.evaluations}
    return {"layer": layer, "timesteps": timesteps,
            "subset_accuracy": {item.timestep: item.score for item in by_labels.evaluations},
            "umap_silhouette": index, "best_by_labels": by_labels.timestep, "best_by_index": by_index.timestep}


def summary(results: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for name in results[0]["rows"]:
        values = {key: np.array([result["rows"][name][key] for result in results]) for key in SCORE_KEYS}
        table[name] = {key: (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0) for key, v in values.items()}
    return table


def markdown(report: dict) -> str:
    lines = [f"# DiEC over seeds on {report['data']} ({report['images']} images, K={report['k']}), backbone {report['backbone']}",
             "", f"Device: {report['device']}. Every choice label-free; labels only score. Mean ± sd over seeds "
             f"{', '.join(str(r['seed']) for r in report['seeds'])}.", "",
             "| row | ACC % | NMI | ARI |", "|---|---|---|---|"]
    for name, scores in report["summary"].items():
        acc, nmi, ari = (scores[key] for key in SCORE_KEYS)
        lines.append(f"| {name} | {100 * acc[0]:.2f} ± {100 * acc[1]:.2f} | {nmi[0]:.4f} ± {nmi[1]:.4f} | {ari[0]:.4f} ± {ari[1]:.4f} |")
    lines += ["", "| seed | searched pair | index | search s | DiEC fit s | DiEC ACC at epoch 0 (start) | DiEC ACC |", "|---|---|---|---|---|---|---|"]
    for result in report["seeds"]:
        final = next(iter(name for name in result["rows"] if name.startswith("DiEC")))
        lines.append(f"| {result['seed']} | {result['layer']}, t={result['timestep']} | {result['search_score']:.4f} | "
                     f"{result['search_seconds']} | {result['fit_seconds']} | {100 * result['history'][0]['acc']:.2f} | "
                     f"{100 * result['rows'][final]['acc']:.2f} |")
    grid = report.get("label_grid")
    if grid:
        lines += ["", f"Reporting only, {grid['layer']} on seed 0's search subset: UMAP + k-means accuracy (labels) and the "
                  "search's index (label-free) at each t.", "",
                  "| t | " + " | ".join(str(t) for t in grid["timesteps"]) + " |", "|---|" + "---|" * len(grid["timesteps"]),
                  "| subset ACC % | " + " | ".join(f"{100 * grid['subset_accuracy'][t]:.1f}" for t in grid["timesteps"]) + " |",
                  "| UMAP silhouette | " + " | ".join(f"{grid['umap_silhouette'][t]:.3f}" for t in grid["timesteps"]) + " |",
                  "", f"Labels' best t on this grid: {grid['best_by_labels']}; the index's best on the same grid: {grid['best_by_index']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--label-grid", action="store_true", help="also report the labels' best timestep (reporting only)")
    parser.add_argument("--plain-dec", action="store_true", help="also fit DiEC with self_label_epochs=0 (plain DEC)")
    parser.add_argument("--grid-timesteps", default="25,50,100,150,200,250,300,350,400,500")
    args = parser.parse_args()
    collection = scan_images(args.data)
    if collection.labels is None:
        raise SystemExit(f"{args.data} has no labels to score against.")
    k = len(np.unique(collection.labels))
    args.out.mkdir(parents=True, exist_ok=True)
    results = [one_seed(collection, args.backbone, k, int(seed), args.epochs, args.out, args.plain_dec) for seed in args.seeds.split(",")]
    report = {"data": str(args.data), "images": len(collection), "k": k, "backbone": str(args.backbone),
              "device": f"cpu ({platform.processor() or platform.machine()})", "epochs": args.epochs,
              "seeds": results, "summary": summary(results)}
    if args.label_grid:
        report["label_grid"] = label_grid(collection, args.backbone, k, results[0]["layer"],
                                          [int(t) for t in args.grid_timesteps.split(",")])
    save_results(args.out, "seeds", report)
    save_results(args.out, "seeds", None, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
