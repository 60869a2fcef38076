"""DiFiC's training step at full SD-1.5 size: naive against optimised, side by side in one run.

The SD-1.5 architecture (UNet, CLIP text encoder, VAE, tokenizer) is built from
../shared/sd15-config with random weights, saved once, and every configuration loads it in a
process of its own, so that each one's peak memory is its own. The step is DiFiCTrainer's:
f(z) -> S* -> text encoder -> UNet -> masked loss, backward to S*, optimiser step.

Configurations: "naive" (fp32 weights, explicit attention, no checkpointing, the constants -
VAE latent, z, attention mask - recomputed for every batch); "cached" (the constants read from
the cache, as diffclust does); each other option on top of "cached", one at a time; and "all"
(every option). It prints images/s, peak memory (GPU: allocated; CPU: resident set) and the
training step's model TFLOP/s (counted once with torch.utils.flop_counter) as a share of the
device's dense bf16 peak, then the time to find 10 neighbours of 100,000 proxy words.

    python benchmarks/difc_step.py --out benchmarks/results/difc_step            # CPU: batch 1, 2
    python benchmarks/difc_step.py --batch-sizes 8,16,32 --compile --out ...     # a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from peak_memory import peak_resident_bytes  # noqa: E402
from provenance import save_results  # noqa: E402

HERE = Path(__file__).resolve().parent
SD15_CONFIG = HERE.parent.parent / "shared" / "sd15-config"

#: dense bf16 tensor-core peaks from the vendors' data sheets (TFLOP/s), by device-name fragment
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "A10": 125.0,
                    "L4": 121.0, "RTX 4090": 165.2, "RTX 3090": 71.0, "V100": 125.0}
OFF = dict(weights_dtype="fp32", gradient_checkpointing=False, offload_vae=False, channels_last=False, fused_attention=False,
           compile_unet=False, tf32=False)
ALL = dict(weights_dtype="bf16", gradient_checkpointing=True, offload_vae=True, channels_last=True, fused_attention=True, tf32=True)


def configurations(device: str, with_compile: bool) -> dict[str, dict]:
    """name -> (cached constants?, efficiency settings)."""
    configs = {"naive": {"cached": False, "efficiency": OFF}, "cached": {"cached": True, "efficiency": OFF}}
    options = ["weights_dtype", "gradient_checkpointing", "offload_vae", "channels_last", "fused_attention"]
    if device == "cuda":
        options += ["tf32"] + (["compile_unet"] if with_compile else [])
    for option in options:
        value = ALL.get(option, True)
        configs[f"cached + {option}={value}"] = {"cached": True, "efficiency": {**OFF, option: value}}
    configs["all"] = {"cached": True, "efficiency": {**OFF, **ALL, "compile_unet": with_compile and device == "cuda"}}
    return configs


# ---------------------------------------------------------------------------------- the model
def build_sd15(folder: Path, config: Path) -> Path:
    """SD-1.5's architecture with random weights, saved in the diffusers layout."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet")).save_pretrained(folder / "unet")
    AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae")).save_pretrained(folder / "vae")
    CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder")).save_pretrained(folder / "text_encoder")
    CLIPTokenizer.from_pretrained(config / "tokenizer").save_pretrained(folder / "tokenizer")
    DDPMScheduler.from_config(DDPMScheduler.load_config(config / "scheduler")).save_pretrained(folder / "scheduler")
    return folder


# ---------------------------------------------------------------------------------- memory
def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:  # Linux: writing 5 to clear_refs resets the resident-set high-water mark (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    return peak_resident_bytes()


# ---------------------------------------------------------------------------------- one configuration
class RandomImages:
    """Pixels in [-1, 1] for the recomputing store (the step's cost does not depend on them)."""

    def __init__(self, count: int, resolution: int):
        self.count, self.resolution = count, resolution

    def __getitem__(self, index: int):
        generator = torch.Generator().manual_seed(index)
        return index, torch.rand(3, self.resolution, self.resolution, generator=generator) * 2 - 1


def run_child(spec: dict) -> dict:
    """Time one configuration at one batch size in this process."""
    from difc_throughput import RecomputingStore

    from diffclust.backbones.efficiency import TrainingEfficiency
    from diffclust.backbones.stable_diffusion import StableDiffusionBackbone
    from diffclust.engine.runtime import make_accelerator
    from diffclust.methods.difc import DiFiC
    from diffclust.methods.difc.constants import CACHE_DTYPES, ConstantComputer, ConstantSettings, ConstantStore
    from diffclust.methods.difc.network import DiFiCNetwork
    from diffclust.methods.difc.training import DiFiCTrainer

    accelerator = make_accelerator(spec["device"])
    device = accelerator.device
    backbone = StableDiffusionBackbone.from_pretrained(spec["model"], device=device)
    batch, resolution = spec["batch_size"], spec["resolution"]
    params = DiFiC(10, batch_size=batch, progress=False, epochs=1, warmup_epochs=1, resolution=resolution).get_params()
    settings = ConstantSettings(resolution, params["feature_layer"], params["feature_timestep"], params["mask_timestep"],
                                params["mask_prompt"], True, 0)
    computer = ConstantComputer(backbone, settings, torch.randn(backbone.latent_shape(resolution), generator=torch.Generator().manual_seed(0)))
    rows = batch * (spec["steps"] + spec["warmup"])
    probe = computer(RandomImages(1, resolution)[0][1][None])  # shapes (z's channels: 640 at SD-1.5's block b)
    if spec["cached"]:  # what the cache holds, in its own dtypes (values do not change the cost)
        rng = np.random.default_rng(0)
        store = ConstantStore({name: rng.standard_normal((rows, *probe[name].shape[1:])).astype(CACHE_DTYPES[name]) if name != "masks"
                               else np.ones((rows, *probe[name].shape[1:]), CACHE_DTYPES[name]) for name in probe})
    else:
        store = RecomputingStore(computer, RandomImages(rows, resolution), rows)
    efficiency = TrainingEfficiency(**spec["efficiency"]).resolved(device)
    backbone.prepare_training(efficiency)
    torch.manual_seed(0)
    network = DiFiCNetwork(probe["features"].shape[1], backbone.token_dim, 10, with_head=False).to(device)
    trainer = DiFiCTrainer(params, backbone, store, network, accelerator, None, None)
    generator = torch.Generator().manual_seed(0)

    def step(indices):
        parts = trainer._step(trainer.network, indices, None, generator)
        parts["loss"].backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)

    order = torch.arange(rows).split(batch)
    for indices in order[: spec["warmup"]]:
        step(indices)
    reset_peak(device)
    started = time.perf_counter()
    for indices in order[spec["warmup"]:]:
        step(indices)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / spec["steps"]
    result = {"seconds_per_step": seconds, "images_per_second": batch / seconds, "peak_bytes": peak_bytes(device),
              "device_name": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()}
    if spec.get("count_flops"):
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            step(order[0])
        result["step_flops"] = counter.get_total_flops()
    return result


# ---------------------------------------------------------------------------------- the run
def run_configuration(spec: dict) -> dict:
    """One configuration in a fresh process: its result, or the last line of its error."""
    process = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    line = next((row for row in process.stdout.splitlines() if row.startswith("RESULT ")), None)
    if line is None:
        return {"error": (process.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(line[len("RESULT "):])


def fastest(found: list[dict]) -> dict:
    """Over rounds: the fastest step (the least disturbed by other load) and the highest peak."""
    good = [r for r in found if "error" not in r]
    if not good:
        return found[-1]
    best = dict(min(good, key=lambda r: r["seconds_per_step"]))
    best.update(peak_bytes=max(r["peak_bytes"] for r in good), rounds=len(good),
                **{key: r[key] for r in good for key in ("step_flops",) if key in r})
    return best


def neighbour_seconds(points: int, dim: int, device: str) -> float:
    from diffclust.cluster.neighbours import nearest_neighbours

    words = torch.randn(points, dim, generator=torch.Generator().manual_seed(0)).to(device)
    started = time.perf_counter()
    nearest_neighbours(words, 10)
    return time.perf_counter() - started


def peak_tflops(device_name: str, given: float | None) -> float | None:
    if given is not None:
        return given
    return next((value for fragment, value in PEAK_BF16_TFLOPS.items() if fragment in device_name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=SD15_CONFIG, help="folder with SD-1.5's config files")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated (default: 1,2 on CPU; 8,16,32 on a GPU)")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per configuration (default: 2 on CPU, 10 on a GPU)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="passes over every configuration; each keeps its fastest")
    parser.add_argument("--only", default=None, help="comma-separated configuration names to run (default: all)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile of the UNet (GPU)")
    parser.add_argument("--neighbour-points", type=int, default=100_000)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, where the table does not know it")
    parser.add_argument("--model", type=Path, default=None, help="a saved random SD-1.5 folder to reuse (else built in a temp folder)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_child(json.loads(args.child))), flush=True)
        return

    gpu = args.device == "cuda"
    batch_sizes = [int(b) for b in (args.batch_sizes or ("8,16,32" if gpu else "1,2")).split(",")]
    steps = args.steps or (10 if gpu else 2)
    configs = configurations(args.device, args.compile)
    if args.only:
        configs = {name: configs[name] for name in args.only.split(",")}
    with tempfile.TemporaryDirectory() as temporary:
        model = args.model or Path(temporary) / "sd15-random"
        if not (model / "unet").is_dir():
            started = time.perf_counter()
            build_sd15(model, args.config)
            print(f"built SD-1.5 with random weights in {time.perf_counter() - started:.0f} s", flush=True)
        runs: dict[tuple[int, str], list[dict]] = {}
        for round_number in range(args.rounds):  # rounds interleave the configurations, so load changes hit them all
            for batch in batch_sizes:
                for name, config in configs.items():
                    count = name == "cached" and round_number == 0 and not any("step_flops" in r for found in runs.values() for r in found)
                    spec = {"model": str(model), "device": args.device, "batch_size": batch, "resolution": args.resolution, "steps": steps,
                            "warmup": args.warmup, "count_flops": count, **config}
                    result = run_configuration(spec)
                    runs.setdefault((batch, name), []).append(result)
                    shown = f"failed: {result['error']}" if "error" in result else (
                        f"{result['images_per_second']:8.3f} img/s  {result['seconds_per_step']:8.2f} s/step  "
                        f"peak {result['peak_bytes'] / 2**30:6.2f} GiB")
                    print(f"round {round_number + 1}  batch {batch:>3}  {name:<40} {shown}", flush=True)
                    write_report(summarise(runs, args, steps), args.out)
    report = summarise(runs, args, steps)
    seconds = neighbour_seconds(args.neighbour_points, 768, args.device)
    print(f"10 nearest neighbours of {args.neighbour_points} proxy words (768-d) on {args.device}: {seconds:.1f} s")
    report["neighbours"] = {"points": args.neighbour_points, "seconds": seconds}
    lines = table(report)
    print("\n".join(lines))
    write_report(report, args.out)


def summarise(runs: dict[tuple[int, str], list[dict]], args, steps: int) -> dict:
    """The report so far. The model FLOPs of a step are counted once, on the cached
    configuration, and scale with the batch: each configuration's TFLOP/s is those FLOPs over
    its own step time."""
    results = [{"batch_size": batch, "configuration": name, **fastest(found)} for (batch, name), found in runs.items()]
    device_name = next((r["device_name"] for r in results if "device_name" in r), args.device)
    peak = peak_tflops(device_name, args.peak_tflops)
    per_image = next((r["step_flops"] / r["batch_size"] for r in results if "step_flops" in r), None)
    for r in results:
        if "error" not in r and per_image is not None:
            r["model_tflops"] = per_image * r["batch_size"] / r["seconds_per_step"] / 1e12
            r["share_of_peak"] = r["model_tflops"] / peak if peak else None
    return {"device": args.device, "device_name": device_name, "peak_bf16_tflops": peak, "resolution": args.resolution,
            "steps": steps, "warmup": args.warmup, "rounds": args.rounds, "threads": torch.get_num_threads(), "results": results,
            "neighbours": None}


def write_report(report: dict, out: Path | None) -> None:
    """Written after every configuration, so a run stopped by a time limit keeps what it measured."""
    if out:
        out.mkdir(parents=True, exist_ok=True)
        save_results(out, report['device'], report)
        save_results(out, report['device'], None, "\n".join(table(report)) + "\n")


def table(report: dict) -> list[str]:
    lines = [f"# DiFiC training step, SD-1.5 architecture at {report['resolution']} px, on {report['device']} ({report['device_name']})", "",
             f"{report['steps']} timed steps after {report['warmup']} warm-up steps per configuration, each in its own process, "
             f"in {report['rounds']} interleaved "
             f"rounds (the fastest kept); {report['threads']} threads. "
             f"Peak memory: {'allocated on the GPU' if report['device'] == 'cuda' else 'resident set of the process (weights included)'}. "
             "TFLOP/s: the cached step's model FLOPs (torch.utils.flop_counter, counted at one batch size and scaled) over each configuration's step time"
             + (f"; peak {report['peak_bf16_tflops']} TFLOP/s dense bf16." if report["peak_bf16_tflops"] else "; no peak known for this device."), "",
             "| batch | configuration | img/s | s/step | x naive | peak GiB | TFLOP/s | share of peak |", "|---|---|---|---|---|---|---|---|"]
    naive = {r["batch_size"]: r["images_per_second"] for r in report["results"] if r["configuration"] == "naive" and "error" not in r}
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['batch_size']} | {r['configuration']} | failed: {r['error']} | | | | | |")
            continue
        ratio = f"{r['images_per_second'] / naive[r['batch_size']]:.2f}" if r["batch_size"] in naive else ""
        tflops = f"{r['model_tflops']:.3f}" if "model_tflops" in r else ""
        share = f"{r['share_of_peak']:.1%}" if r.get("share_of_peak") else ""
        lines.append(f"| {r['batch_size']} | {r['configuration']} | {r['images_per_second']:.3f} | {r['seconds_per_step']:.2f} | {ratio} | "
                     f"{r['peak_bytes'] / 2**30:.2f} | {tflops} | {share} |")
    if report.get("neighbours"):
        lines += ["", f"Neighbours: 10 nearest of {report['neighbours']['points']} proxy words (768-d, exact, chunked) in "
                  f"{report['neighbours']['seconds']:.1f} s on {report['device']}."]
    return lines


if __name__ == "__main__":
    main()
