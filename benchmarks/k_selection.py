"""Choosing K without labels, against the truth: which K each criterion picks on real features,
and k-means' ACC/NMI at that K and at the true K. Also the time to scan 10,000 items over
K = 2..100.

    python benchmarks/k_selection.py --out benchmarks/results/k_selection \
        [--set "USPS (DDPM, DiEC's pair)=benchmarks/results/diec_usps"]

Each --set NAME=FOLDER adds a folder holding features.npy and labels.npy (as in
../shared/data/in50-vits-dev, or as benchmarks/diec_quality.py writes the searched pair's features).
`--synthetic` adds generated sets of known K where criteria part ways: Gaussian blobs (well
apart, and close with unequal sizes), and CLUDI's scale kinds (moons in pairs, overlapping
Gaussians; benchmarks/cludi_scale.py).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from diffclust.cluster.k_selection import CRITERIA, choose_k  # noqa: E402
from diffclust.cluster.kmeans import fit_kmeans  # noqa: E402
from diffclust.cluster.metrics import clustering_scores  # noqa: E402

from provenance import save_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IN50 = REPO.parent / "shared" / "data" / "in50-vits-dev"


def kmeans_scores(features: np.ndarray, labels: np.ndarray, k: int) -> dict:
    _, predicted = fit_kmeans(features, k, seed=0)
    scores = clustering_scores(labels, predicted)
    return {"acc": round(100 * scores["acc"], 2), "nmi": round(scores["nmi"], 4)}


def evaluate(name: str, features: np.ndarray, labels: np.ndarray, k_range: tuple[int, int]) -> list[dict]:
    truth = len(np.unique(labels))
    started = time.perf_counter()
    selection = choose_k(features, k_range, criteria=tuple(CRITERIA))
    seconds = time.perf_counter() - started
    at_truth = kmeans_scores(features, labels, truth)
    rows = []
    for criterion in CRITERIA:
        picked = selection.pick(criterion)
        rows.append({"data": name, "true_k": truth, "criterion": criterion, "picked_k": picked,
                     **{f"{key}_at_picked": value for key, value in kmeans_scores(features, labels, picked).items()},
                     **{f"{key}_at_true": value for key, value in at_truth.items()}, "scan_seconds": round(seconds, 1)})
        print(f"{name:<28} true K {truth:3d}  {criterion:<20} picks {picked:3d}   ACC/NMI at it "
              f"{rows[-1]['acc_at_picked']:5.1f} / {rows[-1]['nmi_at_picked']:.3f}   at true K {at_truth['acc']:5.1f} / {at_truth['nmi']:.3f}")
    return rows


def synthetic_sets() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, features, labels) of generated sets of known K, seeded."""
    from cludi_scale import make_set

    sets = []
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(10), np.round(200 * np.linspace(0.5, 1.5, 10)).astype(int))
    sets.append(("blobs, 10 close, sizes 100-300 (64-d)", rng.normal(size=(10, 64))[labels] * 0.6 + rng.normal(size=(len(labels), 64)), labels))
    for k in (3, 30, 50):
        rng = np.random.default_rng(k)
        labels = np.arange(40 * k) % k
        sets.append((f"blobs, {k} well apart (32-d)", rng.normal(size=(k, 32))[labels] * 3 + rng.normal(size=(len(labels), 32)), labels))
    for kind in ("non-convex", "overlapping"):
        features, labels = make_set(kind, 3000)
        sets.append((f"{kind} (cludi_scale, 3,000)", features, labels))
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=FOLDER", help="more feature sets (features.npy, labels.npy)")
    parser.add_argument("--synthetic", action="store_true", help="add generated sets of known K (see the module's docstring)")
    args = parser.parse_args()
    sets = ([("in50-vits-dev (ViT-S)", IN50)] if IN50.is_dir() else []) + [tuple(item.split("=", 1)) for item in args.set]
    rows = []
    for name, folder in sets:
        features = np.load(Path(folder) / "features.npy", allow_pickle=False)
        labels = np.load(Path(folder) / "labels.npy", allow_pickle=False)
        rows += evaluate(name, features.reshape(len(features), -1), labels, (2, min(100, len(features) // 5)))
    for name, features, labels in synthetic_sets() if args.synthetic else []:
        rows += evaluate(name, features, labels, (2, min(100, len(features) // 5)))
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 40, 10_000)
    blobs = rng.normal(size=(40, 384))[truth] * 2.0 + rng.normal(size=(10_000, 384))
    started = time.perf_counter()
    choose_k(blobs, (2, 100), criteria=("silhouette",))
    scan = time.perf_counter() - started
    print(f"scan of 10,000 x 384 over K = 2..100 (silhouette only): {scan:.1f} s")
    started = time.perf_counter()
    all_criteria = choose_k(blobs, (2, 100))
    scan_all = time.perf_counter() - started
    print(f"the same with the default recorded criteria: {scan_all:.1f} s; picks {[all_criteria.pick(c) for c in all_criteria.scores]} (true 40)")
    started = time.perf_counter()
    umap_pick = choose_k(blobs, (2, 100), "umap_silhouette", criteria=("umap_silhouette",)).k
    scan_umap = time.perf_counter() - started
    print(f"umap_silhouette alone: {scan_umap:.1f} s; picks {umap_pick} (true 40)")
    started = time.perf_counter()
    density_pick = choose_k(blobs, (2, 100), "umap_hdbscan", criteria=("umap_hdbscan",)).k
    scan_density = time.perf_counter() - started
    print(f"umap_hdbscan alone: {scan_density:.1f} s; picks {density_pick} (true 40)")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        save_results(args.out, "results", {"rows": rows, "scan_10k_silhouette_seconds": round(scan, 1),
                                            "scan_10k_all_seconds": round(scan_all, 1),
                                            "scan_10k_umap_silhouette_seconds": round(scan_umap, 1),
                                            "scan_10k_umap_hdbscan_seconds": round(scan_density, 1)})
        lines = ["# Choosing K without labels", "", "`python benchmarks/k_selection.py` (k-means scored at each K; labels only score).", "",
                 "| data | true K | criterion | picked K | ACC/NMI at picked K | ACC/NMI at true K |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['data']} | {r['true_k']} | {r['criterion']} | {r['picked_k']} | {r['acc_at_picked']} / {r['nmi_at_picked']} | "
                  f"{r['acc_at_true']} / {r['nmi_at_true']} |" for r in rows]
        lines += ["", f"Scan of 10,000 x 384 items over K = 2..100: {scan:.1f} s with silhouette alone, {scan_all:.1f} s with the "
                  f"default recorded criteria, {scan_umap:.1f} s with umap_silhouette alone, {scan_density:.1f} s with umap_hdbscan alone "
                  "(a seeded 3,000-item subsample, PCA to 50 dimensions; UMAP to 10 dimensions)."]
        save_results(args.out, "results", None, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
