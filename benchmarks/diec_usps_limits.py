"""What limits DiEC on USPS: the backbone, the search's criterion, and the start of the clustering.

    python benchmarks/diec_usps_limits.py backbones ../shared/data/usps .data/usps-ddpm-4000 .data/usps-ddpm-5000 --out DIR
    python benchmarks/diec_usps_limits.py start ../shared/data/usps .data/usps-ddpm-4000 --layer mid_block --timestep 343 --out DIR
    python benchmarks/diec_usps_limits.py features ../shared/data/usps .data/usps-ddpm-4000 --layer mid_block --timestep 150 --out DIR
    python benchmarks/diec_usps_limits.py layers ../shared/data/usps .data/usps-ddpm-4000 --timesteps 100 --out DIR

`backbones`: for each DDPM and each search criterion (--scores), DiEC's label-free search picks
a pair; k-means and k-means in a UMAP embedding (DiEC's start partition) are scored there on
every image. `start`: DiEC with a frozen UNet (20 epochs) at one pair, from each of --inits,
over seeds. `features`: at one pair, the feature variants of --variants (pool size, noise draws,
neighbouring timesteps concatenated), each scored by the search's label-free index (silhouette
of k-means in a UMAP embedding, here of every image) beside that partition's accuracy;
`layers`: the same for every top-level block at --timesteps. Labels only score.
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
from diffclust.cluster.manifold import umap_embedding, umap_partition  # noqa: E402
from diffclust.cluster.metrics import clustering_scores  # noqa: E402

from provenance import save_results  # noqa: E402


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


def feature_variants(data: str, model: str, layer: str, timestep: int, variants: list[str]) -> list[dict]:
    """Each variant "pool:draws:offsets" (e.g. "4:4:-50,0,50") reads the features at t + each
    offset with that pooling and number of noise draws, concatenated over the offsets."""
    import numpy as np
    from sklearn.metrics import silhouette_score

    probe = DiEC(10, backbone=model, device="cpu", progress=False)
    _, collection, backbone, _, latents = probe._prepare(data)
    rows = []
    for variant in variants:
        pool, draws, offsets = variant.split(":")
        timesteps = [timestep + int(offset) for offset in offsets.split(",")]
        started = time.perf_counter()
        reader = DiEC(10, noise_draws=int(draws), pool_size=int(pool))._reader(backbone, [layer])
        features = np.concatenate([reader.read_all(latents, t, 256)[layer].numpy() for t in timesteps], axis=1)
        embedding = umap_embedding(features, 0)
        labels = fit_kmeans(embedding, 10, seed=0)[1]
        rows.append({"variant": variant, "pool_size": int(pool), "noise_draws": int(draws), "timesteps": timesteps,
                     "dim": features.shape[1], "umap_silhouette": float(silhouette_score(embedding, labels)),
                     "umap_kmeans": clustering_scores(collection.labels, labels), "seconds": time.perf_counter() - started})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def layer_rows(data: str, model: str, timesteps: list[int]) -> list[dict]:
    """Every top-level block at each timestep: the search's label-free index (UMAP silhouette of
    k-means in a UMAP embedding of every image) beside that partition's accuracy."""
    from sklearn.metrics import silhouette_score

    from diffclust.methods.diec.features import candidate_layers

    probe = DiEC(10, backbone=model, device="cpu", progress=False)
    _, collection, backbone, _, latents = probe._prepare(data)
    layers = candidate_layers(backbone)
    reader = probe._reader(backbone, layers)
    rows = []
    for timestep in timesteps:
        features = reader.read_all(latents, timestep, 256)
        for layer in layers:
            embedding = umap_embedding(features[layer].numpy(), 0)
            labels = fit_kmeans(embedding, 10, seed=0)[1]
            rows.append({"layer": layer, "timestep": timestep, "dim": int(features[layer].shape[1]),
                         "umap_silhouette": float(silhouette_score(embedding, labels)),
                         "umap_kmeans": clustering_scores(collection.labels, labels)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=["backbones", "start", "features", "layers"])
    parser.add_argument("data")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--layer", default="mid_block")
    parser.add_argument("--timestep", type=int, default=343)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--scores", default="calinski_harabasz,umap_silhouette", help="backbones: the search criteria compared")
    parser.add_argument("--inits", default="kmeans,consensus,umap", help="start: the starts compared")
    parser.add_argument("--variants", default="4:4:0 1:4:0 2:4:0 4:1:0 4:8:0 4:4:-50,0,50",
                        help="features: pool:draws:offsets variants, space-separated")
    parser.add_argument("--timesteps", default="100", help="layers: the timesteps at which every block is read")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.experiment == "backbones":
        rows = backbones(args.data, args.models, args.scores.split(","))
    elif args.experiment == "layers":
        rows = layer_rows(args.data, args.models[0], [int(t) for t in args.timesteps.split(",")])
    elif args.experiment == "features":
        rows = feature_variants(args.data, args.models[0], args.layer, args.timestep, args.variants.split())
    else:
        rows = starts(args.data, args.models[0], args.layer, args.timestep, [int(s) for s in args.seeds.split(",")], args.epochs,
                      args.inits.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    save_results(args.out, args.experiment, rows)


if __name__ == "__main__":
    main()
