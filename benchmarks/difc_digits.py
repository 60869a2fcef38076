"""DiFiC on digits its text-to-image model never saw: the seen/novel USPS benchmark.

A small text-conditioned pixel model is pretrained with `diffclust pretrain` on the even USPS
digits ("a handwritten digit 0", "... 2", ...); DiFiC then clusters the odd digits (K = 5),
which the model never saw, with every choice label-free. Labels only score.

    python benchmarks/difc_digits.py split ../shared/data/usps --work .data/digits
    python benchmarks/difc_digits.py pretrain --work .data/digits          # the recorded recipe (about 30 min on 2 CPU cores)
    python benchmarks/difc_digits.py table --work .data/digits --seeds 0,1,2 --out benchmarks/results/difc_digits

`table` writes table.json and table.md: the raw-pixel rows, k-means on z (block b at t-hat:
the paper's "Stable Diffusion" row), then DiFiC's modules switched on one by one (semantic
distillation alone, + object concentration, + cluster guidance = the full method) and the
timestep-sampling variant, each over the seeds. USPS has no object masks, so mask IoU does not
apply here.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
SEEN, NOVEL = ("0", "2", "4", "6", "8"), ("1", "3", "5", "7", "9")
CAPTION = "a handwritten digit {class_name}"
#: the recorded pretraining recipe (issue 28): 16 px, four levels, MiniLM captions, no flips (a flip changes a digit)
RECIPE = ["--captions", CAPTION, "--resolution", "16", "--channels-per-level", "32,64,64,64", "--layers-per-block", "1",
          "--steps", "1500", "--batch-size", "64", "--lr", "5e-4", "--no-hflip", "--seed", "0"]


def split(source: Path, work: Path) -> dict:
    """WORK/seen and WORK/novel: the even and the odd digits of SOURCE, with their labels.csv."""
    with open(source / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    counts = {}
    for name, classes in (("seen", SEEN), ("novel", NOVEL)):
        chosen = [row for row in rows if row["class_name"] in classes]
        folder = work / name
        (folder / "images").mkdir(parents=True, exist_ok=True)
        for row in chosen:
            target = folder / "images" / row["file"]
            if not target.exists():
                shutil.copy(source / "images" / row["file"], target)
        with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(chosen)
        counts[name] = len(chosen)
    return counts


def pretrain(work: Path, extra: list[str]) -> None:
    command = [sys.executable, "-m", "diffclust.cli", "pretrain", str(work / "seen"), "--out", str(work / "model"), *RECIPE, *extra]
    print(" ".join(command[2:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    (work / "model" / "benchmark_recipe.json").write_text(json.dumps({"command": command[2:], "seconds": round(time.perf_counter() - started)}, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    split_parser = commands.add_parser("split", help="write WORK/seen (even digits) and WORK/novel (odd digits)")
    split_parser.add_argument("data", type=Path)
    split_parser.add_argument("--work", type=Path, required=True)
    pretrain_parser = commands.add_parser("pretrain", help="train WORK/model on WORK/seen with the recorded recipe")
    pretrain_parser.add_argument("--work", type=Path, required=True)
    args, extra = parser.parse_known_args(argv)
    if args.command == "split":
        print(split(args.data, args.work))
    elif args.command == "pretrain":
        pretrain(args.work, extra)


if __name__ == "__main__":
    main()
