"""Pack the USPS digits into the one compressed file that ships as diffclust's built-in `usps`.

    python tools/pack_usps.py ../shared/data/usps src/diffclust/datasets/usps.npz

Reads a data folder in the project's layout (images/, labels.csv with file,label,class_name,split)
and writes the pixels (uint8, N x 16 x 16), the labels and the split in labels.csv's order. The
file names are not stored: they are `{split}_{index:05d}.png`, and the packer refuses a folder
where that does not hold, so the built-in folder that `diffclust.datasets` lays out again has the
same names, pixels and rows as the source.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from diffclust.datasets import SPLITS, split_file_names


def pack(source: Path, out: Path) -> dict:
    with open(source / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    images, labels, splits = [], [], []
    for row, expected in zip(rows, split_file_names(row["split"] for row in rows)):
        if row["file"] != expected or row["class_name"] != row["label"]:
            raise SystemExit(f"{source}: row {row} breaks the naming the pack relies on (expected {expected}, class_name = label)")
        with Image.open(source / "images" / row["file"]) as image:
            if image.mode != "L" or image.size != (16, 16):
                raise SystemExit(f"{row['file']}: expected a 16 x 16 grey image, found {image.mode} {image.size}")
            images.append(np.asarray(image, dtype=np.uint8))
        labels.append(int(row["label"]))
        splits.append(SPLITS.index(row["split"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=np.stack(images), labels=np.array(labels, dtype=np.uint8),
                        split=np.array(splits, dtype=np.uint8))
    return {"images": len(images), "bytes": out.stat().st_size, **{f"{name}_rows": splits.count(code) for code, name in enumerate(SPLITS)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the USPS data folder (images/, labels.csv)")
    parser.add_argument("out", type=Path, help="the .npz to write")
    print(pack(parser.parse_args().source, parser.parse_args().out))


if __name__ == "__main__":
    main()
