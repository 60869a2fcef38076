"""What a search hands to people: search.csv, search.json and a layer x timestep heatmap."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffclust.engine.checkpoint import atomic_write, atomic_write_text
from diffclust.methods.diec.search import SearchResult
from diffclust.outputs import csv_text

SEARCH_JSON = "search.json"
SEARCH_CSV = "search.csv"
SEARCH_PNG = "search.png"


def write_heatmap(path: str | Path, result: SearchResult) -> Path:
    """Scores as a layers x timesteps heatmap; blank cells were not evaluated; a star marks the pick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers, timesteps, grid = result.matrix()
    figure, axes = plt.subplots(figsize=(max(5.0, 0.45 * len(timesteps) + 3), max(3.0, 0.38 * len(layers) + 1.5)))
    image = axes.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="viridis", interpolation="nearest")
    axes.set_xticks(range(len(timesteps)), [str(t) for t in timesteps], rotation=90 if len(timesteps) > 12 else 0, fontsize=7)
    axes.set_yticks(range(len(layers)), layers, fontsize=7)
    axes.set_xlabel("timestep t")
    axes.set_ylabel("UNet layer")
    axes.plot(timesteps.index(result.timestep), layers.index(result.layer), marker="*", color="red", markersize=14)
    axes.set_title(f"{result.strategy} search, {result.score_name}: {result.n_evaluations} evaluations; "
                   f"pick {result.layer} @ t={result.timestep}", fontsize=8)
    figure.colorbar(image, ax=axes, label=result.score_name)
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
        "png": write_heatmap(folder / SEARCH_PNG, result),
    }


def read_search(folder: str | Path) -> SearchResult | None:
    path = Path(folder) / SEARCH_JSON
    return SearchResult.from_json(path.read_text()) if path.is_file() else None
