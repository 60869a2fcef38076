"""What a search hands to people: search.csv, search.json and a plot of score against timestep."""

from __future__ import annotations

from pathlib import Path

from diffclust.engine.checkpoint import atomic_write, atomic_write_text
from diffclust.methods.diec.search import SearchResult
from diffclust.outputs import csv_text

SEARCH_JSON = "search.json"
SEARCH_CSV = "search.csv"
SEARCH_PNG = "search.png"


def write_search_plot(path: str | Path, result: SearchResult) -> Path:
    """Score against timestep, one line per evaluated layer, on a true t axis; a star marks the pick.

    Only what was evaluated is drawn: a two-stage search shows its one searched layer as a
    curve (and, with a probe, every layer's point at the probe timestep), a grid every layer.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result.curves()
    figure, axes = plt.subplots(figsize=(7.5, 4.2))
    for layer, points in curves.items():
        timesteps, scores = zip(*points)
        axes.plot(timesteps, scores, marker="o", markersize=3.5, linewidth=1.6 if layer == result.layer else 0.9,
                  label=layer, zorder=3 if layer == result.layer else 2)
    axes.plot([result.timestep], [result.score], marker="*", color="red", markersize=16, linestyle="none",
              label=f"pick: {result.layer} @ t={result.timestep}", zorder=4)
    axes.set_xlabel("timestep t")
    axes.set_ylabel(result.score_name)
    axes.grid(alpha=0.3)
    axes.set_title(f"{result.strategy} search: {result.n_evaluations} evaluations over {result.feature_passes} feature passes",
                   fontsize=9)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    figure.tight_layout()
    atomic_write(path, lambda temp: figure.savefig(temp, format="png", dpi=120))
    plt.close(figure)
    return Path(path)


def write_search_outputs(folder: str | Path, result: SearchResult) -> dict[str, Path]:
    """search.json (to reuse the pick), search.csv (every evaluation) and search.png."""
    folder = Path(folder)
    rows = [(item.layer, item.timestep, f"{item.score:.6g}", item.stage,
             int(item.layer == result.layer and item.timestep == result.timestep)) for item in result.evaluations]
    return {
        "json": atomic_write_text(folder / SEARCH_JSON, result.to_json() + "\n"),
        "csv": atomic_write_text(folder / SEARCH_CSV, csv_text(("layer", "timestep", "score", "stage", "chosen"), rows)),
        "png": write_search_plot(folder / SEARCH_PNG, result),
    }


def read_search(folder: str | Path) -> SearchResult | None:
    path = Path(folder) / SEARCH_JSON
    return SearchResult.from_json(path.read_text()) if path.is_file() else None
