"""DiEC quality table: raw pixels (k-means, UMAP + k-means), a fixed pair, the searched pair, and full DiEC (ACC, NMI, ARI).

Every row clusters all images of DATA and is scored against its labels.csv (labels are used
for scoring only, and for the reporting-only "best pair judged by the labels", found on the
same subset and grid the search uses). Example (USPS with a DDPM from `diffclust pretrain
--unconditional`):

    python benchmarks/diec_quality.py ../shared/data/usps --backbone .data/usps-ddpm \
        --out benchmarks/results/diec_usps --epochs 30
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from baselines import pixel_rows  # benchmarks/baselines.py

from diffclust import DiEC, load_backbone, scan_images
from diffclust.cluster.kmeans import fit_kmeans
from diffclust.cluster.metrics import clustering_scores, hungarian_accuracy
from diffclust.methods.diec.features import BOTTLENECK, encode_collection
from diffclust.methods.diec.search import SCORES, Criterion
from diffclust.methods.diec.search_report import write_search_plot

from provenance import save_results  # noqa: E402


def kmeans_row(name: str, features: torch.Tensor, labels: np.ndarray, k: int, seed: int, started: float, **extra) -> dict:
    _, predicted = fit_kmeans(features.reshape(len(features), -1), k, seed=seed)
    return {"row": name, **clustering_scores(labels, predicted), "seconds": round(time.perf_counter() - started, 1), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json, results.md and the search plots")
    parser.add_argument("--k", type=int, default=None, help="clusters (default: number of classes)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--fixed-timestep", type=int, default=None, help="the fixed-pair row's t (default: T/2)")
    parser.add_argument("--variants", default="frozen,finetuned", help="full DiEC rows: frozen UNet and/or fine-tuned UNet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-draws", type=int, default=4)
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--search-subset", type=int, default=1000)
    args = parser.parse_args()

    collection = scan_images(args.data)
    if collection.labels is None:
        raise SystemExit(f"{args.data} has no labels to score against.")
    labels = collection.labels
    k = args.k or len(np.unique(labels))
    settings = dict(backbone=args.backbone, random_state=args.seed, noise_draws=args.noise_draws, pool_size=args.pool_size,
                    search_subset=args.search_subset, device="cpu" if not torch.cuda.is_available() else "auto", progress=False)
    backbone = load_backbone(args.backbone, device="cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    latents = encode_collection(backbone, collection, backbone.resolution, 256, show_progress=False)
    rows = [{"row": name, **scores, "seconds": round(time.perf_counter() - started, 1)}
            for name, scores in pixel_rows(latents.float().numpy(), labels, k, args.seed).items()]

    probe = DiEC(k, **settings)
    fixed_t = args.fixed_timestep if args.fixed_timestep is not None else backbone.num_train_timesteps // 2
    started = time.perf_counter()
    reader = probe._reader(backbone, [BOTTLENECK])
    features = reader.read_all(latents, fixed_t, 256)[BOTTLENECK]
    rows.append(kmeans_row(f"k-means at the bottleneck ({BOTTLENECK}), fixed t={fixed_t}", features, labels, k, args.seed, started))

    started = time.perf_counter()
    search = probe.run_search(backbone, latents)
    search_seconds = time.perf_counter() - started
    features = probe._reader(backbone, [search.layer]).read_all(latents, search.timestep, 256)[search.layer]
    args.out.mkdir(parents=True, exist_ok=True)  # the searched pair's features, for cludi_quality.py
    np.save(args.out / "features.npy", features.numpy())
    np.save(args.out / "labels.npy", labels)
    rows.append(kmeans_row(f"k-means at the searched pair ({search.layer}, t={search.timestep})", features, labels, k,
                           args.seed, started, search_evaluations=search.n_evaluations, search_seconds=round(search_seconds, 1)))

    # reporting only: the full grid, judged by the search's index and by accuracy against the labels
    subset_labels = labels[probe.search_rows(len(latents)).numpy()]
    grid = DiEC(k, search="grid", **settings)
    started = time.perf_counter()
    grid_index = grid.run_search(backbone, latents)
    grid_seconds = time.perf_counter() - started
    label_accuracy = Criterion(lambda x, predicted: hungarian_accuracy(subset_labels, predicted), SCORES[grid.search_score].embedding)
    grid_acc = grid.run_search(backbone, latents, score=label_accuracy, score_name="acc")
    args.out.mkdir(parents=True, exist_ok=True)
    write_search_plot(args.out / "search_two_stage.png", search)
    write_search_plot(args.out / f"grid_{grid_index.score_name}.png", grid_index)
    write_search_plot(args.out / "grid_label_accuracy.png", grid_acc)
    layers = grid_acc.layers
    pick_acc = DiEC(k, layer=search.layer, timestep=search.timestep, **settings).run_search(
        backbone, latents, score=label_accuracy, score_name="acc").score

    histories = {}
    for variant in args.variants.split(","):
        started = time.perf_counter()
        model = DiEC(k, epochs=args.epochs, finetune_unet=variant == "finetuned", layer=search.layer, timestep=search.timestep,
                     output_dir=args.out / f"run-{variant}", **settings)
        model.fit(collection, resume=(args.out / f"run-{variant}" / "checkpoint.pt").is_file())
        rows.append({"row": f"DiEC ({'UNet fine-tuned' if variant == 'finetuned' else 'frozen UNet'}, {args.epochs} epochs) at the searched pair",
                     **clustering_scores(labels, model.labels_), "seconds": round(time.perf_counter() - started, 1)})
        histories[variant] = model.history_
        print(rows[-1], flush=True)

    report = {
        "data": str(args.data), "images": len(collection), "k": k, "backbone": str(args.backbone),
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})",
        "settings": {**{key: value for key, value in settings.items() if key != "backbone"}, "epochs": args.epochs},
        "rows": rows,
        "search": {"strategy": search.strategy, "layer": search.layer, "timestep": search.timestep,
                   "evaluations": search.n_evaluations, "feature_passes": search.feature_passes,
                   "seconds": round(search_seconds, 1), "subset_accuracy_of_pick": pick_acc},
        "grid": {"layers": layers, "timesteps": grid_index.matrix()[1], "evaluations": grid_index.n_evaluations,
                 "seconds": round(grid_seconds, 1),
                 "index": grid_index.score_name, "best_by_index": [grid_index.layer, grid_index.timestep],
                 "best_by_label_accuracy": [grid_acc.layer, grid_acc.timestep, grid_acc.score],
                 "label_accuracy_at_best_index": next(e.score for e in grid_acc.evaluations
                                                      if (e.layer, e.timestep) == (grid_index.layer, grid_index.timestep))},
        "history": histories,
    }
    report["search"]["distance_to_label_best"] = {
        "same_layer": search.layer == grid_acc.layer, "timestep_gap": abs(search.timestep - grid_acc.timestep),
        "subset_accuracy_gap": round(grid_acc.score - pick_acc, 4)}
    save_results(args.out, "results", report)
    lines = [f"# DiEC on {args.data} ({len(collection)} images, K={k}), backbone {args.backbone}", "",
             f"Device: {report['device']}. Scored on every image against labels.csv.", "",
             "| row | ACC % | NMI | ARI | seconds |", "|---|---|---|---|---|"]
    lines += [f"| {r['row']} | {100 * r['acc']:.2f} | {r['nmi']:.4f} | {r['ari']:.4f} | {r['seconds']} |" for r in rows]
    s, g = report["search"], report["grid"]
    lines += ["", f"Two-stage search: {s['layer']} at t={s['timestep']}, {s['evaluations']} evaluations in {s['seconds']} s; "
              f"full grid: {g['evaluations']} evaluations in {g['seconds']} s, {g['index']}'s best {g['best_by_index']}.",
              f"Best pair judged by the labels (subset, grid; reporting only): {g['best_by_label_accuracy'][:2]} with subset ACC "
              f"{100 * g['best_by_label_accuracy'][2]:.2f}%; the search's pick scores {100 * pick_acc:.2f}% on the same subset."]
    save_results(args.out, "results", None, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
