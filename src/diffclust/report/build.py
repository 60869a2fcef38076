"""Build the report of a run folder: read what the run wrote, add thumbnails, a 2-D map, cluster
names and label statistics, and render one offline HTML page beside a folder of images."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffclust import __version__
from diffclust.backbones.names import TINY_RANDOM
from diffclust.cluster.metrics import clustering_scores
from diffclust.data.collection import REPORT_MARKER, scan_images
from diffclust.data.csv_tables import from_spreadsheet_safe
from diffclust.data.names import NAME_ERRORS, some_names, split_inside
from diffclust.encoders.extraction import recorded_images
from diffclust.engine.atomic import claim_output_folder
from diffclust.engine.checkpoint import atomic_write_text, damaged
from diffclust.errors import DiffclustError
from diffclust.outputs import ASSIGNMENTS_NAME, RUN_LABELS_NAME, RUN_SUMMARY_NAME, SKIPPED_NAME, csv_text, read_assignment_rows, read_labels
from diffclust.report.analysis import (
    class_purity,
    cluster_class_table,
    confused_pairs,
    nearest_tokens,
    readable_token,
    summarise_clusters,
    unreadable_token_ids,
)
from diffclust.report.template import TEMPLATE
from diffclust.report.thumbnails import ThumbnailCache

logger = logging.getLogger(__name__)

METHOD_CONFIGS = ("difc.json", "diec.json", "cludi.json")
CLUSTERS_NAME = "clusters.csv"
#: a categorical palette (tab20's order) for clusters and classes on the map
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
           "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")
MAP_SIZE = (640, 460)




def inside_the_data(collection) -> dict[str, Path]:
    """{file: image path} for the images a report may show: those under the data folder the run
    read. A manifest row that climbs out of it (`../..`, an absolute path) or a link that leaves
    it is refused with a warning, so a run folder handed to you cannot show your own files."""
    root = Path(collection.root).resolve()
    paths, refused = split_inside({record.file: record.path for record in collection.records if record.path is not None}, root)
    if refused:
        logger.warning("The report leaves out %d image(s) that lie outside the run's data folder %s (%s).", len(refused), root,
                       some_names(refused))
    return paths

def copy_run_picture(source: Path, target: Path) -> bool:
    """Copy a plot the run wrote into the report, if it is a plain file of the run folder: a link
    (to /etc/shadow, or anywhere) is refused with a warning, so a run folder someone hands you
    cannot pull your own files into a report you then share."""
    if source.is_symlink():
        logger.warning("Not copying %s into the report: it is a link (to %s), not a picture the run wrote.", source.name,
                       os.readlink(source))
        return False
    if not source.is_file():
        return False
    shutil.copyfile(source, target, follow_symlinks=False)
    return True

def _colour(value: int) -> str:
    return PALETTE[int(value) % len(PALETTE)]


def _short(file: str, length: int = 18) -> str:
    name = Path(file).name
    return name if len(name) <= length else name[: length - 1] + "…"


def _json_object(folder: Path, name: str) -> dict:
    try:
        value = json.loads((folder / name).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise damaged(folder, f"{name} is not valid JSON ({error})", "fit again into a new output folder") from None
    if not isinstance(value, dict):
        raise damaged(folder, f"{name} holds a {type(value).__name__}, not an object", "fit again into a new output folder")
    return value


def _run_array(folder: Path, name: str, mmap: bool = False) -> np.ndarray | None:
    """A numeric array the run wrote, or None if absent; a broken one is a damaged run file
    (never loaded with pickle)."""
    path = folder / name
    if not path.is_file():
        return None
    try:
        values = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (OSError, ValueError, EOFError) as error:
        reason = "it holds Python objects, not numbers" if "allow_pickle" in str(error) else f"{type(error).__name__}: {error}"
        raise damaged(folder, f"{name} is not a readable array ({reason})",
                      f"delete {name} (the report then goes without it) or fit again into a new output folder") from None
    if values.dtype.kind not in "biuf":
        raise damaged(folder, f"{name} holds {values.dtype} values, not numbers", f"delete {name} or fit again")
    return values


class RunFolder:
    """What a finished run folder holds, read once."""

    def __init__(self, folder: Path):
        self.folder = folder
        if not (folder / ASSIGNMENTS_NAME).is_file():
            raise DiffclustError(f"'{folder}' holds no {ASSIGNMENTS_NAME}: is it a finished `diffclust fit` run folder?")
        config_name = next((name for name in METHOD_CONFIGS if (folder / name).is_file()), None)
        self.config = _json_object(folder, config_name) if config_name else {}
        self.method = self.config.get("method", "unknown")
        self.settings = self.config.get("settings", {})
        self.summary = _json_object(folder, RUN_SUMMARY_NAME) if (folder / RUN_SUMMARY_NAME).is_file() else {}
        rows = read_assignment_rows(folder / ASSIGNMENTS_NAME)
        assigned = [row for row in rows if row["cluster"] != ""]
        self.files = [row["file"] for row in assigned]
        self.clusters = np.array([int(row["cluster"]) for row in assigned], dtype=np.int64)
        self.confidence = np.array([float(row.get("confidence") or 0) for row in assigned])
        self.skipped = []
        if (folder / SKIPPED_NAME).is_file():
            with open(folder / SKIPPED_NAME, newline="", encoding="utf-8", errors=NAME_ERRORS) as handle:
                self.skipped = [(from_spreadsheet_safe(row["file"]), row["reason"]) for row in csv.DictReader(handle)]
        self.embedding = _run_array(folder, "embedding.npy")
        if self.embedding is not None:
            self.embedding = self.embedding.astype(np.float32)
        if self.embedding is not None and len(self.embedding) != len(self.files):
            self.embedding = None  # not this assignment's rows (e.g. an older run)
        self.agreement = _run_array(folder, "sample_agreement.npy")
        if self.agreement is not None and len(self.agreement) != len(self.files):
            self.agreement = None

    def images(self) -> tuple[dict[str, Path], dict[str, int], dict[int, str]]:
        """(image path of each file, label of each file, class names) from the data the run read;
        for feature rows, the labels given with them (RUN_DIR/labels.csv), and their images where
        `diffclust features` recorded them."""
        data = self.summary.get("data")
        if not data or not (Path(data).is_dir() or str(data).endswith(".csv")):
            stored = self.folder / RUN_LABELS_NAME
            labels = read_labels(stored) if stored.is_file() else {}
            try:  # what `diffclust features` recorded of the rows
                paths, names = recorded_images(data) if data else ({}, {})
            except DiffclustError as error:
                logger.warning("The report shows no images: the feature file's table of rows cannot be read (%s).", error)
                paths, names = {}, {}
            return paths, labels, names
        try:
            collection = scan_images(data, verify=False, folder_labels=self.settings.get("folder_labels", True))
        except DiffclustError as error:
            logger.warning("The report shows no images: the run's data cannot be read again (%s).", error)
            return {}, {}, {}
        paths = inside_the_data(collection)
        labels = {record.file: record.label for record in collection.records if record.label is not None}
        names = {record.label: record.class_name for record in collection.records if record.label is not None and record.class_name}
        return paths, labels, names


def _features_row(run: RunFolder) -> list[tuple[str, str]]:
    """DiEC's layer and timestep (and CLUDI's, on images): which UNet features were clustered,
    and whether the search chose them."""
    state = run.config.get("state", {})
    layer, timestep = state.get("layer") or state.get("feature_layer"), state.get("timestep", state.get("feature_timestep"))
    if not layer or timestep is None:
        return []
    how = "chosen by the search, see its plot below" if (run.folder / "search.json").is_file() else "as given"
    return [("UNet features", f"{layer} at t = {timestep} ({how})")]


def _map_points(run: RunFolder, labels: dict[str, int], thumbnails, paths, limit: int, seed: int,
                class_names: dict[int, str] | None = None) -> tuple[dict | None, str]:
    """2-D t-SNE of the clustered representation (at most `limit` points, a seeded sample), with
    a legend of its colours (clusters, or classes by name)."""
    class_names = class_names or {}
    if run.embedding is None:
        return None, "this run folder has no embedding.npy (made by diffclust 0.1 before reports)."
    count = len(run.files)
    if count < 5:
        return None, "fewer than 5 items."
    from sklearn.manifold import TSNE

    from diffclust.cluster.k_selection import reduce_dimensions

    rows = np.arange(count)
    if count > limit:
        rows = np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))
    values = run.embedding[rows]
    values = reduce_dimensions(values - values.mean(axis=0), 50, seed)
    coordinates = TSNE(2, init="pca", random_state=seed, perplexity=min(30.0, (len(rows) - 1) / 3)).fit_transform(values)
    low, high = coordinates.min(axis=0), coordinates.max(axis=0)
    width, height = MAP_SIZE
    scaled = 10 + (coordinates - low) / np.maximum(high - low, 1e-9) * np.array([width - 20, height - 20])
    points = []
    for (x, y), row in zip(scaled, rows):
        file = run.files[row]
        label = labels.get(file)
        thumb = thumbnails.thumbnail(paths[file]) if file in paths else None
        points.append({"x": round(float(x), 1), "y": round(float(y), 1), "colour": _colour(run.clusters[row]),
                       "class_colour": _colour(label) if label is not None else "#999999", "thumb": thumb,
                       "label": f"{file}: cluster {run.clusters[row]}" + (f", class {label}" if label is not None else "")})
    caption = (f"t-SNE of the {'proxy words' if run.method == 'difc' else 'clustered representation'}: "
               + (f"all {count} items." if count <= limit else f"a seeded sample of {limit} of {count} items."))
    clusters = sorted({int(cluster) for cluster in run.clusters[rows]})
    classes = sorted({labels[run.files[row]] for row in rows if run.files[row] in labels})
    legend_clusters = [(f"cluster {cluster}", _colour(cluster)) for cluster in clusters]
    legend_classes = [(class_names.get(label, f"class {label}"), _colour(label)) for label in classes]
    return {"points": points, "width": width, "height": height, "has_classes": bool(labels), "caption": caption,
            "legend_clusters": legend_clusters, "legend_classes": legend_classes}, ""


def _run_backbone(run: RunFolder, device: str):
    """The run's backbone (for names and prototypes), or None with a warning when it cannot be loaded."""
    from diffclust.backbones.registry import load_backbone

    try:
        return load_backbone(run.settings.get("backbone"), device=device, progress=False)
    except DiffclustError as error:
        logger.warning("No cluster names or prototypes: the backbone cannot be loaded (%s).", error)
        return None


def _mean_proxies(run: RunFolder) -> dict[int, torch.Tensor]:
    return {int(cluster): torch.from_numpy(run.embedding[run.clusters == cluster].mean(axis=0)) for cluster in np.unique(run.clusters)}


def cluster_names(run: RunFolder, backbone, top: int = 3) -> dict[int, str]:
    """DiFiC: the vocabulary words nearest each cluster's mean proxy word, in the text encoder's
    input-embedding space (whole words and short numbers only, see unreadable_token_ids)."""
    table = backbone.text_encoder.get_input_embeddings().weight.detach().cpu()
    tokenizer = backbone.tokenizer
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(table))))
    skipped = set(tokenizer.all_special_ids) | unreadable_token_ids(tokens)
    return {cluster: ", ".join(readable_token(token) for token in nearest_tokens(mean, table, tokens, top, skipped))
            for cluster, mean in _mean_proxies(run).items()}


def cluster_prototypes(run: RunFolder, backbone, out: Path, steps: int = 20) -> dict[int, str]:
    """DiFiC: an image generated from "A photo of a S*" with each cluster's mean proxy word,
    saved as out/prototypes/cluster_K.png."""
    from diffclust.report.prototypes import generate_prototypes

    means = _mean_proxies(run)
    resolution = int(run.config.get("state", {}).get("resolution") or backbone.resolution)
    images = generate_prototypes(backbone, torch.stack(list(means.values())), run.settings.get("prompt_template", "A photo of a S*"),
                                 resolution, steps=steps, seed=int(run.settings.get("random_state", 0)))
    (out / "prototypes").mkdir(exist_ok=True)
    paths = {}
    for cluster, image in zip(means, images):
        name = f"prototypes/cluster_{cluster}.png"
        image.save(out / name)
        paths[cluster] = name
    return paths


def _settings_in_effect(run: RunFolder) -> dict:
    """The settings as the run used them: the resolution actually used, not 'None' (the backbone's own)."""
    settings = dict(run.settings)
    state = run.config.get("state", {})
    if settings.get("resolution") is None and state.get("resolution") is not None:
        settings["resolution"] = state["resolution"]
    return settings


def _training_plot(folder: Path, out: Path) -> str | None:
    path = folder / "metrics.csv"
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    def series(name):
        return [float(row[name]) if row.get(name) not in (None, "") else np.nan for row in records]

    epochs = series("epoch")
    losses = [name for name in records[0] if "loss" in name or name in ("kl", "assignment_entropy", "cross_entropy")]
    scores = [name for name in ("acc", "nmi", "ari", "mean_confidence") if name in records[0]]
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for name in losses:
        axes[0].plot(epochs, series(name), marker="o", markersize=3, label=name)
    for name in scores:
        axes[1].plot(epochs, series(name), marker="o", markersize=3, label=name)
    for axis, title in zip(axes, ("losses", "scores")):
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "training.png", dpi=100)
    plt.close(figure)
    return "training.png"


def _report_folder(out: Path, inside_run: bool) -> Path:
    """The folder the report goes to: new, empty, or one holding a report diffclust wrote (its
    marker file, or RUN_DIR/report itself); anything else is someone's folder and is refused."""
    if out.exists() and not out.is_dir():
        raise DiffclustError(f"--out '{out}' is a file, not a folder: choose a folder name for the report.")
    if inside_run:
        out.mkdir(parents=True, exist_ok=True)  # RUN_DIR/report is the run's own
        (out / REPORT_MARKER).touch()
    return claim_output_folder(out, REPORT_MARKER, "--out", "the report")


#: prototypes are drawn on a CPU too when the backbone's images are at most this size
SMALL_MODEL_PIXELS = 32
DIFC_READING = (
    "DiFiC: each cluster's words are the whole words of the text encoder's vocabulary nearest its mean proxy word S* (in the "
    "space of input word embeddings), and its picture is what the backbone draws from the prompt with that S*. Both show how "
    "the model reads the cluster, not what it is: a model that never saw these groups puts their proxy words among the words "
    "and shapes it knows, so expect near neighbours (another digit, a number, a related animal) rather than the class name.")


def build_report(run_dir: str | Path, out: str | Path | None = None, sort: str = "size", per_cluster: int = 8,
                 map_points: int = 2000, names: bool = True, prototypes: bool | None = None, seed: int = 0) -> Path:
    """Write `out`/index.html (default RUN_DIR/report/) and RUN_DIR/clusters.csv; return the page.

    Each cluster shows its `per_cluster` most and least confident images; the map shows at most
    `map_points` items; thumbnails are reused from earlier reports in the same folder. For
    DiFiC, `names` adds the vocabulary tokens nearest each cluster, and `prototypes` an image
    generated from its mean proxy word (None: with a GPU, or a backbone of at most 32 px; at SD-1.5
    size it is slow on a CPU).
    """
    if sort not in ("size", "confidence"):
        raise DiffclustError(f"sort must be 'size' or 'confidence', got {sort!r}.")
    started = time.perf_counter()
    run_dir = Path(run_dir)
    run = RunFolder(run_dir)
    out = _report_folder(Path(out) if out is not None else run_dir / "report", inside_run=out is None)
    paths, labels, class_names = run.images()
    thumbnails = ThumbnailCache(out)
    masks = _run_array(run_dir, "cache/masks.npy", mmap=True) if run.method == "difc" else None
    if masks is not None and len(masks) != len(run.files):
        masks = None
    index_of = {file: row for row, file in enumerate(run.files)}
    backbone = None
    if run.method == "difc" and run.embedding is not None and (names or prototypes or prototypes is None):
        backbone = _run_backbone(run, "cuda" if torch.cuda.is_available() else "cpu")
    if prototypes is None:  # a few seconds on a CPU for a small model; minutes at SD-1.5 size
        prototypes = backbone is not None and (torch.cuda.is_available() or backbone.resolution <= SMALL_MODEL_PIXELS)
    words = cluster_names(run, backbone) if names and backbone is not None else {}
    pictures = cluster_prototypes(run, backbone, out) if prototypes and backbone is not None else {}

    def item(row: int) -> dict[str, Any]:
        file = run.files[row]
        path = paths.get(file)
        return {"file": file, "short": _short(file), "confidence": float(run.confidence[row]),
                "agreement": None if run.agreement is None else float(run.agreement[row]),
                "thumb": thumbnails.thumbnail(path) if path else None,
                "masked": thumbnails.thumbnail(path, np.asarray(masks[row])) if path is not None and masks is not None else None}

    clusters = []
    for summary in summarise_clusters(run.clusters, run.confidence, sort):
        best = summary.members[:per_cluster]
        shown = set(best.tolist())
        worst = [row for row in summary.members[::-1][:per_cluster] if row not in shown][::-1]
        rows = [("most confident", [item(row) for row in best])]
        if worst:
            rows.append(("least confident", [item(row) for row in worst]))
        clusters.append({"cluster": summary.cluster, "size": summary.size, "mean_confidence": summary.mean_confidence,
                         "names": words.get(summary.cluster, ""), "prototype": pictures.get(summary.cluster), "rows": rows,
                         "agreement": None if run.agreement is None else float(run.agreement[summary.members].mean())})

    context: dict[str, Any] = {"title": run_dir.name, "thumb": thumbnails.size, "clusters": clusters, "sort": sort,
                               "skipped": run.skipped, "version": __version__, "has_masks": masks is not None, "notes": [],
                               "prompt": run.settings.get("prompt_template", "A photo of a S*")}
    if words or pictures:
        context["notes"].append(DIFC_READING)
    labelled = [file for file in run.files if file in labels]
    if labelled:
        truth = np.array([labels[file] for file in labelled])
        found = run.clusters[[index_of[file] for file in labelled]]
        cluster_ids, class_ids, table = cluster_class_table(found, truth)
        named = [class_names.get(label, str(label)) for label in class_ids]
        context.update(scores=clustering_scores(truth, found), labelled=len(labelled), class_names=named,
                       class_table=[{"cluster": c, "counts": table[i].tolist()} for i, c in enumerate(cluster_ids)],
                       purity=class_purity(table).tolist(),
                       pairs=[(class_names.get(a, a), class_names.get(b, b), n) for a, b, n in confused_pairs(table, class_ids)])
    context["map"], context["map_reason"] = _map_points(run, labels, thumbnails, paths, map_points, seed, class_names)
    context["training_plot"] = _training_plot(run_dir, out)
    for name, key in (("search.png", "search_plot"), ("k_selection.png", "k_plot")):
        if copy_run_picture(run_dir / name, out / name):
            context[key] = name
    if not paths:
        context["notes"].append("No thumbnails: this run clustered rows of a feature file that records no images (each row is "
                                "named by its id or file; `diffclust features` records them), or its images are no longer there.")
    if run.agreement is not None:
        context["notes"].append("CLUDI: 'samples agreeing' is the share of the teacher's prediction samples whose own assignment "
                                "is the item's cluster (1.0: no spread); each picture's tooltip gives its own.")
    context["summary"] = [("method", run.method), ("backbone", run.summary.get("backbone") or run.settings.get("backbone")),
                          ("data", run.summary.get("data") or "(arrays or features)"),
                          ("clusters (K)", run.config.get("state", {}).get("n_clusters") or run.settings.get("n_clusters")),
                          *_features_row(run),
                          ("images clustered", len(run.files)), ("skipped", len(run.skipped)),
                          ("wall time", f"{run.summary['wall_seconds']:.1f} s" if "wall_seconds" in run.summary else "?"),
                          ("device", run.summary.get("device", "?")),
                          ("settings", ", ".join(f"{key}={value}" for key, value in sorted(_settings_in_effect(run).items())
                                                 if key in ("epochs", "batch_size", "lr", "random_state", "resolution", "warmup_epochs")))]
    if (run.summary.get("backbone") or run.settings.get("backbone")) == TINY_RANDOM:
        context["notes"].insert(0, "This run used the 'tiny-random' backbone: random weights that check an install. "
                                   "Its clusters, confidences and names mean nothing.")

    from jinja2 import Environment

    html = Environment(autoescape=True).from_string(TEMPLATE).render(**context)
    page = atomic_write_text(out / "index.html", html)
    rows = [(c["cluster"], c["size"], f"{c['mean_confidence']:.4f}", c["names"]) for c in clusters]
    atomic_write_text(run_dir / CLUSTERS_NAME, csv_text(("cluster", "size", "mean_confidence", "names"), rows))
    logger.info("Report %s: %d thumbnails made, %d reused, %.1f s.", page, thumbnails.made, thumbnails.reused, time.perf_counter() - started)
    return page
