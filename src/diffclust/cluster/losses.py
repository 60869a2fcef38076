"""Losses that shape cluster assignments: neighbour consistency and a balanced-usage entropy (or a size prior)."""

from __future__ import annotations

import torch

_EPS = 1e-8


def neighbour_consistency_loss(probs: torch.Tensor, neighbour_probs: torch.Tensor) -> torch.Tensor:
    """-mean_i log(p_i . p_j): a point and its neighbour should fall in the same cluster.

    `neighbour_probs` is (batch, K) for one neighbour per point, or (batch, n, K) for n
    neighbours each (the mean runs over all pairs).
    """
    if neighbour_probs.ndim == 3:
        agreement = torch.einsum("bk,bnk->bn", probs, neighbour_probs)
    else:
        agreement = (probs * neighbour_probs).sum(dim=1)
    return -torch.log(agreement.clamp_min(_EPS)).mean()


def entropy(distribution: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of one probability vector."""
    return -(distribution * torch.log(distribution.clamp_min(_EPS))).sum()


class AssignmentMemoryBank:
    """The last `size` assignment vectors, so the entropy of the mean assignment is estimated
    over more than one small batch (a batch of 32 cannot show 100 clusters in use)."""

    def __init__(self, size: int, n_clusters: int):
        self.size = size
        self.n_clusters = n_clusters
        self.entries = torch.zeros(0, n_clusters)

    def __len__(self) -> int:
        return len(self.entries)

    def push(self, probs: torch.Tensor) -> None:
        self.entries = torch.cat([self.entries, probs.detach().float().cpu()])[-self.size :] if self.size else self.entries

    def mean_with(self, probs: torch.Tensor) -> torch.Tensor:
        """Mean assignment over the bank and the current batch (gradients reach the batch only)."""
        stored = self.entries.to(probs.device, probs.dtype)
        return torch.cat([stored, probs]).mean(dim=0)

    def state(self) -> torch.Tensor:
        return self.entries.clone()

    def load_state(self, entries: torch.Tensor) -> None:
        self.entries = entries.detach().float().cpu()[-self.size :] if self.size else entries[:0]


def cluster_guidance_loss(
    probs: torch.Tensor,
    neighbour_probs: torch.Tensor,
    bank: AssignmentMemoryBank,
    entropy_weight: float = 5.0,
    size_prior: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DiFiC's clustering loss: consistency - lambda * H(mean assignment), lambda = w (U + N) / N.

    U is the number of bank entries and N the batch size: the scaling keeps the entropy's
    gradient on the batch equal to w whatever the bank holds. With `size_prior` (cluster
    shares summing to 1) the entropy becomes -KL(mean assignment || prior): it pulls cluster
    sizes towards the prior instead of towards equal sizes (a uniform prior gives the paper's
    loss plus a constant). Returns (total, consistency, entropy of the mean assignment).
    """
    consistency = neighbour_consistency_loss(probs, neighbour_probs)
    batch = probs.shape[0]
    weight = entropy_weight * (len(bank) + batch) / batch
    mean = bank.mean_with(probs)
    spread = entropy(mean)
    balance = spread
    if size_prior is not None:
        balance = spread + (mean * torch.log(size_prior.to(mean.device, mean.dtype).clamp_min(_EPS))).sum()
    return consistency - weight * balance, consistency, spread


def cluster_shares(labels, n_clusters: int) -> torch.Tensor:
    """Each cluster's share of `labels`, add-one smoothed so that no share is zero."""
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long).flatten(), minlength=n_clusters).float()
    return (counts + 1) / (counts.sum() + n_clusters)
