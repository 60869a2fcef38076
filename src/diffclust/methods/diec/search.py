"""The clusterability search over (layer, timestep): a full grid, or DiEC's fast two-stage search.

A pair is scored by k-means on the features of a random subset and an internal index:
``umap_silhouette`` (default) fits k-means in a UMAP embedding of the subset's features and
scores its silhouette there; ``calinski_harabasz`` and ``silhouette`` score k-means in the
features themselves. Benchmarks may pass their own scorer, e.g. accuracy against labels, for
reporting only. Why UMAP silhouette: digits and other classes lie on curved sheets in the
features, which k-means cuts across, and the raw indices reward timesteps whose features are
merely spread out; on USPS they peak where even k-means in a UMAP embedding merges digits
(docs/benchmarks/diec.md). The fast search fixes the layer (the
bottleneck, or the best layer at one probe timestep) and then maximises over integer t: a coarse
grid of COARSE_TIMESTEPS evenly spaced timesteps first, then a Fibonacci search (the integer form
of golden-section search) between the best grid point's neighbours. Each Fibonacci step reuses
one of the previous step's two points, so a bracket of N timesteps needs about log_phi(N)
evaluations instead of N. The grid comes first because the score over the whole range is not
unimodal: at high t it is a flat, noisy floor, and a Fibonacci search over the whole schedule
starts with both probes on that floor, which sent one seed of a small DDPM to a useless
timestep (docs/benchmarks/diec.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import calinski_harabasz_score, silhouette_score

from diffclust.cluster.manifold import umap_embedding
from diffclust.errors import DiffclustError

Scorer = Callable[[np.ndarray, np.ndarray], float]
#: (data, seed) -> the space k-means runs and is scored in
Embedding = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class Criterion:
    """An internal index of k-means, in the features or in an embedding of them."""

    index: Scorer
    embedding: Embedding | None = None


def _umap_for_search(data: np.ndarray, seed: int) -> np.ndarray:
    return umap_embedding(data, seed, "search_score='umap_silhouette' (--search-score)")


SCORES: dict[str, Criterion] = {
    "umap_silhouette": Criterion(silhouette_score, _umap_for_search),
    "calinski_harabasz": Criterion(calinski_harabasz_score),
    "silhouette": Criterion(silhouette_score),
}
#: evenly spaced timesteps the fast search scores before its Fibonacci search (see above)
COARSE_TIMESTEPS = 8
#: features of a subset at one timestep for some layers: (timestep, layers) -> {layer: (n, d)}
FeatureSource = Callable[[int, Sequence[str]], dict[str, np.ndarray]]


def criterion(score: str | Scorer | Criterion) -> Criterion:
    """A named criterion, a Criterion, or a custom index of k-means in the features."""
    if isinstance(score, Criterion):
        return score
    if callable(score):
        return Criterion(score)
    if score not in SCORES:
        raise DiffclustError(f"search score must be one of {', '.join(SCORES)}, got '{score}'.")
    return SCORES[score]


def clusterability(features: np.ndarray, n_clusters: int, seed: int, score: str | Scorer | Criterion = "umap_silhouette") -> float:
    """Internal quality of k-means on `features` (or on their embedding): higher is more clusterable."""
    data = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    if not np.isfinite(data).all():
        return -math.inf
    chosen = criterion(score)
    if chosen.embedding is not None:
        data = np.asarray(chosen.embedding(data, seed), dtype=np.float64)
    labels = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit_predict(data)
    if len(np.unique(labels)) < 2:
        return -math.inf
    return float(chosen.index(data, labels))


def fibonacci_search_max(evaluate: Callable[[int], float], low: int, high: int) -> tuple[int, dict[int, float]]:
    """Argmax of a unimodal function over the integers low..high, and every value it computed.

    Keeps an open interval (a, b) whose length is a Fibonacci number F_k; its two probes are
    a + F_(k-2) and a + F_(k-1), and the surviving interval contains one of them as a probe of
    the next step. Points past `high` (padding up to F_k) count as -inf and cost nothing.
    """
    if high < low:
        raise DiffclustError(f"Empty timestep range [{low}, {high}].")
    values: dict[int, float] = {}

    def value(x: int) -> float:
        if x > high:
            return -math.inf
        if x not in values:
            values[x] = float(evaluate(x))
        return values[x]

    fib = [1, 1]  # fib[i] = F_(i+1)
    while fib[-1] < high - low + 2:
        fib.append(fib[-1] + fib[-2])
    k = len(fib) - 1
    a, b = low - 1, low - 1 + fib[k]
    while b - a > 2:
        left, right = a + fib[k - 2], a + fib[k - 1]
        if value(left) < value(right):
            a = left
        else:
            b = right
        k -= 1
    value(a + 1)
    best = max(values, key=lambda x: (values[x], -x))
    return best, values


def even_timesteps(low: int, high: int, count: int) -> list[int]:
    """`count` evenly spaced integers from low to high, both included (fewer where they coincide)."""
    return sorted({int(t) for t in np.linspace(low, high, max(1, count)).round()})


def bracketed_search_max(evaluate: Callable[[int], float], low: int, high: int, coarse: int = COARSE_TIMESTEPS,
                         refine: Callable[[int], float] | None = None) -> tuple[int, dict[int, float]]:
    """Argmax over the integers low..high of a function that is unimodal near its top but may
    have other, lower bumps: score `coarse` evenly spaced points, then Fibonacci-search the open
    interval between the best point's neighbours, with `refine` (the same function, by default;
    a caller passes its own to tell the two stages apart). Returns the best point and every
    value computed."""
    if high < low:
        raise DiffclustError(f"Empty timestep range [{low}, {high}].")
    values: dict[int, float] = {}

    def cached(function: Callable[[int], float]) -> Callable[[int], float]:
        def value(x: int) -> float:
            if x not in values:
                values[x] = float(function(x))
            return values[x]
        return value

    grid_value = cached(evaluate)
    grid = even_timesteps(low, high, coarse)
    top = max(range(len(grid)), key=lambda i: (grid_value(grid[i]), -grid[i]))
    inner_low = grid[top - 1] + 1 if top > 0 else low
    inner_high = grid[top + 1] - 1 if top + 1 < len(grid) else high
    fibonacci_search_max(cached(refine or evaluate), inner_low, inner_high)
    best = max(values, key=lambda x: (values[x], -x))
    return best, values


@dataclass
class SearchEvaluation:
    layer: str
    timestep: int
    score: float
    stage: str


@dataclass
class SearchResult:
    """The chosen pair and every evaluation behind it."""

    strategy: str
    score_name: str
    layers: list[str]
    layer: str
    timestep: int
    score: float
    evaluations: list[SearchEvaluation] = field(default_factory=list)
    #: UNet feature extractions over the subset: one per distinct timestep visited
    feature_passes: int = 0

    @property
    def n_evaluations(self) -> int:
        return len(self.evaluations)

    def matrix(self) -> tuple[list[str], list[int], np.ndarray]:
        """(layers, timesteps, scores) with NaN where a pair was not evaluated."""
        timesteps = sorted({item.timestep for item in self.evaluations})
        grid = np.full((len(self.layers), len(timesteps)), np.nan)
        for item in self.evaluations:
            grid[self.layers.index(item.layer), timesteps.index(item.timestep)] = item.score
        return self.layers, timesteps, grid

    def curves(self) -> dict[str, list[tuple[int, float]]]:
        """Each evaluated layer's (timestep, score) points in order of t (finite scores only):
        what a plot of the search should show, on a true timestep axis."""
        points: dict[str, list[tuple[int, float]]] = {}
        for item in self.evaluations:
            if math.isfinite(item.score):
                points.setdefault(item.layer, []).append((item.timestep, item.score))
        return {layer: sorted(points[layer]) for layer in self.layers if layer in points}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> SearchResult:
        data = json.loads(text)
        data["evaluations"] = [SearchEvaluation(**item) for item in data["evaluations"]]
        return cls(**data)


class ClusterabilitySearch:
    """Scores (layer, timestep) pairs on a subset; each timestep's features are read once for
    all layers asked there, and no pair is scored twice."""

    def __init__(self, read_features: FeatureSource, n_clusters: int, score: str | Scorer | Criterion = "umap_silhouette",
                 seed: int = 0, score_name: str | None = None, on_evaluation: Callable[[SearchEvaluation], None] | None = None):
        self.read_features = read_features
        self.n_clusters = n_clusters
        self.score = criterion(score)
        self.score_name = score_name or (score if isinstance(score, str) else getattr(score, "__name__", "custom"))
        self.seed = seed
        self.on_evaluation = on_evaluation
        self.scores: dict[tuple[str, int], SearchEvaluation] = {}
        self.feature_passes = 0

    def scores_at(self, timestep: int, layers: Sequence[str], stage: str) -> dict[str, float]:
        missing = [layer for layer in layers if (layer, timestep) not in self.scores]
        if missing:
            features = self.read_features(timestep, missing)
            self.feature_passes += 1
            for layer in missing:
                score = clusterability(features[layer], self.n_clusters, self.seed, self.score)
                item = SearchEvaluation(layer, int(timestep), score, stage)
                self.scores[(layer, timestep)] = item
                if self.on_evaluation is not None:
                    self.on_evaluation(item)
        return {layer: self.scores[(layer, timestep)].score for layer in layers}

    def _result(self, strategy: str, layers: Sequence[str]) -> SearchResult:
        best = max(self.scores.values(), key=lambda item: item.score)
        return SearchResult(strategy, self.score_name, list(layers), best.layer, best.timestep, best.score,
                            list(self.scores.values()), self.feature_passes)

    def grid(self, layers: Sequence[str], timesteps: Sequence[int]) -> SearchResult:
        """Every layer at every timestep: len(layers) x len(timesteps) evaluations."""
        for timestep in timesteps:
            self.scores_at(int(timestep), layers, "grid")
        return self._result("grid", layers)

    def two_stage(self, layers: Sequence[str], low: int, high: int, layer: str | None, probe_timestep: int | None = None) -> SearchResult:
        """Stage 1: `layer`, or the best of `layers` at `probe_timestep`. Stage 2: a coarse grid
        over t, then a Fibonacci search around its best point (`bracketed_search_max`)."""
        if layer is None:
            if probe_timestep is None:
                raise DiffclustError("The two-stage search needs a layer or a probe timestep to choose one.")
            probe = self.scores_at(int(probe_timestep), layers, "layer probe")
            layer = max(probe, key=probe.get)
        elif layer not in layers:
            layers = [*layers, layer]
        bracketed_search_max(lambda t: self.scores_at(t, [layer], "timestep grid")[layer], low, high,
                             refine=lambda t: self.scores_at(t, [layer], "timestep search")[layer])
        result = self._result("two-stage", layers)
        chosen = max((item for item in self.scores.values() if item.layer == layer), key=lambda item: item.score)
        result.layer, result.timestep, result.score = chosen.layer, chosen.timestep, chosen.score
        return result
