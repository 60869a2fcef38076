"""DiEC on little data: a 1,800-image twin of USPS, with its own DDPM (issue 30).

A stratified, seeded 1,800-image subset of USPS stands in for a small digit set that DiEC is
scored on elsewhere. A DDPM is trained on the subset alone with the recipe of the bundled
`usps-ddpm` (its training/record.json command, with this data and output), then
`diec_seeds.py` scores DiEC against k-means and UMAP + k-means on the raw pixels over seeds:

    python benchmarks/diec_small_data.py subset ../shared/data/usps --work .data/usps-twin
    python benchmarks/diec_small_data.py pretrain --work .data/usps-twin     # about 20 min on one CPU core
    python benchmarks/diec_seeds.py .data/usps-twin/images-1800 --backbone .data/usps-twin/ddpm \\
        --out benchmarks/results/diec_small_data/twin --seeds 0,1,2 --epochs 50 --label-grid

`subset --pixels 8` averages each image down to 8 x 8 (a low-resolution twin; the recipe's
`--resolution 16` scales it back up when it loads). `pretrain` passes further options to `diffclust pretrain` (they override the recipe's), so
recipe variants are one flag away, e.g. `--steps 4000 --out .data/usps-twin/ddpm-4000`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from subsets import read_rows, stratified_rows, write_subset  # noqa: E402  (benchmarks/subsets.py)

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "src" / "diffclust" / "backbones" / "bundled" / "usps-ddpm" / "training" / "record.json"
SUBSET_NAME = "images-{size}"


def recipe() -> list[str]:
    """The bundled usps-ddpm's pretrain options, without its data, output and logging flags."""
    words = shlex.split(json.loads(RECORD.read_text())["command"])[3:]  # drop "diffclust pretrain DATA"
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word == "--out":
            skip = True
        elif word != "--quiet":
            kept.append(word)
    return kept


def merged_options(base: list[str], extra: list[str]) -> list[str]:
    """`base` with every option that `extra` names replaced by extra's value (flags without a value kept)."""
    def options(words: list[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for i, word in enumerate(words):
            if word.startswith("--"):
                found[word] = [] if i + 1 == len(words) or words[i + 1].startswith("--") else [words[i + 1]]
        return found
    combined = {**options(base), **options(extra)}
    return [word for name, value in combined.items() for word in (name, *value)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    subset_parser = commands.add_parser("subset", help="write WORK/images-SIZE: a stratified, seeded subset of DATA")
    subset_parser.add_argument("data", type=Path)
    subset_parser.add_argument("--work", type=Path, required=True)
    subset_parser.add_argument("--size", type=int, default=1800)
    subset_parser.add_argument("--seed", type=int, default=0)
    subset_parser.add_argument("--pixels", type=int, default=None, help="average each image down to PIXELS x PIXELS (a low-resolution twin)")
    pretrain_parser = commands.add_parser("pretrain", help="train WORK/ddpm on WORK/images-SIZE with usps-ddpm's recipe")
    pretrain_parser.add_argument("--work", type=Path, required=True)
    pretrain_parser.add_argument("--size", type=int, default=1800)
    args, extra = parser.parse_known_args(argv)
    folder = args.work / SUBSET_NAME.format(size=args.size)
    if args.command == "subset":
        written = write_subset(args.data, stratified_rows(read_rows(args.data), args.size, args.seed), folder, args.pixels)
        print(f"{written} images in {folder}")
        return
    command = [sys.executable, "-m", "diffclust.cli", "pretrain", str(folder), *merged_options(recipe() + ["--out", str(args.work / "ddpm")], extra)]
    print(" ".join(shlex.quote(word) for word in command), flush=True)
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
