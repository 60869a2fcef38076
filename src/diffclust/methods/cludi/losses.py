"""CLUDI's two-way cross-entropy between teacher and student assignments.

Each side's logits give two distributions over the clusters of each sample:

* a *balanced target*: softmax over the batch (each cluster spreads one unit of mass over the
  samples, temperature t_c), renormalised over clusters per sample. An unused cluster still
  hands its mass to the samples that score it highest, so the target never lets clusters die;
* a *prediction*: softmax over clusters (temperature t_r), renormalised over the batch and
  scaled by B / K, so that it equals the plain softmax exactly when clusters are balanced.

The loss is the cross-entropy of one side's target against the other side's prediction, in
both directions, averaged (teacher values carry no gradient).
"""

from __future__ import annotations

import torch

_EPS = 1e-8


def cluster_offsets(logits: torch.Tensor, column_temperature: float) -> torch.Tensor:
    """b_k = logsumexp over the rows of l_ik / t_c: the normaliser of each cluster's column."""
    return torch.logsumexp(logits.float() / column_temperature, dim=0)


def balanced_probabilities(logits: torch.Tensor, column_temperature: float, offsets: torch.Tensor) -> torch.Tensor:
    """softmax over clusters of l_ik / t_c - b_k. With offsets from the same rows, this is the
    balanced target; with offsets kept from the training set, it assigns new rows the same way.

    The loss cannot see a constant added to one cluster's logits (both of its distributions
    cancel it), so plain argmax of the logits is not what training shaped; this is.
    """
    return (logits.float() / column_temperature - offsets).softmax(dim=1)


def balanced_target(logits: torch.Tensor, column_temperature: float) -> torch.Tensor:
    """softmax over the batch (dim 0) at t_c, then each row renormalised to sum to 1."""
    return balanced_probabilities(logits, column_temperature, cluster_offsets(logits, column_temperature))


def log_balanced_prediction(logits: torch.Tensor, row_temperature: float) -> torch.Tensor:
    """log of (softmax over clusters at t_r, each column renormalised over the batch, x B / K)."""
    batch, clusters = logits.shape
    rows = (logits.float() / row_temperature).softmax(dim=1)
    return torch.log(rows / rows.sum(dim=0, keepdim=True).clamp_min(_EPS) * (batch / clusters) + _EPS)


def two_way_cross_entropy(teacher_logits: torch.Tensor, student_logits: torch.Tensor, row_temperature: float = 0.1,
                          column_temperature: float = 0.05) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean of both directions, teacher target -> student prediction, student target -> teacher prediction)."""
    teacher = teacher_logits.detach()
    forward = -(balanced_target(teacher, column_temperature) * log_balanced_prediction(student_logits, row_temperature)).sum(dim=1).mean()
    backward = -(balanced_target(student_logits, column_temperature) * log_balanced_prediction(teacher, row_temperature)).sum(dim=1).mean()
    return (forward + backward) / 2, forward, backward
