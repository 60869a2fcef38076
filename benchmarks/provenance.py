"""Stamp every benchmark result with what it was measured on, so that a figure in the docs can be
traced to its commit, package versions, CPU and date, and a later reader knows whether it still
holds. Every benchmark writes its results through `save_results`.

    from provenance import save_results
    save_results(out, "results", payload, markdown_lines)   # out/results.json and out/results.md
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

#: the packages whose versions move results (their distribution names)
PACKAGES = ("diffclust", "torch", "diffusers", "transformers", "accelerate", "numpy", "scipy", "scikit-learn", "umap-learn",
            "pynndescent", "numba")
#: CPU flags that change which kernels run (bf16 matrix units pick the text encoder's dtype)
CPU_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_description() -> dict:
    """The CPU's model name and the flags in CPU_FLAGS it has (Linux: /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), "flags": [flag for flag in CPU_FLAGS if flag in flags]}


def stamp() -> dict:
    """Commit (and whether the tree had uncommitted changes), package versions, CPU, date, Python:
    taken once, when the benchmark started, so that every file it writes carries the same stamp
    of the code that ran, even if the tree changes while it runs."""
    global _STAMP
    if _STAMP is None:
        _STAMP = _take_stamp()
    return _STAMP


_STAMP: dict | None = None


def _take_stamp() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git("rev-parse", "--short=12", "HEAD"),
        "uncommitted_changes": bool(status) if status is not None else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpu": cpu_description(),
        "packages": versions,
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]) if sys.argv and sys.argv[0] else None,
    }


def stamp_line(record: dict) -> str:
    """The stamp as one line of Markdown, for the top of a results file."""
    cpu = record["cpu"]
    flags = ", ".join(cpu["flags"]) or "none of " + "/".join(CPU_FLAGS)
    packages = ", ".join(f"{name} {version}" for name, version in record["packages"].items() if version)
    dirty = " (with uncommitted changes)" if record["uncommitted_changes"] else ""
    return (f"_Measured {record['date']} at commit {record['commit']}{dirty} on {cpu['model']} ({cpu['cores']} cores; flags: {flags}); "
            f"Python {record['python']}; {packages}. Command: `{record['command']}`._")


def _write(path: Path, text: str) -> None:
    """Temp file, then rename: an interrupted benchmark never leaves a half-written result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def save_results(out: Path, name: str, payload=None, markdown: str | list[str] | None = None) -> dict:
    """Write OUT/NAME.json (a dict payload gains a "stamp" key; anything else goes under
    "results" beside it) and OUT/NAME.md (the stamp line, then the markdown); either may be left
    out. Returns the stamp."""
    record = stamp()
    if payload is not None:
        document = {**payload, "stamp": record} if isinstance(payload, dict) else {"stamp": record, "results": payload}
        _write(Path(out) / f"{name}.json", json.dumps(document, indent=2) + "\n")
    if markdown is not None:
        text = markdown if isinstance(markdown, str) else "\n".join(markdown)
        lines = text.rstrip("\n").split("\n")
        at = 1 if lines and lines[0].startswith("# ") else 0  # under the title, if there is one
        if at:  # under the title, one blank line either side
            lines[at:at] = ["", stamp_line(record)] + ([] if at < len(lines) and lines[at] == "" else [""])
        else:
            lines[:0] = [stamp_line(record), ""]
        _write(Path(out) / f"{name}.md", "\n".join(lines) + "\n")
    return record


stamp()  # at import, i.e. when the benchmark starts
