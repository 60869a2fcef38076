"""Build the pretraining corpus of the bundled `mini` backbone, with the seen/novel split.

All of tinyimagenet (coarse classes), plus only the *seen* classes (even label) of the
fine-grained sets; their *novel* classes (odd label) never enter, because clustering quality is
measured on them. Images are downscaled (short side, centre crop) and written as JPEG beside one
labels.csv (file, label, class_name, split, caption, source) that `diffclust pretrain` reads:
labels are renumbered so the sources do not collide, and the source split is kept, so the seen
classes' test images stay held out for the zero-shot diffusion-classifier check.

    python tools/build_mini_corpus.py ../shared/data .data/mini-corpus --resolution 32
    python tools/build_mini_corpus.py ../shared/data .lease/corpus --pack   # one file, to travel

`--pack` writes everything into one `corpus.npz`: the JPEGs' bytes end to end, their offsets and
labels.csv compressed. That fits the GPU lease's travel budget where a folder of files or a raw
uint8 array would not (the figures: docs/development.md); `gpu_lease.py prepare` lowers the JPEG
quality where the checkout has grown. `unpack` lays it out again as a data folder that
`diffclust pretrain` reads.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
from pathlib import Path

import numpy as np

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


def limit_per_source(rows: list[dict], count: int) -> list[dict]:
    """The first `count` rows of each source: a toy corpus for dry runs, through the same code."""
    kept: dict[str, int] = {}
    chosen = []
    for row in rows:
        if kept.get(row["source"], 0) < count:
            kept[row["source"]] = kept.get(row["source"], 0) + 1
            chosen.append(row)
    return chosen


def jpeg_bytes(source_file: str, resolution: int, quality: int) -> bytes:
    buffer = io.BytesIO()
    resize_center_crop(load_rgb(source_file), resolution).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def labels_csv(rows: list[dict]) -> str:
    """The corpus's labels.csv (file, label, class_name, split, caption, source)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=("file", "label", "class_name", "split", "caption", "source"), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_labels(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "labels.csv").write_text(labels_csv(rows), encoding="utf-8", newline="")


def write_folder(rows: list[dict], out: Path, resolution: int, quality: int) -> int:
    """One JPEG per row under out/images/ and labels.csv; returns the bytes written."""
    size = 0
    for row in rows:
        target = out / "images" / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data := jpeg_bytes(row["source_file"], resolution, quality))
        size += len(data)
    write_labels(rows, out)
    return size


def write_pack(rows: list[dict], out: Path, resolution: int, quality: int) -> int:
    """Every row's JPEG end to end in out/corpus.npz (uint8 `jpeg`, int64 `offsets`, and labels.csv
    gzipped in `labels_csv_gz`: its repeated paths and captions shrink about tenfold); returns the JPEG bytes."""
    encoded = [jpeg_bytes(row["source_file"], resolution, quality) for row in rows]
    offsets = np.cumsum([0] + [len(data) for data in encoded]).astype(np.int64)
    labels = gzip.compress(labels_csv(rows).encode("utf-8"), mtime=0)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "corpus.npz", jpeg=np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets=offsets,
             labels_csv_gz=np.frombuffer(labels, dtype=np.uint8), quality=np.int64(quality))
    return int(offsets[-1])


def pack_quality(pack: Path) -> int:
    """The JPEG quality a corpus was packed at (`gpu_lease.py prepare` may have lowered it)."""
    with np.load(pack / "corpus.npz", allow_pickle=False) as arrays:
        return int(arrays["quality"])


def unpack(pack: Path, folder: Path) -> int:
    """A packed corpus as a data folder (images/ + labels.csv); returns the image count."""
    with np.load(pack / "corpus.npz", allow_pickle=False) as arrays:
        blob, offsets = arrays["jpeg"], arrays["offsets"]
        text = gzip.decompress(arrays["labels_csv_gz"].tobytes()).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    if len(rows) != len(offsets) - 1:
        raise ValueError(f"{pack}: labels.csv has {len(rows)} rows for {len(offsets) - 1} packed images")
    for index, row in enumerate(rows):
        target = folder / "images" / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob[offsets[index]:offsets[index + 1]].tobytes())
    write_labels(rows, folder)
    return len(rows)


def build(data_root: Path, out: Path, resolution: int = 32, quality: int = 90, pack: bool = False,
          per_source: int | None = None) -> str:
    """Build the corpus (a folder, or a pack) and say what it holds."""
    rows = corpus_rows(data_root)
    if per_source is not None:
        rows = limit_per_source(rows, per_source)
    if not rows:
        raise SystemExit(f"No source data sets under {data_root}.")
    size = (write_pack if pack else write_folder)(rows, out, resolution, quality)
    by_source: dict[str, int] = {}
    for row in rows:
        by_source[row["source"]] = by_source.get(row["source"], 0) + 1
    return (f"{len(rows)} images ({', '.join(f'{k} {v}' for k, v in by_source.items())}), "
            f"{len({r['label'] for r in rows})} classes, {size / 2**20:.1f} MiB{' packed' if pack else ''} -> {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_root", type=Path, help="folder holding tinyimagenet/, flowers102/, cub100/, butterflies10/")
    parser.add_argument("out", type=Path)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument("--pack", action="store_true", help="one corpus.npz of JPEG bytes instead of a folder of files")
    parser.add_argument("--per-source", type=int, default=None, help="keep the first N images of each source (a toy corpus)")
    args = parser.parse_args()
    print(build(args.data_root, args.out, args.resolution, args.quality, args.pack, args.per_source))


if __name__ == "__main__":
    main()
