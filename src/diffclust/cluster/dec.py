"""DEC-style self-training: the targets (sharpened assignments, or a fixed partition) and the KL towards them."""

from __future__ import annotations

import torch

_EPS = 1e-12


def target_distribution(q: torch.Tensor) -> torch.Tensor:
    """p_ik = (q_ik^2 / f_k) / sum_k' (q_ik'^2 / f_k'), with f_k = sum_i q_ik (DEC, eq. 3).

    Squaring sharpens confident assignments; dividing by the cluster frequency keeps large
    clusters from swallowing the rest.
    """
    weight = q.pow(2) / q.sum(dim=0, keepdim=True).clamp_min(_EPS)
    return weight / weight.sum(dim=1, keepdim=True)


def partition_target(labels: torch.Tensor, n_clusters: int, smoothing: float = 0.1) -> torch.Tensor:
    """The one-hot rows of a hard partition, label-smoothed: (1 - smoothing) on the item's cluster
    plus smoothing / K everywhere (each row sums to 1).

    Self-labelling: fitting q to a good start partition before DEC's sharpened target takes over
    keeps DEC's first epochs from pulling boundary items towards the nearest centre, where the
    start's clusters (found in a UMAP embedding) are not nearest-centre shaped.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    one_hot = torch.nn.functional.one_hot(labels.long(), n_clusters).float()
    return one_hot * (1.0 - smoothing) + smoothing / n_clusters


def dec_kl_loss(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) summed over clusters, averaged over points (the target p carries no gradient)."""
    p = p.detach()
    return (p * (torch.log(p.clamp_min(_EPS)) - torch.log(q.clamp_min(_EPS)))).sum(dim=1).mean()
