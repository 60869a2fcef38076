"""Self-labelling, SCAN's last step: a linear classifier trained on the rows a clustering is
sure of relabels every row.

A row counts as sure when at least CONFIDENT_SHARE of its NEIGHBOURS nearest neighbours
(Euclidean) share its cluster: no label and no model confidence is read, so it works on any
partition. The classifier is scikit-learn's multinomial logistic regression at its default
regularisation. Rows in the middle of a cluster pull its boundary to where they are, so the
rows a clustering got wrong near the boundary, and scattered rows it gathered into one cluster
of leftovers, move to the cluster their surroundings vote for (`benchmarks/cludi_start_refinement.py`).

A linear classifier redraws clusters that are not linearly separable (interleaved half-moons).
Such clusters show themselves without labels: the classifier cannot reproduce its own training
rows. Below MIN_TRAINING_AGREEMENT the partition is left as it is (docs/benchmarks/cludi.md).

`equal_sizes=True` is for data whose groups are known to be equally large (benchmarks built
that way, such as ImageNet subsets): the classifier's assignment is transported (Sinkhorn) to
equal cluster sizes, and the transport's cluster offsets are folded into its bias, so new rows
are assigned the same way. It breaks groups of unequal size apart (docs/benchmarks/cludi.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from diffclust.cluster.neighbours import nearest_neighbours

logger = logging.getLogger(__name__)

#: a row is sure when at least this share of its NEIGHBOURS nearest neighbours share its cluster
CONFIDENT_SHARE = 0.5
NEIGHBOURS = 10
#: the classifier trains on at most this many sure rows (seeded draw): its cost stays bounded on large sets
MAX_TRAINING_ROWS = 50_000
#: the classifier must give at least this share of its training rows their cluster, else the clusters are not
#: linear in these features and self-labelling is skipped
MIN_TRAINING_AGREEMENT = 0.99
#: Sinkhorn iterations of the equal-size transport
TRANSPORT_ITERATIONS = 200


@dataclass
class SelfLabeller:
    """A fitted linear classifier over the clusters: weights (K, d), bias (K,)."""

    weights: np.ndarray
    bias: np.ndarray

    def scores(self, features: np.ndarray) -> np.ndarray:
        """The classifier's logits (N, K); an unused cluster's are -inf."""
        return np.asarray(features, dtype=np.float64) @ self.weights.T + self.bias

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        scores = self.scores(features)
        scores -= scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cluster, its probability) of each row."""
        probabilities = self.probabilities(features)
        return probabilities.argmax(axis=1), probabilities.max(axis=1)


def size_offsets(scores: np.ndarray, shares: np.ndarray | None = None, iterations: int = TRANSPORT_ITERATIONS) -> np.ndarray:
    """Cluster offsets b (K,) such that softmax over clusters of (scores - b) gives each cluster
    its share of the rows' total mass (`shares`, summing to 1; equal shares by default):
    Sinkhorn's column scaling, in log space. argmax of scores - b is the transported assignment."""
    from scipy.special import logsumexp

    offsets = np.zeros(scores.shape[1])
    shares = np.full(scores.shape[1], 1.0 / scores.shape[1]) if shares is None else np.asarray(shares, dtype=np.float64)
    target = np.log(shares * len(scores))
    for _ in range(iterations):
        rows = logsumexp(scores - offsets, axis=1, keepdims=True)
        offsets = logsumexp(scores - rows, axis=0) - target
    return offsets


def sure_rows(labels: np.ndarray, neighbour_table: np.ndarray) -> np.ndarray:
    """Rows whose cluster at least CONFIDENT_SHARE of their neighbours (the table's rows) share;
    every row of a cluster that has no sure row (so that no cluster is lost)."""
    sure = (labels[neighbour_table] == labels[:, None]).mean(axis=1) >= CONFIDENT_SHARE
    for cluster in np.setdiff1d(np.unique(labels), np.unique(labels[sure])):
        sure[labels == cluster] = True
    return sure


def fit_self_labeller(features: np.ndarray, labels: np.ndarray, n_clusters: int, seed: int,
                      neighbour_table: np.ndarray | None = None, equal_sizes: bool = False) -> tuple[SelfLabeller | None, float, float]:
    """The classifier trained on the sure rows of `labels`, the share of sure rows, and the share
    of its training rows the classifier gives their cluster. The classifier is None when fewer
    than two clusters are in use (nothing to separate) or when that share is below
    MIN_TRAINING_AGREEMENT. `neighbour_table` (N, >= NEIGHBOURS) saves the search when the
    caller has one; `equal_sizes` transports the assignment to equal cluster sizes."""
    from sklearn.linear_model import LogisticRegression

    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if len(np.unique(labels)) < 2 or len(features) <= NEIGHBOURS:
        logger.info("Self-labelling skipped: %s.", "one cluster in use" if len(np.unique(labels)) < 2 else "too few rows")
        return None, 0.0, 0.0
    if neighbour_table is None or neighbour_table.shape[1] < NEIGHBOURS:
        neighbour_table = nearest_neighbours(features, NEIGHBOURS, metric="euclidean")
    sure = sure_rows(labels, np.asarray(neighbour_table)[:, :NEIGHBOURS])
    training = np.flatnonzero(sure)
    if len(training) > MAX_TRAINING_ROWS:
        training = np.sort(np.random.default_rng(seed).choice(training, MAX_TRAINING_ROWS, replace=False))
    regression = LogisticRegression(max_iter=1000, random_state=seed).fit(features[training], labels[training])
    weights = np.zeros((n_clusters, features.shape[1]))
    bias = np.full(n_clusters, -np.inf)  # a cluster the classifier never saw gets no row
    if len(regression.classes_) == 2:  # scikit-learn keeps one row for two classes: p(second) = sigmoid(w.x + b)
        weights[regression.classes_[1]], bias[regression.classes_] = regression.coef_[0], (0.0, regression.intercept_[0])
    else:
        weights[regression.classes_], bias[regression.classes_] = regression.coef_, regression.intercept_
    labeller = SelfLabeller(weights, bias)
    agreement = float((labeller.predict(features[training])[0] == labels[training]).mean())
    if agreement < MIN_TRAINING_AGREEMENT:
        logger.info("Self-labelling skipped: a linear classifier gives only %.1f%% of the sure rows their cluster (at least %.0f%% "
                    "needed), so the clusters are not linear in these features; the partition is kept.", 100 * agreement,
                    100 * MIN_TRAINING_AGREEMENT)
        return None, float(sure.mean()), agreement
    if equal_sizes:
        used = np.isfinite(bias)  # a cluster without rows keeps none
        labeller.bias[used] -= size_offsets(labeller.scores(features)[:, used])
    logger.info("Self-labelling: a linear classifier trained on the %.1f%% of rows whose neighbours agree with their cluster%s.",
                100 * sure.mean(), ", its assignment transported to equal cluster sizes" if equal_sizes else "")
    return labeller, float(sure.mean()), agreement
