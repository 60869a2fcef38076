"""Build time and size of `diffclust report` for a run of 10,000 images (first build, then a
second one that reuses the thumbnails), on a synthetic run folder: no model is trained.

    python benchmarks/report_build.py --images 10000 --out benchmarks/results/report_build
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from diffclust.outputs import csv_text  # noqa: E402
from diffclust.report import build_report  # noqa: E402

from provenance import save_results  # noqa: E402


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def synthetic_run(root: Path, images: int, clusters: int, seed: int = 0) -> Path:
    """`images` 96 px photos-to-be (noisy colour blocks) with labels, and a run folder over them."""
    rng = np.random.default_rng(seed)
    data, run = root / "data", root / "run"
    (data / "images").mkdir(parents=True)
    run.mkdir()
    truth = rng.integers(0, clusters, images)
    colours = rng.integers(0, 255, (clusters, 3))
    for index, label in enumerate(truth):
        pixels = np.clip(colours[label] + rng.normal(0, 40, (96, 96, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(data / "images" / f"img{index:05d}.jpg", quality=85)
    files = [f"img{index:05d}.jpg" for index in range(images)]
    (data / "labels.csv").write_text(csv_text(("file", "label"), zip(files, truth.tolist())))
    found = np.where(rng.random(images) < 0.8, truth, rng.integers(0, clusters, images))
    confidence = rng.uniform(0.3, 1.0, images)
    (run / "assignments.csv").write_text(csv_text(("file", "cluster", "confidence", "status"),
                                                  [(f, int(c), f"{p:.4f}", "ok") for f, c, p in zip(files, found, confidence)]))
    (run / "skipped.csv").write_text("file,reason\n")
    np.save(run / "embedding.npy", (colours[found] / 255 + rng.normal(0, 0.2, (images, 3))).repeat(16, axis=1).astype(np.float16))
    (run / "run.json").write_text(json.dumps({"method": "diec", "backbone": "synthetic", "device": "cpu", "wall_seconds": 0.0,
                                              "data": str(data), "n_clusters": clusters}))
    (run / "diec.json").write_text(json.dumps({"method": "diec", "settings": {"n_clusters": clusters}, "state": {}}))
    (run / "metrics.csv").write_text("epoch,kl_loss,acc\n1,0.5,0.7\n2,0.4,0.8\n")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--clusters", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json and results.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        run = synthetic_run(Path(folder), args.images, args.clusters)
        made = time.perf_counter() - started
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            page = build_report(run)
            timings.append(time.perf_counter() - started)
        size = folder_size(page.parent)
        thumbs = len(list((page.parent / "thumbs").iterdir()))
    results = {"images": args.images, "clusters": args.clusters, "first_build_seconds": round(timings[0], 1),
               "second_build_seconds": round(timings[1], 1), "report_megabytes": round(size / 2**20, 1), "thumbnails": thumbs,
               "synthetic_data_seconds": round(made, 1)}
    print(f"{args.images} images, {args.clusters} clusters: first build {timings[0]:.1f} s, second (thumbnails reused) "
          f"{timings[1]:.1f} s, report {size / 2**20:.1f} MB in {thumbs} thumbnails + page")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        save_results(args.out, "results", results)
        save_results(args.out, "results", None,
            "# Report build for a large run\n\n`python benchmarks/report_build.py --images 10000` (synthetic run folder, "
            f"{os.cpu_count()} cores):\n\n| images | clusters | first build s | second build s | report MB | thumbnails |\n"
            "|---|---|---|---|---|---|\n"
            f"| {args.images} | {args.clusters} | {timings[0]:.1f} | {timings[1]:.1f} | {size / 2**20:.1f} | {thumbs} |\n\n"
            "The map is a seeded sample of 2,000 items (t-SNE); each cluster shows its 8 most and 8 least confident "
            "images, so the page and its thumbnails stay bounded whatever the number of images.\n")


if __name__ == "__main__":
    main()
