"""One prepared command for a whole GPU lease: CUDA paths, the SD-1.5 step, and `mini`.

A lease is 15 minutes of device time in all (the machine's start, idle time and retries
included; one call at most 10 minutes), on a bare machine with torch, accelerate and
transformers but no diffusers and no MiniLM, where nothing can be fetched. So everything is
prepared here, on the CPU, and the lease is one call that cannot meet an untested line: the
same stages run on the CPU with `--dry-run` at toy size, as an integration test that CI runs.

1. Here, once (downloads the wheels from PyPI; about a minute):

       python tools/gpu_lease.py prepare --data ../shared/data

   It fills two ignored folders: `.whl/` (diffusers, umap-learn, pynndescent, importlib_metadata,
   zipp) and `.lease/` (corpus/: the `mini` corpus packed as JPEG bytes, 27,691 images at 32 px;
   captions/: every caption's MiniLM embedding and the empty caption's, with the tokenizer;
   sd15-config/: SD-1.5's config files). It prints what will travel (the checkout plus both
   folders), which must stay under 60 MiB of the tool's 64: where the checkout has grown, it packs
   the corpus again at a lower JPEG quality until it fits, and says so.

2. The lease, one call of the device tool (carry `.whl` and `.lease`, timeout_s 600):

       PYTHONUNBUFFERED=1 python3 tools/gpu_lease.py run --out $OUT --limit 530

   It ends within `--limit` seconds of wall time (530 s: 8 m 50 s). Each stage runs in a process
   of its own under a time guard; a stage that fails or overruns is recorded and the next runs.
     setup      install the carried wheels into /tmp/lease-site; record the GPU, driver and versions;
                unpack the corpus (and record the JPEG quality it was packed at)
     cuda       on CUDA: DiFiC with tiny-random and the 'auto' training options (bf16 weights,
                checkpointing, SDPA, TF32), DiEC, CLUDI, predict; each checked for finite losses
                and one row per input; `--compile-unet` too if at least 150 s are left
     sd15       benchmarks/difc_step.py at SD-1.5's shapes (random weights from sd15-config), 512 px:
                naive, cached and all options at batch 8, 16 and 32 (img/s, peak memory, share of
                the bf16 peak)
     mini       `diffclust pretrain` on the corpus from the carried caption embeddings, for the
                time left less 110 s (the step count is set from the speed of the first 30 s),
                then the sample grid, the zero-shot classifier on held-out seen-class images and
                the fp16 export, each bounded
   What comes back in $OUT (at most 8 files): lease.json (every stage's result), sd15-step.md,
   mini-samples.png, mini.tar.NN (the exported model folder with its training record and loss
   log, in parts of at most 15 MiB).

3. Afterwards, here: `python tools/gpu_lease.py collect /work/.device/... --into .data/mini`
   joins the parts and unpacks the model.

Dry run (CPU, about a minute and a half; `python -m pytest -m integration tests/test_gpu_lease.py` runs it and
checks every stage; run it before a lease):

       python tools/gpu_lease.py prepare --dry-run --data ../shared/data --carry DIR/.lease --wheels DIR/.whl
       python tools/gpu_lease.py run --dry-run --carry DIR/.lease --wheels DIR/.whl --out DIR/out
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(HERE))

#: what the lease installs from carried wheels (the GPU image lacks them); pinned to what the tests here use
WHEELS = ["diffusers==0.42.1", "umap-learn==0.5.12", "pynndescent==0.7.0", "importlib_metadata==10.2.0", "zipp==4.1.2"]
WHEEL_PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
TRAVEL_LIMIT_MIB = 60
#: JPEG qualities `prepare` packs the corpus at, best first, until what travels fits
CORPUS_QUALITIES = (90, 85, 80, 75, 70)
PART_BYTES = 15 * 2**20
#: stage -> (guard in seconds on a GPU, in a dry run)
GUARDS = {"setup": (60, 60), "cuda": (120, 150), "sd15": (210, 90)}
MINI_RESERVE = 110  # seconds kept after mini's training: start-up, samples, classifier, export, packing
COMPILE_MIN_LEFT = 150


def sizes(dry_run: bool) -> dict:
    """Everything that differs between the lease and its dry run: sizes, never code paths."""
    if dry_run:
        return {"device": "cpu", "images": 12, "k": 3, "epochs": 2, "batch": 4,
                "sd15": ["--resolution", "32", "--batch-sizes", "2", "--steps", "1", "--warmup", "0", "--neighbour-points", "2000"],
                "mini": ["--channels-per-level", "16,16,32,32", "--layers-per-block", "1", "--batch-size", "4", "--lr", "1e-3",
                         "--eval-images", "4", "--eval-timesteps", "2", "--eval-seconds", "2", "--sample-steps", "2", "--log-every", "2"],
                "diec": ["--noise-draws", "1"], "cludi": ["--teacher-steps", "2", "--predict-samples", "2", "--predict-steps", "2"],
                "mini_reserve": 45, "mini_budget": 3, "limit": 240, "per_source": 6}
    return {"device": "cuda", "images": 64, "k": 4, "epochs": 2, "batch": 16,
            "sd15": ["--resolution", "512", "--batch-sizes", "8,16,32", "--steps", "3", "--warmup", "1", "--neighbour-points", "100000"],
            "mini": ["--channels-per-level", "32,64,128,128", "--layers-per-block", "2", "--batch-size", "256", "--lr", "4e-4",
                     "--mixed-precision", "bf16", "--eval-images", "500", "--eval-timesteps", "8", "--eval-seconds", "40",
                     "--sample-steps", "50", "--log-every", "50"],
            "diec": [], "cludi": [], "mini_reserve": MINI_RESERVE, "mini_budget": None, "limit": 530, "per_source": None}


# ---------------------------------------------------------------------------------- prepare (CPU)
def folder_bytes(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file()) if path.exists() else 0


def tracked_bytes() -> int:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.split(b"\0")
    return sum((REPO / name.decode()).stat().st_size for name in listed if name and (REPO / name.decode()).is_file())


def fake_wheel(folder: Path) -> Path:
    """A one-module wheel: the dry run installs it through the same pip command as the real ones."""
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "lease_probe-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("lease_probe.py", "PROBE = 'installed from a carried wheel'\n")
        archive.writestr("lease_probe-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: lease-probe\nVersion: 0.1\n")
        archive.writestr("lease_probe-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: gpu_lease\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr("lease_probe-0.1.dist-info/RECORD", "")
    return path


def download_wheels(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [flag for name in WHEEL_PLATFORMS for flag in ("--platform", name)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                    "--implementation", "cp", *platforms, "-d", str(folder), *WHEELS], check=True)


def prepare(args) -> dict:
    """Build the carried folders; return (and print) what will travel."""
    from diffclust.data import scan_images
    from diffclust.pretrain.caption_embeddings import write_caption_embeddings

    from build_mini_corpus import build, unpack

    size = sizes(args.dry_run)
    carry, wheels = args.carry, args.wheels
    carry.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        fake_wheel(wheels)
    elif not any(wheels.glob("*.whl")) or args.refresh_wheels:
        download_wheels(wheels)

    def pack_corpus(quality: int) -> None:
        shutil.rmtree(carry / "corpus", ignore_errors=True)  # nothing of an earlier pack travels
        print(build(args.data, carry / "corpus", quality=quality, pack=True, per_source=size["per_source"]) + f" (JPEG quality {quality})",
              flush=True)

    pack_corpus(CORPUS_QUALITIES[0])
    with tempfile.TemporaryDirectory() as temporary:
        unpack(carry / "corpus", Path(temporary))
        table = write_caption_embeddings(scan_images(temporary), "a photo of a {class_name}", carry / "captions", show_progress=False)
    print(f"{len(table.captions)} caption embeddings -> {carry / 'captions'}", flush=True)
    if (carry / "sd15-config").exists():
        shutil.rmtree(carry / "sd15-config")
    if args.dry_run:  # the tiny-random model stands in for SD-1.5's configs (same layout, toy sizes)
        from diffclust.backbones.tiny_random import ensure_tiny_random

        shutil.copytree(ensure_tiny_random(), carry / "sd15-config")
    else:
        shutil.copytree(args.sd15_config, carry / "sd15-config")
    return fit_travel(lambda: {"checkout": tracked_bytes(), carry.name: folder_bytes(carry), wheels.name: folder_bytes(wheels)},
                      pack_corpus)


def fit_travel(measure, pack_corpus, limit_mib: float = TRAVEL_LIMIT_MIB) -> dict:
    """What travels, in MiB, brought under the limit by packing the corpus at each lower JPEG
    quality in turn (the checkout grows as the project does; the corpus is the part that can
    give); a clear refusal when even the lowest does not fit."""
    for lower in (*CORPUS_QUALITIES[1:], None):
        travel = measure()
        mib = {key: round(value / 2**20, 1) for key, value in travel.items()}
        mib["total"] = round(sum(travel.values()) / 2**20, 1)
        print("What travels: " + " + ".join(f"{key} {value} MiB" for key, value in mib.items() if key != "total")
              + f" = {mib['total']} MiB (limit {limit_mib} MiB of the tool's 64)", flush=True)
        if sum(travel.values()) <= limit_mib * 2**20:
            return mib
        if lower is not None:
            print(f"Over the limit: packing the corpus again at JPEG quality {lower}.", flush=True)
            pack_corpus(lower)
    raise SystemExit(f"What travels is {mib['total']} MiB, over {limit_mib} MiB even with the corpus at JPEG quality "
                     f"{CORPUS_QUALITIES[-1]}. Untracked files that git does not ignore travel too: `git status --short` lists them "
                     "(delete or ignore what the lease does not need); `git ls-files -z | xargs -0 du -ch | sort -h | tail` shows "
                     "the largest tracked files.")


# ---------------------------------------------------------------------------------- run (the lease)
class Lease:
    """The stages, each in a process of its own under a time guard, and their results."""

    def __init__(self, args):
        self.args = args
        self.size = sizes(args.dry_run)
        self.limit = args.limit or self.size["limit"]
        self.started = time.monotonic()
        self.out = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.work or tempfile.mkdtemp(prefix="lease-"))
        self.site = self.work / "site"
        self.results: dict = {"dry_run": args.dry_run, "limit_s": self.limit, "stages": {}}

    def left(self) -> float:
        return self.limit - (time.monotonic() - self.started)

    def environment(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.site), str(REPO / "src"), str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["DIFFCLUST_HOME"] = str(self.work / "home")
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_WAIT_POLICY="PASSIVE")
        return env

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.monotonic() - self.started, 1)
        (self.out / "lease.json").write_text(json.dumps(self.results, indent=2, default=str))

    def stage(self, name: str, guard: float) -> dict:
        """Run `gpu_lease.py stage NAME` with at most `guard` seconds (and never past the limit)."""
        guard = max(1.0, min(guard, self.left() - 2))
        result_file = self.work / f"{name}.json"
        result_file.unlink(missing_ok=True)
        command = [sys.executable, __file__, "stage", name, "--work", str(self.work), "--carry", str(self.args.carry),
                   "--wheels", str(self.args.wheels), "--out", str(self.out), "--deadline", str(time.time() + guard)]
        if self.args.dry_run:
            command.append("--dry-run")
        print(f"== {name} (guard {guard:.0f} s, {self.left():.0f} s left)", flush=True)
        began = time.monotonic()
        process = subprocess.Popen(command, env=self.environment(), start_new_session=True)
        try:
            code = process.wait(timeout=guard)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the stage and every process it started
            process.wait()
            code = "timeout"
        result = json.loads(result_file.read_text()) if result_file.is_file() else {}
        result.update(exit=code, seconds=round(time.monotonic() - began, 1))
        result["ok"] = code == 0 and not result.get("failed")
        self.results["stages"][name] = result
        self.save()
        print(f"== {name}: {'ok' if result['ok'] else 'FAILED'} in {result['seconds']} s", flush=True)
        return result

    def run(self) -> dict:
        self.stage("setup", GUARDS["setup"][self.args.dry_run])
        self.stage("cuda", GUARDS["cuda"][self.args.dry_run])
        self.stage("sd15", GUARDS["sd15"][self.args.dry_run])
        self.stage("mini", self.left() - 3)
        summary = {name: ("ok" if result["ok"] else "FAILED") for name, result in self.results["stages"].items()}
        self.results["summary"] = summary
        self.save()
        print(json.dumps(summary), flush=True)
        return self.results


# ---------------------------------------------------------------------------------- stages (one process each)
def write_result(args, name: str, result: dict) -> None:
    (args.work / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))


def stage_setup(args, size: dict) -> dict:
    from build_mini_corpus import pack_quality, unpack

    site = args.work / "site"
    wheels = sorted(str(path) for path in args.wheels.glob("*.whl"))
    result = {"wheels": [Path(w).name for w in wheels]}
    if wheels:
        installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                                    "--no-cache-dir", "--upgrade", "--target", str(site), *wheels], capture_output=True, text=True)
        result["pip"] = "ok" if installed.returncode == 0 else installed.stderr.strip().splitlines()[-3:]
    smi = shutil.which("nvidia-smi")
    if smi:
        query = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
                               capture_output=True, text=True)
        result["nvidia_smi"] = query.stdout.strip()
    probe = subprocess.run([sys.executable, "-c", VERSIONS], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])})
    result["versions"] = json.loads(probe.stdout) if probe.returncode == 0 else {"error": probe.stderr.strip().splitlines()[-3:]}
    result["images"] = unpack(args.carry / "corpus", args.work / "corpus")
    result["corpus_jpeg_quality"] = pack_quality(args.carry / "corpus")  # what `mini` trains on: prepare may have lowered it
    result["failed"] = result.get("pip", "ok") != "ok" or "error" in result["versions"]
    return result


#: the versions in the lease's environment, read from the packages' metadata (importing diffusers
#: and transformers here would cost the seconds the cuda stage spends on it again)
VERSIONS = """
import json, platform, torch, diffclust
from importlib.metadata import version
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "accelerate": version("accelerate"),
        "transformers": version("transformers"), "diffusers": version("diffusers"), "umap": version("umap-learn"),
        "diffclust": diffclust.__version__}
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count)
print(json.dumps(info))
"""


def flat_name(corpus_file: str) -> str:
    """'source/name.jpg' -> 'source_name.jpg': two sources may use the same file names."""
    return corpus_file.replace("/", "_")


def small_data(args, size: dict) -> Path:
    """The first images of the unpacked corpus as a labelled folder (fits need no ../shared)."""
    corpus = args.work / "corpus"
    folder = args.work / "small"
    if not (folder / "labels.csv").is_file():
        with open(corpus / "labels.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        by_label: dict[str, list[dict]] = {}
        for row in rows:
            by_label.setdefault(row["label"], []).append(row)
        chosen = [row for group in list(by_label.values())[: size["k"]] for row in group][: size["images"]]
        (folder / "images").mkdir(parents=True, exist_ok=True)
        for row in chosen:
            shutil.copy(corpus / "images" / row["file"], folder / "images" / flat_name(row["file"]))
        with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["file", "label", "class_name"])
            writer.writeheader()
            writer.writerows({"file": flat_name(r["file"]), "label": r["label"], "class_name": r["class_name"]} for r in chosen)
    return folder


LOSS_COLUMNS = ("loss", "mse", "cross_entropy")  # DiFiC and DiEC name theirs *_loss; CLUDI embedding_mse and cross_entropy*


def check_run(folder: Path, expected_rows: int) -> dict:
    """Finite losses in metrics.csv and one assignment row per input."""
    with open(folder / "assignments.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    losses = []
    if (folder / "metrics.csv").is_file():
        with open(folder / "metrics.csv", newline="", encoding="utf-8") as handle:
            for record in csv.DictReader(handle):
                losses += [float(value) for key, value in record.items() if any(word in key for word in LOSS_COLUMNS) and value not in ("", None)]
    finite = all(math.isfinite(value) for value in losses)
    result = {"rows": len(rows), "expected_rows": expected_rows, "losses": len(losses), "finite_losses": finite}
    result["ok"] = finite and len(rows) == expected_rows
    return result


def stage_cuda(args, size: dict) -> dict:
    import numpy as np

    from diffclust.cli import main

    data = small_data(args, size)
    count = sum(1 for _ in (data / "images").iterdir())
    common = ["--device", size["device"], "--quiet", "--epochs", str(size["epochs"]), "--batch-size", str(size["batch"])]
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (size["k"], 32))
    features = np.concatenate([centre + rng.normal(0, 1, (40, 32)) for centre in centres]).astype(np.float32)
    np.save(args.work / "blobs.npy", features)
    runs = {
        "difc": (["fit", str(data), "--k", str(size["k"]), "--backbone", "tiny-random", *common], count),
        "diec": (["fit", str(data), "--method", "diec", "--k", str(size["k"]), "--backbone", "tiny-random", "--search-subset", "64", *common,
                  *size["diec"]], count),
        "cludi": (["fit", "--method", "cludi", "--features", str(args.work / "blobs.npy"), "--k", str(size["k"]), *common, *size["cludi"]], len(features)),
    }
    result: dict = {}
    for name, (argv, expected) in runs.items():
        result[name] = run_cli(main, [*argv, "--out", str(args.work / name)], lambda: check_run(args.work / name, expected))
    predicted = args.work / "predict.csv"
    result["predict"] = run_cli(main, ["predict", str(args.work / "difc"), str(data), "--out", str(predicted), "--device", size["device"], "--quiet"],
                                lambda: {"rows": sum(1 for _ in open(predicted)) - 1, "ok": sum(1 for _ in open(predicted)) - 1 == count})
    if args.deadline - time.time() > COMPILE_MIN_LEFT or args.dry_run:
        result["difc_compiled"] = run_cli(main, ["fit", str(data), "--k", str(size["k"]), "--backbone", "tiny-random", "--compile-unet",
                                                 *common, "--out", str(args.work / "difc_compiled")],
                                          lambda: check_run(args.work / "difc_compiled", count)) \
            if not args.dry_run else {"skipped": "dry run (slow test covers compile)"}
    else:
        result["difc_compiled"] = {"skipped": f"{args.deadline - time.time():.0f} s left"}
    result["failed"] = not all(part.get("ok") for key, part in result.items() if isinstance(part, dict) and "skipped" not in part)
    return result


def run_cli(main, argv: list[str], check) -> dict:
    """One CLI command in this process: its exit code, seconds and check, or its error."""
    began = time.perf_counter()
    try:
        code = main(argv)
        outcome = {"exit": code, **(check() if code == 0 else {"ok": False})}
    except BaseException as error:  # noqa: BLE001 - a stage records every failure and goes on
        outcome = {"ok": False, "error": f"{type(error).__name__}: {error}"[:500]}
    outcome["seconds"] = round(time.perf_counter() - began, 1)
    print(f"   {argv[0]} {' '.join(a for a in argv[1:4] if not a.startswith('/'))}: {outcome}", flush=True)
    return outcome


def stage_sd15(args, size: dict) -> dict:
    out = args.work / "difc_step"
    command = [sys.executable, str(REPO / "benchmarks" / "difc_step.py"), "--config", str(args.carry / "sd15-config"), "--device", size["device"],
               "--only", "naive,cached,all", "--rounds", "1", *size["sd15"], "--out", str(out)]
    process = subprocess.run(command, timeout=max(1, args.deadline - time.time() - 2))
    report_file = out / f"{size['device']}.json"
    result = json.loads(report_file.read_text()) if report_file.is_file() else {}
    if (out / f"{size['device']}.md").is_file():
        shutil.copy(out / f"{size['device']}.md", args.out / "sd15-step.md")
    result["failed"] = process.returncode != 0 or not result.get("results") or any("error" in r for r in result["results"])
    return result


def stage_mini(args, size: dict) -> dict:
    left = args.deadline - time.time()
    budget = max(5.0, min(left - size["mini_reserve"], size["mini_budget"] or math.inf))
    model = args.work / "mini"
    command = [sys.executable, "-m", "diffclust.cli", "pretrain", str(args.work / "corpus"), "--out", str(model),
               "--caption-embeddings", str(args.carry / "captions"), "--resolution", "32", "--time-budget", f"{budget:.0f}",
               "--checkpoint-every", "1000000", "--export-dtype", "fp16", "--device", size["device"], "--quiet", *size["mini"]]
    print("   " + " ".join(command[3:]), flush=True)
    process = subprocess.run(command, timeout=max(1, left - 15))
    record_file = model / "training" / "record.json"
    result = json.loads(record_file.read_text()) if record_file.is_file() else {}
    result.update(time_budget_s=round(budget), pretrain_exit=process.returncode)
    grids = sorted((model / "samples").glob("*.png"))
    if grids:
        shutil.copy(grids[-1], args.out / "mini-samples.png")
    if (model / "unet").is_dir():
        result["parts"] = pack_model(model, args.out)
    result["failed"] = process.returncode != 0 or not result.get("parts")
    return result


def pack_model(model: Path, out: Path) -> list[str]:
    """The model folder (no optimiser checkpoint) as mini.tar.NN parts of at most 15 MiB."""
    archive = model.parent / "mini.tar"
    with tarfile.open(archive, "w") as tar:
        for path in sorted(model.rglob("*")):
            if path.is_file() and path.name != "checkpoint.pt":
                tar.add(path, arcname=str(Path("mini") / path.relative_to(model)))
    parts = []
    with open(archive, "rb") as handle:
        while chunk := handle.read(PART_BYTES):
            name = f"mini.tar.{len(parts):02d}"
            (out / name).write_bytes(chunk)
            parts.append(name)
    if len(parts) > 4:
        raise RuntimeError(f"the model packs into {len(parts)} parts: more than the lease's 8 files allow")
    return parts


def collect(args) -> None:
    """Join the mini.tar parts a lease returned and unpack the model folder into --into."""
    parts = sorted(args.results.glob("mini.tar.*"))
    if not parts:
        raise SystemExit(f"No mini.tar.NN parts in {args.results}.")
    with tempfile.TemporaryDirectory() as temporary:
        joined = Path(temporary) / "mini.tar"
        with open(joined, "wb") as handle:
            for part in parts:
                handle.write(part.read_bytes())
        with tarfile.open(joined) as tar:
            tar.extractall(temporary, filter="data")  # refuses absolute paths and links out of the folder
        if args.into.exists():
            raise SystemExit(f"{args.into} exists: choose another --into.")
        shutil.copytree(Path(temporary) / "mini", args.into)
    print(f"Unpacked {len(parts)} part(s) into {args.into}.")


STAGES = {"setup": stage_setup, "cuda": stage_cuda, "sd15": stage_sd15, "mini": stage_mini}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("prepare", "run", "stage"):
        command = commands.add_parser(name)
        command.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU, the same code paths")
        command.add_argument("--carry", type=Path, default=REPO / ".lease")
        command.add_argument("--wheels", type=Path, default=REPO / ".whl")
        if name == "prepare":
            command.add_argument("--data", type=Path, default=SHARED / "data")
            command.add_argument("--sd15-config", type=Path, default=SHARED / "sd15-config")
            command.add_argument("--refresh-wheels", action="store_true")
        else:
            command.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "lease-out")))
            command.add_argument("--work", type=Path, default=None)
        if name == "run":
            command.add_argument("--limit", type=float, default=None, help="seconds of wall time for the whole run (530; dry run 240)")
        if name == "stage":
            command.add_argument("name", choices=list(STAGES))
            command.add_argument("--deadline", type=float, required=True)
    collect_parser = commands.add_parser("collect")
    collect_parser.add_argument("results", type=Path)
    collect_parser.add_argument("--into", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args)
    elif args.command == "run":
        Lease(args).run()
    elif args.command == "collect":
        collect(args)
    else:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            result = STAGES[args.name](args, sizes(args.dry_run))
        except BaseException as error:  # noqa: BLE001 - recorded; the parent goes on with the next stage
            import traceback

            traceback.print_exc()
            result = {"failed": True, "error": f"{type(error).__name__}: {error}"[:1000]}
        write_result(args, args.name, result)
        sys.exit(1 if result.get("failed") else 0)


if __name__ == "__main__":
    main()
