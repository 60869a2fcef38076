"""What limits DiEC on USPS: the backbone, the search's criterion, and the start of the clustering.

    python benchmarks/diec_usps_limits.py backbones ../shared/data/usps .data/usps-ddpm-4000 .data/usps-ddpm-5000 --out DIR
    python benchmarks/diec_usps_limits.py start ../shared/data/usps .data/usps-ddpm-4000 --layer mid_block --timestep 343 --out DIR

`backbones`: for each DDPM and each search criterion (--scores), DiEC's label-free search picks
a pair; k-means and k-means in a UMAP embedding (DiEC's start partition) are scored there on
every image. `start`: DiEC with a frozen UNet (20 epochs) at one pair, from each of --inits,
over seeds. Labels only score.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from diffclust import DiEC  # noqa: E402
from diffclust.cluster.kmeans import fit_kmeans  # noqa: E402
from diffclust.cluster.manifold import umap_partition  # noqa: E402
from diffclust.cluster.metrics import clustering_scores  # noqa: E402


def backbones(data: str, models: list[str], scores: list[str]) -> list[dict]:
    rows = []
    for model in models:
        for score in scores:
            started = time.perf_counter()
            estimator = DiEC(10, backbone=model, search_score=score, device="cpu", progress=False)
            collection, features, layer, timestep = estimator.extract_features(data)
            rows.append({"backbone": model, "search_score": score, "layer": layer, "timestep": int(timestep),
                         "kmeans": clustering_scores(collection.labels, fit_kmeans(features.numpy(), 10, seed=0)[1]),
                         "umap_kmeans": clustering_scores(collection.labels, umap_partition(features.numpy(), 10, seed=0)),
                         "seconds": time.perf_counter() - started})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def starts(data: str, model: str, layer: str, timestep: int, seeds: list[int], epochs: int, inits: list[str]) -> list[dict]:
    rows = []
    for seed in seeds:
        for init in inits:
            started = time.perf_counter()
            fitted = DiEC(10, backbone=model, layer=layer, timestep=timestep, finetune_unet=False, epochs=epochs, init=init,
                          random_state=seed, device="cpu", progress=False).fit(data)
            first, last = fitted.history_[0], fitted.history_[-1]
            rows.append({"seed": seed, "init": init, "start_acc": first.get("acc"), "acc": last.get("acc"), "nmi": last.get("nmi"),
                         "ari": last.get("ari"), "seconds": time.perf_counter() - started})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=["backbones", "start"])
    parser.add_argument("data")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--layer", default="mid_block")
    parser.add_argument("--timestep", type=int, default=343)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--scores", default="calinski_harabasz,umap_silhouette", help="backbones: the search criteria compared")
    parser.add_argument("--inits", default="kmeans,consensus,umap", help="start: the starts compared")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.experiment == "backbones":
        rows = backbones(args.data, args.models, args.scores.split(","))
    else:
        rows = starts(args.data, args.models[0], args.layer, args.timestep, [int(s) for s in args.seeds.split(",")], args.epochs,
                      args.inits.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.experiment}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
