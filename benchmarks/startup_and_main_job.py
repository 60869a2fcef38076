"""Start-up and the README's main job, timed as a new user meets them.

Prints (and with --out saves) the time of `import diffclust`, of the full import with the model
libraries, of `diffclust --help` and of an argument error, then the README's main job
(`diffclust fit usps --method diec --k 10 --backbone usps-ddpm`) with its per-stage split from
run.json and its accuracy: on an idle machine, and, side by side in the same run, while another
process keeps one core busy. `--compare-default-policy` adds the main job under that load
with libgomp's default wait policy (what diffclust ran with before it set PASSIVE itself).

    python benchmarks/startup_and_main_job.py --out benchmarks/results/startup_main_job
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from provenance import save_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = "usps"  # the built-in digits: the quick start as a user runs it


def user_environment(**changes: str) -> dict[str, str]:
    """The caller's environment without OMP_WAIT_POLICY (diffclust must set it itself), plus `changes`."""
    environment = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    environment.update(changes)
    return environment


def timed(command: list[str], environment: dict[str, str], expect: int = 0) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    seconds = time.perf_counter() - started
    if result.returncode != expect:
        raise SystemExit(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-2000:]}")
    return seconds


def best_of(repeats: int, command: list[str], environment: dict[str, str], expect: int = 0) -> float:
    return min(timed(command, environment, expect) for _ in range(repeats))


@contextmanager
def busy_core(enabled: bool):
    """Another process spinning on one core for the duration (the shared-machine case)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if enabled else None
    try:
        yield
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def main_job(data: Path, environment: dict[str, str], load: bool) -> dict:
    """The README's main job in a fresh run folder: wall time, and the stages from run.json."""
    out = Path(tempfile.mkdtemp(prefix="diffclust-main-job-")) / "run"
    command = [sys.executable, "-m", "diffclust.cli", "fit", str(data), "--method", "diec", "--k", "10", "--backbone", "usps-ddpm",
               "--quiet", "--out", str(out)]
    with busy_core(load):
        wall = timed(command, environment)
    summary = json.loads((out / "run.json").read_text())
    with open(out / "metrics.csv", newline="") as handle:
        last = list(csv.DictReader(handle))[-1]
    shutil.rmtree(out.parent, ignore_errors=True)
    stages = {"start-up (imports, arguments)": round(wall - summary["wall_seconds"], 2), **summary["stages"]}
    return {"wall_seconds": round(wall, 2), "stages": stages, "threads": summary["threads"], "acc": float(last.get("acc") or "nan"),
            "omp_wait_policy": summary["omp_wait_policy"] or "(libgomp default)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="a data folder or built-in name (default: the built-in usps)")
    parser.add_argument("--repeats", type=int, default=3, help="start-up timings take the best of this many runs")
    parser.add_argument("--no-load", dest="load", action="store_false", help="skip the main job beside a busy core")
    parser.add_argument("--compare-default-policy", action="store_true",
                        help="also run the main job beside a busy core with libgomp's default wait policy (slow: minutes)")
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json and results.md")
    args = parser.parse_args()
    environment = user_environment()
    console = shutil.which("diffclust")

    rows = {
        "import diffclust": best_of(args.repeats, [sys.executable, "-c", "import diffclust"], environment),
        "import diffclust + model libraries (diffclust.DiFiC)": best_of(
            args.repeats, [sys.executable, "-c", "import diffclust; diffclust.DiFiC"], environment),
        "diffclust --help": best_of(args.repeats, [console or sys.executable, *([] if console else ["-m", "diffclust.cli"]), "--help"],
                                    environment),
        "diffclust fit (argument error)": best_of(args.repeats, [console or sys.executable, *([] if console else ["-m", "diffclust.cli"]),
                                                                 "fit"], environment, expect=2),
    }
    for name, seconds in rows.items():
        print(f"{name:<55} {seconds:6.2f} s")

    jobs = {"idle": main_job(args.data, environment, load=False)}
    if args.load:
        jobs["one other core busy"] = main_job(args.data, environment, load=True)
    if args.compare_default_policy:
        jobs["one other core busy, libgomp default wait policy"] = main_job(args.data, user_environment(OMP_WAIT_POLICY=""), load=True)
    for name, job in jobs.items():
        split = ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in job["stages"].items())
        print(f"main job, {name:<45} {job['wall_seconds']:6.1f} s, ACC {100 * job['acc']:.2f}%   ({split})")

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        results = {"startup_seconds": {name: round(value, 3) for name, value in rows.items()}, "main_job": jobs,
                   "cores": os.cpu_count(), "python": sys.version.split()[0]}
        save_results(args.out, "results", results)
        lines = ["# Start-up and the README main job", "", f"`python benchmarks/startup_and_main_job.py` on {os.cpu_count()} cores "
                 f"(best of {args.repeats} for start-up).", "", "| what | seconds |", "|---|---|"]
        lines += [f"| {name} | {seconds:.2f} |" for name, seconds in rows.items()]
        lines += ["", "| main job | ACC % | wall s | " + " | ".join(next(iter(jobs.values()))["stages"]) + " |",
                  "|---|---|---|" + "---|" * len(next(iter(jobs.values()))["stages"])]
        lines += [f"| {name} ({job['omp_wait_policy']}) | {100 * job['acc']:.2f} | {job['wall_seconds']:.1f} | "
                  + " | ".join(f"{job['stages'].get(stage, 0):.1f}" for stage in next(iter(jobs.values()))["stages"]) + " |"
                  for name, job in jobs.items()]
        save_results(args.out, "results", None, "\n".join(lines) + "\n")
        print(f"Wrote {args.out / 'results.md'}")


if __name__ == "__main__":
    main()
