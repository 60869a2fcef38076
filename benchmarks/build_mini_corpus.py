"""Build the pretraining corpus of the bundled `mini` backbone, with the seen/novel split.

All of tinyimagenet (coarse classes), plus only the *seen* classes (even label) of the
fine-grained sets; their *novel* classes (odd label) never enter, because clustering quality is
measured on them. Images are downscaled (short side, centre crop) and written as JPEG beside one
labels.csv (file, label, class_name, split, caption, source) that `diffclust pretrain` reads:
labels are renumbered so the sources do not collide, and the source split is kept, so the seen
classes' test images stay held out for the zero-shot diffusion-classifier check.

    python benchmarks/build_mini_corpus.py ../shared/data .data/mini-corpus --resolution 32
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from diffclust.data.images import load_rgb, resize_center_crop

#: source -> (caption template, keep only seen classes?)
SOURCES = {
    "tinyimagenet": ("a photo of a {name}", False),
    "flowers102": ("a photo of a {name}, a kind of flower", True),
    "cub100": ("a photo of a {name}, a kind of bird", True),
    "butterflies10": ("a photo of a {name}, a kind of butterfly", True),
}


def is_seen(label: int) -> bool:
    """The project's protocol: even labels are seen (may be in pretraining), odd ones novel."""
    return label % 2 == 0


def corpus_rows(data_root: Path) -> list[dict]:
    """Every row the corpus takes, from every source present under `data_root`."""
    rows, offset = [], 0
    for source, (template, seen_only) in SOURCES.items():
        manifest = data_root / source / "labels.csv"
        if not manifest.is_file():
            continue
        with open(manifest, newline="", encoding="utf-8") as handle:
            source_rows = list(csv.DictReader(handle))
        labels = sorted({int(row["label"]) for row in source_rows})
        for row in source_rows:
            label = int(row["label"])
            if seen_only and not is_seen(label):
                continue
            name = row["class_name"].replace("_", " ")
            rows.append({
                "file": f"{source}/{Path(row['file']).stem}.jpg",
                "source_file": str(data_root / source / "images" / row["file"]),
                "label": offset + label,
                "class_name": name,
                "split": row.get("split", "train"),
                "caption": template.format(name=name),
                "source": source,
            })
        offset += max(labels) + 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_root", type=Path, help="folder holding tinyimagenet/, flowers102/, cub100/, butterflies10/")
    parser.add_argument("out", type=Path)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--quality", type=int, default=92, help="JPEG quality")
    args = parser.parse_args()
    rows = corpus_rows(args.data_root)
    if not rows:
        raise SystemExit(f"No source data sets under {args.data_root}.")
    images = args.out / "images"
    for row in rows:
        target = images / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        resize_center_crop(load_rgb(row["source_file"]), args.resolution).save(target, quality=args.quality)
    columns = ("file", "label", "class_name", "split", "caption", "source")
    with open(args.out / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    by_source = {}
    for row in rows:
        by_source[row["source"]] = by_source.get(row["source"], 0) + 1
    size = sum(path.stat().st_size for path in images.rglob("*.jpg"))
    print(f"{len(rows)} images ({', '.join(f'{k} {v}' for k, v in by_source.items())}), "
          f"{len({r['label'] for r in rows})} classes, {size / 2**20:.1f} MiB -> {args.out}")


if __name__ == "__main__":
    main()
