"""Features of an image set at DiEC's searched (layer, timestep), saved as features.npy and
labels.npy (for benchmarks/k_selection.py and benchmarks/cludi_quality.py). The search scores
k-means at a provisional K (labels are not used; they are only saved beside the features).

    python benchmarks/diec_features.py ../shared/data/flowers102 --classes odd --backbone tiny-random \\
        --out .data/features/flowers102-novel-tiny-random

--classes odd keeps the novel classes of the seen/novel protocol (odd labels), even the seen ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from diffclust import DiEC  # noqa: E402


def class_subset(data: Path, keep: str, folder: Path) -> Path:
    """A data folder with the rows of `data`'s labels.csv whose label is odd or even (images linked)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(data / "labels.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["label"]) % 2 == (1 if keep == "odd" else 0)]
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if not (folder / "images").exists():
        (folder / "images").symlink_to((data / "images").resolve())
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--classes", choices=["all", "odd", "even"], default="all")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--layer", default="auto", help="a fixed layer instead of DiEC's search (with --timestep)")
    parser.add_argument("--timestep", default="auto", help="a fixed timestep instead of DiEC's search")
    args = parser.parse_args()
    data = args.data if args.classes == "all" else class_subset(args.data, args.classes, args.out / "data")
    timestep = args.timestep if args.timestep == "auto" else int(args.timestep)
    reader = DiEC(10, backbone=args.backbone, resolution=args.resolution, layer=args.layer, timestep=timestep, device="cpu", progress=False)
    collection, features, layer, timestep = reader.extract_features(data)
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "features.npy", features.numpy())
    np.save(args.out / "labels.npy", collection.labels)
    (args.out / "source.json").write_text(json.dumps({"data": str(args.data), "classes": args.classes, "backbone": args.backbone,
                                                      "layer": layer, "timestep": timestep, "rows": len(features)}, indent=2))
    print(f"{len(features)} x {features.shape[1]} features at {layer}, t={timestep} -> {args.out}")


if __name__ == "__main__":
    main()
