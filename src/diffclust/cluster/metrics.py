"""Clustering scores against ground truth: Hungarian ACC, many-to-one ACC, NMI, ARI.

Labels are used only to report; no method in diffclust trains on them.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix


def _as_label_arrays(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-d and of equal length, got {y_true.shape} and {y_pred.shape}")
    if y_true.size == 0:
        raise ValueError("Cannot score an empty clustering.")
    return y_true, y_pred


def hungarian_accuracy(y_true, y_pred) -> float:
    """ACC under the best one-to-one matching of clusters to classes (scipy's Hungarian solver)."""
    y_true, y_pred = _as_label_arrays(y_true, y_pred)
    counts = contingency_matrix(y_pred, y_true)  # rows: clusters, columns: classes
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / y_true.size)


def many_to_one_accuracy(y_true, y_pred) -> float:
    """ACC when each cluster is mapped to its majority class (for over-clustering, K > classes)."""
    y_true, y_pred = _as_label_arrays(y_true, y_pred)
    counts = contingency_matrix(y_pred, y_true)
    return float(counts.max(axis=1).sum() / y_true.size)


def clustering_scores(y_true, y_pred) -> dict[str, float]:
    """All scores at once, as a flat dict (acc, acc_many_to_one, nmi, ari)."""
    y_true, y_pred = _as_label_arrays(y_true, y_pred)
    return {
        "acc": hungarian_accuracy(y_true, y_pred),
        "acc_many_to_one": many_to_one_accuracy(y_true, y_pred),
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
    }
