"""DEC-style self-training: a sharpened target from the soft assignments, and the KL towards it."""

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


def dec_kl_loss(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) summed over clusters, averaged over points (the target p carries no gradient)."""
    p = p.detach()
    return (p * (torch.log(p.clamp_min(_EPS)) - torch.log(q.clamp_min(_EPS)))).sum(dim=1).mean()
