"""DiFiC on digits its text-to-image model never saw: the seen/novel USPS benchmark.

A small text-conditioned pixel model is pretrained with `diffclust pretrain` on the even USPS
digits ("a handwritten digit 0", "... 2", ...); DiFiC then clusters the odd digits (K = 5),
which the model never saw, with every choice label-free. Labels only score.

    python benchmarks/difc_digits.py split usps --work .data/digits
    python benchmarks/difc_digits.py pretrain --work .data/digits          # the recorded recipe (about 30 min on 2 CPU cores)
    python benchmarks/difc_digits.py table --work .data/digits --seeds 0,1,2 --out benchmarks/results/difc_digits
    python benchmarks/difc_digits.py profile --work .data/digits --out benchmarks/results/difc_digits/step.md   # speed, side by side
    python benchmarks/difc_digits.py refresh --out benchmarks/results/difc_digits   # table.md again from table.json
    python benchmarks/difc_digits.py head RUN_DIR --work .data/digits --out FILE    # the head alone on a run's proxy words

`table` writes table.json and table.md: the raw-pixel rows, k-means on z (block b at t-hat:
the paper's "Stable Diffusion" row), then DiFiC's modules switched on one by one (semantic
distillation alone, + object concentration, + cluster guidance = the full method) and the
timestep-sampling variant, each over the seeds. USPS has no object masks; the table gives the
masks' IoU with the ink instead (pixels above mid-grey), which needs no label.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import baselines  # noqa: E402  (benchmarks/baselines.py)
from subsets import read_rows, write_subset  # noqa: E402  (benchmarks/subsets.py)

from provenance import save_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEEN, NOVEL = ("0", "2", "4", "6", "8"), ("1", "3", "5", "7", "9")
CAPTION = "a handwritten digit {class_name}"
#: the recorded pretraining recipe (issue 28): 16 px, four levels, MiniLM captions, no flips (a flip changes a digit)
RECIPE = ["--captions", CAPTION, "--resolution", "16", "--channels-per-level", "32,64,64,64", "--layers-per-block", "1",
          "--steps", "1500", "--batch-size", "64", "--lr", "5e-4", "--no-hflip", "--seed", "0"]


def split(source: Path, work: Path) -> dict:
    """WORK/seen and WORK/novel: the even and the odd digits of SOURCE, with their labels.csv."""
    rows = read_rows(source)
    return {name: write_subset(source, [row for row in rows if row["class_name"] in classes], work / name)
            for name, classes in (("seen", SEEN), ("novel", NOVEL))}


def pretrain(work: Path, extra: list[str]) -> None:
    command = [sys.executable, "-m", "diffclust.cli", "pretrain", str(work / "seen"), "--out", str(work / "model"), *RECIPE, *extra]
    print(" ".join(command[2:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    (work / "model" / "benchmark_recipe.json").write_text(json.dumps({"command": command[2:], "seconds": round(time.perf_counter() - started)}, indent=2))


#: DiFiC's modules switched on one by one (the paper's module table), and the timestep-sampling variant
VARIANTS = {
    "distillation": dict(object_concentration=False, cluster_guidance=False),
    "distillation + object concentration": dict(object_concentration=True, cluster_guidance=False),
    "distillation + cluster guidance": dict(object_concentration=False, cluster_guidance=True),
    "DiFiC (all three modules)": dict(object_concentration=True, cluster_guidance=True),
    "DiFiC with uniform timestep sampling": dict(object_concentration=True, cluster_guidance=True, timestep_sampling="uniform"),
}
Z_ROW = "k-means on z (block b, t-hat)"
MANIFOLD_ROW = "UMAP + k-means on z (the head's start with head_init='manifold')"


def pixel_rows(collection, k: int, seed: int) -> dict[str, dict]:
    """k-means and UMAP + k-means on the raw 16 x 16 pixels."""
    import numpy as np

    pixels = np.stack([np.asarray(collection.records[i].rgb().convert("L").resize((16, 16)), dtype=np.float32).ravel() / 255
                       for i in range(len(collection))])
    return baselines.pixel_rows(pixels, collection.labels, k, seed)


def cached_z(run_dir: Path, count: int):
    """(count, D) float32: the z that DiFiC cached in `run_dir`, one flattened row per image."""
    import numpy as np

    return np.load(next(run_dir.rglob("features.npy")), allow_pickle=False, mmap_mode="r").astype(np.float32).reshape(count, -1)


def z_row(run_dir: Path, labels, k: int, seed: int) -> dict:
    """k-means on z (block b at t-hat, DiFiC's cached feature): the paper's "Stable Diffusion" row."""
    from diffclust.cluster.kmeans import fit_kmeans
    from diffclust.cluster.metrics import clustering_scores

    return clustering_scores(labels, fit_kmeans(cached_z(run_dir, len(labels)), k, seed=seed)[1])


def manifold_row(run_dir: Path, labels, k: int, seed: int) -> dict:
    """UMAP + k-means on z: the partition DiFiC's head starts from with head_init="manifold"."""
    from diffclust.cluster.metrics import clustering_scores
    from diffclust.methods.difc.hand_over import manifold_start

    return clustering_scores(labels, manifold_start(cached_z(run_dir, len(labels)), k, seed))


#: the head probe's rows: (where the head starts, where its neighbours are found, the size prior)
HEAD_PROBE_ROWS = [("kmeans", "proxies", "uniform"), ("kmeans", "proxies", "start"), ("kmeans", "features", "start"),
                   ("manifold", "proxies", "start"), ("manifold", "features", "start")]


def head_probe(run_dir: Path, labels_csv: Path, epochs: int, seed: int) -> str:
    """The cluster head alone on a finished run's proxy words (its embedding.npy; no diffusion,
    f fixed): from each start DiFiC offers (k-means of S*, or UMAP + k-means of z), with the
    neighbours found in S* or in z, and with each size prior. What the head and its loss do
    to a partition by themselves. Labels only score."""
    import numpy as np
    import torch

    from diffclust.cluster.heads import ClusterHead
    from diffclust.cluster.kmeans import fit_kmeans
    from diffclust.cluster.losses import AssignmentMemoryBank, cluster_guidance_loss, cluster_shares
    from diffclust.cluster.metrics import clustering_scores
    from diffclust.cluster.neighbours import nearest_neighbours
    from diffclust.methods.difc.hand_over import manifold_start
    from diffclust.methods.difc.training import HEAD_INIT_STEPS, HEAD_WARMUP_STEPS

    proxies = torch.from_numpy(np.load(run_dir / "embedding.npy", allow_pickle=False)).float()
    with open(labels_csv, newline="", encoding="utf-8") as handle:
        truth = {row["file"]: row["label"] for row in csv.DictReader(handle)}
    with open(run_dir / "assignments.csv", newline="", encoding="utf-8") as handle:
        labels = np.array([truth[Path(row["file"]).name] for row in csv.DictReader(handle)])
    z = cached_z(run_dir, len(labels))
    k, settings = len(NOVEL), {"lr": 2e-4, "weight_decay": 1e-2, "batch": 32, "bank": 512, "neighbours": 10, "entropy_weight": 5.0}
    starts = {"kmeans": fit_kmeans(proxies, k, seed=seed)[1], "manifold": manifold_start(z, k, seed)}
    tables = {"proxies": nearest_neighbours(proxies, settings["neighbours"]), "features": nearest_neighbours(z, settings["neighbours"])}
    acc = lambda predicted: 100 * clustering_scores(labels, predicted)["acc"]  # noqa: E731
    purity = lambda table: float((labels[table] == labels[:, None]).mean())  # noqa: E731
    lines = [f"# The head alone on the proxy words of `{run_dir}`", "",
             f"Starts: k-means of S* ACC {acc(starts['kmeans']):.2f}%, sizes {np.bincount(starts['kmeans'], minlength=k).tolist()}; "
             f"UMAP + k-means of z ACC {acc(starts['manifold']):.2f}%, sizes {np.bincount(starts['manifold'], minlength=k).tolist()}; "
             f"true sizes {np.unique(labels, return_counts=True)[1].tolist()}. Ten-neighbour purity (cosine): S* "
             f"{purity(tables['proxies']):.3f}, z {purity(tables['features']):.3f}. Settings: DiFiC's defaults {settings}, seed {seed}.", "",
             "| start | neighbours in | size prior | " + " | ".join(f"epoch {e + 1}" for e in range(epochs)) + " | final sizes |",
             "|---|---|---|" + "---|" * (epochs + 1)]
    for start_name, space, prior in HEAD_PROBE_ROWS:
        start, neighbours = starts[start_name], torch.from_numpy(tables[space])
        torch.manual_seed(seed)
        head = ClusterHead(proxies.shape[1], k)
        optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
        for _ in range(HEAD_INIT_STEPS):
            loss = torch.nn.functional.cross_entropy(head(proxies), torch.from_numpy(start))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        optimizer = torch.optim.AdamW(head.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
        shares = cluster_shares(start, k) if prior == "start" else None
        bank = AssignmentMemoryBank(settings["bank"], k)
        head.calibrate(proxies)
        with torch.no_grad():
            bank.push(head.eval()(proxies[torch.randperm(len(proxies))[: settings["bank"]]]).softmax(dim=1))
        curve, step = [], 0
        for _ in range(epochs):
            head.train()
            for rows in torch.randperm(len(proxies)).split(settings["batch"]):
                for group in optimizer.param_groups:
                    group["lr"] = settings["lr"] * min(1.0, (step + 1) / HEAD_WARMUP_STEPS)
                picks = neighbours[rows, torch.randint(neighbours.shape[1], (len(rows),))]
                probs = head(torch.cat([proxies[rows], proxies[picks]])).softmax(dim=1)
                total, _, _ = cluster_guidance_loss(probs[: len(rows)], probs[len(rows):], bank, settings["entropy_weight"], shares)
                bank.push(probs[: len(rows)])
                optimizer.zero_grad()
                total.backward()
                optimizer.step()
                step += 1
            head.calibrate(proxies)
            with torch.no_grad():
                predicted = head.eval()(proxies).argmax(dim=1).numpy()
            curve.append(acc(predicted))
        lines.append(f"| {start_name} | {space} | {prior} | " + " | ".join(f"{value:.2f}" for value in curve)
                     + f" | {np.bincount(predicted, minlength=k).tolist()} |")
    return "\n".join(lines) + "\n"


def mask_iou_with_ink(run_dir: Path) -> float | None:
    """Mean IoU of DiFiC's cached object masks with the ink (pixels above mid-grey: USPS digits
    are light on dark), or None when the run made no masks. Label-free: it reads the images."""
    import numpy as np

    found = list(run_dir.rglob("masks.npy"))
    if not found:
        return None
    masks = np.load(found[0], allow_pickle=False).astype(bool)
    ink = np.load(found[0].with_name("latents.npy"), allow_pickle=False)[:, 0] > 0
    return float(((masks & ink).sum(axis=(1, 2)) / np.maximum((masks | ink).sum(axis=(1, 2)), 1)).mean())


def difc_run(collection, folder: Path, model: Path, name: str, seed: int, epochs: int, runs: Path, extra: dict) -> dict:
    """One DiFiC run on `folder` (passed as a folder, so the run records its images for the report)."""
    from diffclust import DiFiC
    from diffclust.cluster.metrics import clustering_scores

    run_dir = runs / f"{name.replace(' ', '_').replace(',', '').replace('+', 'and')}-seed{seed}"
    started = time.perf_counter()
    estimator = DiFiC(len(NOVEL), backbone=str(model), epochs=epochs, random_state=seed, device="cpu", progress=False,
                      output_dir=run_dir, **{**VARIANTS[name], **extra})
    estimator.fit(str(folder))
    curve = [round(100 * record["acc"], 2) for record in estimator.history_ if "acc" in record]
    epoch_seconds = [record["seconds"] for record in estimator.history_]
    return {**clustering_scores(collection.labels, estimator.labels_), "run_dir": str(run_dir), "acc_by_epoch": curve,
            "epoch_seconds": epoch_seconds, "seconds": round(time.perf_counter() - started, 1),
            "mask_iou_with_ink": mask_iou_with_ink(run_dir)}


def table(work: Path, seeds: list[int], epochs: int, variants: list[str], out: Path, extra: dict) -> dict:
    from diffclust import scan_images
    from diffclust.engine.atomic import atomic_write_json

    unknown = [name for name in variants if name not in VARIANTS]
    if unknown:
        raise SystemExit(f"Unknown variant(s) {unknown}; choose from {list(VARIANTS)} (comma-separated).")
    collection = scan_images(work / "novel")
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "table.json"
    header = dict(model=str(work / "model"), images=len(collection), k=len(NOVEL), epochs=epochs, settings=extra)

    def merged(seed: int, new_rows: dict) -> dict:
        """table.json as it is now on disk with these rows added: two runs of this script may
        share OUT (other seeds or variants), so each write reads the other's rows first."""
        results = json.loads(results_file.read_text()) if results_file.is_file() else {"seeds": {}}
        results.update(header)
        results["seeds"].setdefault(str(seed), {}).update(new_rows)
        atomic_write_json(results_file, results)
        return results

    results = merged(seeds[0] if seeds else 0, {})
    for seed in seeds:
        results = merged(seed, pixel_rows(collection, len(NOVEL), seed))
        for name in variants:
            if name in results["seeds"][str(seed)]:  # finished before (the script resumes run by run)
                continue
            row = difc_run(collection, work / "novel", work / "model", name, seed, epochs, work / "runs" / out.name, extra)
            new_rows = {name: row}
            for row_name, score in ((Z_ROW, z_row), (MANIFOLD_ROW, manifold_row)):
                if row_name not in results["seeds"][str(seed)]:
                    new_rows[row_name] = score(Path(row["run_dir"]), collection.labels, len(NOVEL), seed)
            results = merged(seed, new_rows)
            print(f"seed {seed} {name}: ACC {100 * row['acc']:.2f}% by epoch {row['acc_by_epoch']}", flush=True)
    save_results(out, "table", None, markdown(results))
    return results


def refresh(out: Path) -> dict:
    """Rewrite OUT/table.md from OUT/table.json, adding the mask IoU to runs recorded before it was measured."""
    from diffclust.engine.atomic import atomic_write_json

    results_file = out / "table.json"
    results = json.loads(results_file.read_text())
    for rows in results["seeds"].values():
        for row in rows.values():
            if "run_dir" in row and "mask_iou_with_ink" not in row:
                row["mask_iou_with_ink"] = mask_iou_with_ink(Path(row["run_dir"]))
    atomic_write_json(results_file, results)
    save_results(out, "table", None, markdown(results))
    return results


def markdown(results: dict) -> str:
    import numpy as np

    seeds = sorted(results["seeds"], key=int)
    found_names = {name for seed in seeds for name in results["seeds"][seed]}
    order = [baselines.KMEANS_PIXELS, baselines.UMAP_PIXELS, Z_ROW, MANIFOLD_ROW, *VARIANTS]
    names = [name for name in order if name in found_names] + sorted(found_names - set(order))
    lines = [f"# DiFiC on novel digits: {results['images']} odd USPS digits (K = {results['k']}), model trained on the even ones",
             "", f"Model `{results['model']}`; {results['epochs']} epochs; settings {results['settings'] or 'defaults'}; "
             f"seeds {', '.join(seeds)}. Every choice is label-free; labels only score. ACC by epoch is the mean over seeds.", "",
             "| representation | ACC % | NMI | ARI | seeds | ACC by epoch |", "|---|---|---|---|---|---|"]
    for name in names:
        found = [results["seeds"][seed][name] for seed in seeds if name in results["seeds"][seed]]
        acc = np.array([100 * row["acc"] for row in found])
        spread = f" ± {acc.std():.2f}" if len(acc) > 1 else ""
        curves = [row["acc_by_epoch"] for row in found if row.get("acc_by_epoch")]
        curve = ", ".join(f"{value:.1f}" for value in np.mean(curves, axis=0)) if curves and len({len(c) for c in curves}) == 1 else ""
        lines.append(f"| {name} | {acc.mean():.2f}{spread} | {np.mean([r['nmi'] for r in found]):.3f} | "
                     f"{np.mean([r['ari'] for r in found]):.3f} | {len(found)} | {curve} |")
    ious = [row["mask_iou_with_ink"] for seed in seeds for row in results["seeds"][seed].values() if row.get("mask_iou_with_ink") is not None]
    if ious:
        lines += ["", f"Object masks (the runs with object concentration): mean IoU with the ink (pixels above mid-grey) "
                      f"{np.mean(ious):.3f}, over {len(ious)} runs."]
    return "\n".join(lines) + "\n"


#: the training passes compared by `profile`: how every release before issue 28's speed work ran
#: on a CPU (all fp32, fused attention), and diffclust's "auto" now (on a CPU with AMX: the text
#: encoder in bf16 with explicit attention), then the options that were tried and not kept
PROFILE_CONFIGS = {
    "before: all fp32": dict(weights_dtype="fp32", text_encoder_dtype="fp32"),
    "auto (now)": dict(),
    "auto + UNet in bf16": dict(weights_dtype="bf16", text_encoder_dtype="bf16"),
    "auto + UNet channels_last": dict(channels_last=True),
    "auto + explicit UNet attention": dict(fused_attention=False),
}


def _profile_backbone(model: Path, settings: dict):
    """The model loaded and prepared for training passes as `settings` say, and what they resolved to."""
    from diffclust.backbones import load_backbone
    from diffclust.backbones.efficiency import TrainingEfficiency

    backbone = load_backbone(str(model), progress=False)
    efficiency = TrainingEfficiency(**settings).resolved("cpu")
    backbone.prepare_training(efficiency)
    return backbone, f"UNet {efficiency.weights_dtype}, text encoder {efficiency.text_encoder_dtype}"


def profile_parts(model: Path, batch: int, repeats: int) -> str:
    """Where a DiFiC training step's time goes, per configuration: the text encoder's forward and
    backward to S*, the UNet's forward and backward to its context, and the two together."""
    import torch

    from diffclust.backbones.base import PromptEncoding

    generator = torch.Generator().manual_seed(0)
    lines = [f"## One training step's parts (batch {batch}, best of {repeats})", "",
             "| configuration | weights | text encoder fwd+bwd s | UNet fwd+bwd s | text + UNet s | images/s |", "|---|---|---|---|---|---|"]
    for name, settings in PROFILE_CONFIGS.items():
        backbone, weights = _profile_backbone(model, settings)
        latents = torch.randn(batch, *backbone.latent_shape(backbone.resolution), generator=torch.Generator().manual_seed(0))
        timesteps = torch.randint(0, backbone.num_train_timesteps, (batch,), generator=torch.Generator().manual_seed(1))
        proxy = torch.randn(batch, backbone.token_dim, generator=generator, requires_grad=True)
        prompt = "A photo of a S*"

        def text():
            backbone.encode_prompt(prompt, batch, proxy=proxy).embeddings.float().sum().backward()

        with torch.no_grad():
            encoded = backbone.encode_prompt(prompt, batch, proxy=proxy)

        def unet():
            context = PromptEncoding(encoded.embeddings.clone().requires_grad_(), encoded.end_index, encoded.placeholder_index)
            backbone.run_unet(latents, timesteps, context).prediction.float().pow(2).mean().backward()

        def both():
            backbone.run_unet(latents, timesteps, backbone.encode_prompt(prompt, batch, proxy=proxy)).prediction.float().pow(2).mean().backward()

        seconds = [best_of(function, repeats) for function in (text, unet, both)]
        lines.append(f"| {name} | {weights} | " + " | ".join(f"{value:.3f}" for value in seconds) + f" | {batch / seconds[2]:.1f} |")
    return "\n".join(lines) + "\n"


def best_of(function, repeats: int) -> float:
    """The fastest of `repeats` timed calls, after one untimed call (allocations, kernel choice)."""
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def profile_epochs(work: Path, batch: int, rounds: int, configs: list[str]) -> str:
    """Whole warm-up epochs of DiFiC's own trainer on the novel digits (f, text encoder, UNet,
    masked loss, optimiser, data), one per configuration in turn, `rounds` times: the
    configurations see the same machine load. The per-image constants are cached once before."""
    import tempfile

    import torch

    from diffclust.backbones import load_backbone
    from diffclust.data import scan_images
    from diffclust.engine.runtime import make_accelerator
    from diffclust.methods.difc import DiFiC
    from diffclust.methods.difc.constants import ConstantComputer, load_or_compute_constants
    from diffclust.methods.difc.network import DiFiCNetwork
    from diffclust.methods.difc.training import DiFiCTrainer

    accelerator = make_accelerator("cpu")
    collection = scan_images(work / "novel")
    estimator = DiFiC(len(NOVEL), backbone=str(work / "model"), epochs=2, warmup_epochs=1, batch_size=batch, progress=False)
    estimator.n_clusters_ = len(NOVEL)
    trainers = {}
    with tempfile.TemporaryDirectory() as folder:
        backbone = load_backbone(str(work / "model"), progress=False)  # the constants at full precision, as in a fit
        resolution = backbone.resolution
        params = estimator._trainer_params("profile", resolution, warmup_epochs=1)
        computer = ConstantComputer(backbone, estimator._constant_settings(resolution, True), estimator._shared_noise(backbone, resolution))
        store = load_or_compute_constants(computer, collection, folder, accelerator, batch, show_progress=False)
        for name in configs:
            backbone, weights = _profile_backbone(work / "model", PROFILE_CONFIGS[name])
            torch.manual_seed(0)
            network = DiFiCNetwork(store.shape("features")[0], backbone.token_dim, len(NOVEL), with_head=False)
            trainer = DiFiCTrainer(params, backbone, store, network, accelerator, None, None)
            trainers[name] = (trainer, weights, [])
        for _ in range(rounds):
            for trainer, _, seconds in trainers.values():
                started = time.perf_counter()
                trainer.train_epoch(trainer.network, trainer.optimizer, 0)
                seconds.append(time.perf_counter() - started)
    reference = min(trainers[configs[0]][2])
    lines = [f"## Whole warm-up epochs ({len(collection)} novel digits, batch {batch}, {rounds} rounds in turn, the fastest kept)", "",
             "| configuration | weights | epoch s | images/s | x before |", "|---|---|---|---|---|"]
    for name, (_, weights, seconds) in trainers.items():
        lines.append(f"| {name} | {weights} | {min(seconds):.1f} | {len(collection) / min(seconds):.1f} | {reference / min(seconds):.2f} |")
    return "\n".join(lines) + "\n"


def profile(work: Path, batch: int, repeats: int, rounds: int) -> str:
    import platform

    import torch

    from diffclust.backbones.efficiency import cpu_has_bf16_matrix_units

    head = [f"# DiFiC training speed on `{work / 'model'}` on this CPU", "",
            f"{platform.machine()}, {torch.get_num_threads()} threads, bf16 matrix units (AMX): {cpu_has_bf16_matrix_units()}; "
            f"torch {torch.__version__}.", "", ""]
    epochs = profile_epochs(work, batch, rounds, list(PROFILE_CONFIGS)[:2]) if rounds else ""
    return "\n".join(head) + profile_parts(work / "model", batch, repeats) + ("\n" + epochs if epochs else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    split_parser = commands.add_parser("split", help="write WORK/seen (even digits) and WORK/novel (odd digits)")
    split_parser.add_argument("data", help="the USPS data folder, or the built-in name usps")
    split_parser.add_argument("--work", type=Path, required=True)
    pretrain_parser = commands.add_parser("pretrain", help="train WORK/model on WORK/seen with the recorded recipe")
    pretrain_parser.add_argument("--work", type=Path, required=True)
    table_parser = commands.add_parser("table", help="the module table on WORK/novel with WORK/model")
    table_parser.add_argument("--work", type=Path, required=True)
    table_parser.add_argument("--out", type=Path, required=True)
    table_parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    table_parser.add_argument("--epochs", type=int, default=8)
    table_parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {'; '.join(VARIANTS)}")
    table_parser.add_argument("--settings", default="{}", help="further DiFiC settings as JSON (e.g. '{\"prompt_template\": ...}')")
    refresh_parser = commands.add_parser("refresh", help="rewrite OUT/table.md from OUT/table.json (and add missing mask IoUs)")
    refresh_parser.add_argument("--out", type=Path, required=True)
    head_parser = commands.add_parser("head", help="the cluster head alone on a finished run's proxy words, with each size prior")
    head_parser.add_argument("run_dir", type=Path)
    head_parser.add_argument("--work", type=Path, required=True)
    head_parser.add_argument("--epochs", type=int, default=5)
    head_parser.add_argument("--seed", type=int, default=0)
    head_parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    profile_parser = commands.add_parser("profile", help="time DiFiC's training step and epoch on WORK/model, per configuration")
    profile_parser.add_argument("--work", type=Path, required=True)
    profile_parser.add_argument("--batch", type=int, default=32)
    profile_parser.add_argument("--repeats", type=int, default=4)
    profile_parser.add_argument("--rounds", type=int, default=2, help="whole epochs per configuration (0: the step's parts only)")
    profile_parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args, extra = parser.parse_known_args(argv)
    if args.command == "split":
        from diffclust.datasets import resolve_data

        print(split(Path(resolve_data(args.data)), args.work))
    elif args.command == "pretrain":
        pretrain(args.work, extra)
    elif args.command == "refresh":
        print(markdown(refresh(args.out)))
    elif args.command in ("head", "profile"):
        report = (head_probe(args.run_dir, args.work / "novel" / "labels.csv", args.epochs, args.seed) if args.command == "head"
                  else profile(args.work, args.batch, args.repeats, args.rounds))
        print(report)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(report)
    else:
        table(args.work, [int(seed) for seed in args.seeds.split(",")], args.epochs, args.variants.split(","), args.out, json.loads(args.settings))


if __name__ == "__main__":
    main()
