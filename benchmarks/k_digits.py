"""`--k auto` on the built-in digits: which K each criterion picks on what DiEC and DiFiC choose K on.

Sets: the ten digits (`usps`, K = 10) and the five odd ones (`usps-odd`, K = 5, the digits the
bundled usps-text never saw), whole or as seeded random subsets of 300 and 1,000 images.
Representations, as a fit with `--k auto` would scan them:

- diec: usps-ddpm's pooled UNet features at the pair DiEC's search picks (what DiEC chooses K on);
- difc-z: the UNet feature z the proxy words are computed from, which the head's start partition
  (UMAP + k-means) is built on (what DiFiC chooses K on, before training);
- difc-words: DiFiC's proxy words S* on usps-text after one distillation epoch (the end of the
  warm-up of the example's `--epochs 2`, where DiFiC chose K until 2026-12-07), or after
  `--difc-epochs`.

Each representation is scanned once with every criterion (umap_silhouette included); labels
only score. Each set runs in its own process, one after the other, and the table is rewritten
after each.

    python benchmarks/k_digits.py --sets odd:300,odd:1000,all:300,all:1000,odd,all --out benchmarks/results/k_digits \
        --keep .data/k_digits
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from provenance import save_results  # noqa: E402


def digits_folder(spec: str, parent: Path) -> Path:
    """A data folder for "odd[:N]" or "all[:N]": the built-in set, or a seeded random subset of
    N of its images."""
    import numpy as np

    from diffclust.datasets import DigitImages, builtin_folder, load_usps, load_usps_odd, write_digits_folder

    which, _, size = spec.partition(":")
    name = {"odd": "usps-odd", "all": "usps"}[which]
    if not size:
        return builtin_folder(name)
    digits = load_usps_odd() if which == "odd" else load_usps()
    keep = np.sort(np.random.default_rng(0).choice(len(digits), int(size), replace=False))
    subset = DigitImages(digits.images[keep], digits.labels[keep], digits.split[keep], [digits.files[i] for i in keep], digits.description)
    folder = parent / f"{which}-{size}"
    write_digits_folder(subset, folder)
    return folder


def representations(folder: Path, cache: Path, methods: tuple[str, ...] = ("diec", "difc"), difc_epochs: int = 1):
    """Yield (kind, the (N, D) rows a `--k auto` fit of that kind scans, their images' labels,
    what they are) for DiEC, DiFiC's proxy words after `difc_epochs` epochs of distillation and
    DiFiC's z (of the `methods` asked for); DiFiC runs once for its two."""
    import numpy as np

    from diffclust import DiEC, DiFiC
    from diffclust.methods.difc.constants import ConstantStore
    from diffclust.methods.difc.hand_over import feature_rows

    if "diec" in methods:
        collection, features, layer, timestep = DiEC("auto", backbone="usps-ddpm", device="cpu", progress=False).extract_features(folder)
        yield "diec", features.numpy(), collection.labels, f"{layer}, t = {timestep}"
    if "difc" not in methods:
        return
    model = DiFiC("auto", backbone="usps-text", epochs=difc_epochs, cluster_guidance=False, device="cpu", progress=False, cache_dir=cache,
                  random_state=0).fit(folder)
    labels = _labels_of(folder, model.files_)
    yield "difc-words", model.proxy_words_, labels, "after one epoch" if difc_epochs == 1 else f"after {difc_epochs} epochs"
    (arrays,) = {path.parent for path in cache.rglob("features.npy")}
    store = ConstantStore({path.stem: np.load(path, mmap_mode="r", allow_pickle=False) for path in arrays.glob("*.npy")})
    yield "difc-z", feature_rows(store, 0), labels, f"z {tuple(store.shape('features'))}"


def _labels_of(folder: Path, files: list[str]):
    import numpy as np

    from diffclust.outputs import read_labels

    label = read_labels(folder / "labels.csv")
    return np.array([label[file] for file in files])


def kept_or_computed(spec: str, keep: Path | None, methods: tuple[str, ...] = ("diec", "difc"), difc_epochs: int = 1):
    """The set's representations [(kind, rows, labels, where, seconds)], read from `keep` when an
    earlier run stored them there (criteria can then be re-scored in seconds), else computed
    (and stored, with `keep`)."""
    import numpy as np

    name = spec.replace(":", "-") + ("" if len(methods) == 2 else "-" + methods[0]) + ("" if difc_epochs == 1 else f"-{difc_epochs}ep")
    stored = keep / f"{name}.npz" if keep else None
    if stored is not None and stored.is_file():
        with np.load(stored, allow_pickle=False) as arrays:
            meta = json.loads(str(arrays["meta"]))
            return [(kind, arrays[f"{kind}-rows"], arrays[f"{kind}-labels"], where, seconds) for kind, where, seconds in meta]
    result = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = digits_folder(spec, Path(scratch))
        started = time.perf_counter()
        for kind, rows, labels, where in representations(folder, Path(scratch) / "cache", methods, difc_epochs):
            result.append((kind, np.asarray(rows, np.float32), np.asarray(labels), where, round(time.perf_counter() - started, 1)))
            started = time.perf_counter()
    if stored is not None:
        stored.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"{kind}-{part}": value for kind, rows, labels, _, _ in result for part, value in (("rows", rows), ("labels", labels))}
        np.savez(stored, meta=json.dumps([(kind, where, seconds) for kind, _, _, where, seconds in result]), **arrays)
    return result


def classes_sharing_a_dense_group(features, labels, seed: int = 0) -> list[list[int]]:
    """The true classes that UMAP + HDBSCAN's first draw (as choose_k makes it, on the same
    scanned rows) puts in one dense group: each class goes where most of its items are; groups
    that receive two or more classes are listed (labels only score)."""
    import numpy as np

    from diffclust.cluster.k_selection import MAX_SCANNED_ITEMS, density_labels, scanned_items, scanned_rows

    data = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    dense = density_labels(scanned_rows(data, MAX_SCANNED_ITEMS, seed), seed)
    truth = np.asarray(labels)[scanned_items(len(data), MAX_SCANNED_ITEMS, seed)]
    groups: dict[int, list[int]] = {}
    for label in np.unique(truth):
        home = int(np.bincount(dense[truth == label] + 1).argmax()) - 1
        if home >= 0:  # a class that is mostly noise shares nothing
            groups.setdefault(home, []).append(int(label))
    return sorted(members for members in groups.values() if len(members) > 1)


def one_set(spec: str, keep: Path | None = None, methods: tuple[str, ...] = ("diec", "difc"), difc_epochs: int = 1) -> list[dict]:
    """Every representation of one set (of the `methods`), scanned with every criterion (in this process)."""
    from diffclust.cluster.k_selection import CRITERIA, choose_k
    from diffclust.cluster.kmeans import fit_kmeans
    from diffclust.cluster.metrics import clustering_scores

    rows = []
    for kind, features, labels, where, seconds in kept_or_computed(spec, keep, methods, difc_epochs):
        truth = len(set(labels.tolist()))
        started = time.perf_counter()
        selection = choose_k(features, criterion="silhouette", seed=0, criteria=tuple(CRITERIA))
        picks = {name: selection.pick(name) for name in CRITERIA}
        at_truth = clustering_scores(labels, fit_kmeans(features, truth, seed=0)[1])["acc"]
        at_pick = clustering_scores(labels, fit_kmeans(features, picks["silhouette"], seed=0)[1])["acc"]
        rows.append({"set": spec, "rows": len(features), "true_k": truth, "representation": kind, "where": where, "picks": picks,
                     "kmeans_acc_at_true_k": at_truth, "kmeans_acc_at_silhouette_k": at_pick,
                     "classes_sharing_a_dense_group": classes_sharing_a_dense_group(features, labels),
                     "seconds": round(seconds + time.perf_counter() - started, 1)})
    return rows


def markdown(rows: list[dict]) -> str:
    from diffclust.cluster.k_selection import CRITERIA

    lines = ["# `--k auto` on the built-in digits: the K each criterion picks", "",
             "Labels only score. Subsets: seeded random draws (seed 0). Range K = 2..min(N/5, 100). "
             "**Bold**: within one of the true K.", "",
             "The last column: the true classes that share one dense group in the first UMAP + HDBSCAN draw "
             "(each class placed where most of its items are; – where not measured).", "",
             "| set | rows | true K | scanned | " + " | ".join(CRITERIA) + " | k-means ACC % at true K / at silhouette's K "
             "| classes sharing a dense group |",
             "|---|---|---|---|" + "---|" * len(CRITERIA) + "---|---|"]
    for row in rows:
        picks = [row["picks"].get(name) for name in CRITERIA]  # None: a criterion added after the row was measured
        cells = ["–" if k is None else f"**{k}**" if abs(k - row["true_k"]) <= 1 else str(k) for k in picks]
        lines.append(f"| {row['set']} | {row['rows']:,} | {row['true_k']} | {row['representation']} ({row['where']}) | "
                     + " | ".join(cells) + f" | {100 * row['kmeans_acc_at_true_k']:.1f} / {100 * row['kmeans_acc_at_silhouette_k']:.1f} | "
                     + shared_groups(row.get("classes_sharing_a_dense_group")) + " |")
    return "\n".join(lines) + "\n"


def shared_groups(groups: list[list[int]] | None) -> str:
    if groups is None:
        return "–"
    return ", ".join(" & ".join(map(str, members)) for members in groups) or "none"


def row_key(row: dict) -> tuple:
    """What a new row replaces: the same set and representation (DiFiC's words: after as many epochs)."""
    return row["set"], row["representation"], row["where"] if row["representation"] == "difc-words" else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="odd:300,odd:1000,all:300,all:1000")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--keep", type=Path, default=None,
                        help="store each set's representations here and reuse them (re-scoring criteria without a new fit)")
    parser.add_argument("--methods", default="diec,difc", help="whose representations to scan: diec, difc or both (DiFiC's epoch "
                                                                    "takes the most time on the whole sets)")
    parser.add_argument("--difc-epochs", type=int, default=1, help="distillation epochs before DiFiC's proxy words are scanned "
                                                                     "(1: the end of the example's warm-up)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    methods = tuple(name for name in ("diec", "difc") if name in args.methods.split(","))
    if not methods:
        parser.error(f"--methods takes diec, difc or diec,difc, got {args.methods!r}")
    if args.one is not None:  # the child: one set, its rows on stdout
        print(json.dumps(one_set(args.one, args.keep, methods, args.difc_epochs)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "k_digits.json"
    done = json.loads(results_file.read_text())["results"] if results_file.is_file() else []
    for spec in args.sets.split(","):
        child = subprocess.run([sys.executable, __file__, "--out", str(args.out), "--one", spec, "--methods", ",".join(methods),
                                "--difc-epochs", str(args.difc_epochs), *(["--keep", str(args.keep)] if args.keep else [])],
                               capture_output=True, text=True)
        if child.returncode != 0:
            print(child.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{spec} failed")
        rows = json.loads(child.stdout.strip().splitlines()[-1])
        measured = {row_key(new) for new in rows}
        done = [row for row in done if row_key(row) not in measured] + rows
        for row in rows:
            print(json.dumps(row), flush=True)
        save_results(args.out, "k_digits", done, markdown(done))


if __name__ == "__main__":
    main()
