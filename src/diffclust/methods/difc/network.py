"""The trainable part of DiFiC: extractor f and (optional) cluster head g in one module,
so one forward call (and one DDP synchronisation) serves a whole training step."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from diffclust.cluster.heads import ClusterHead
from diffclust.cluster.kmeans import kmeans_confidences
from diffclust.methods.difc.balance import GradientShare, balanced_copies
from diffclust.methods.difc.extractor import SemanticExtractor


class DiFiCNetwork(nn.Module):
    """`n_clusters` None (K still to be chosen, n_clusters="auto") builds no head yet: `add_head`
    builds it once K is known, at the end of warm-up."""

    def __init__(self, feature_channels: int, token_dim: int, n_clusters: int | None, with_head: bool,
                 extractor_hidden: int | None = None):
        super().__init__()
        self.extractor = SemanticExtractor(feature_channels, token_dim, extractor_hidden)
        self.head = ClusterHead(token_dim, n_clusters) if with_head and n_clusters is not None else None
        #: how much of the cluster loss's gradient reaches the extractor (see balance.py); None: all of it
        self.gradient_share: GradientShare | None = None

    def add_head(self, n_clusters: int, seed: int) -> ClusterHead:
        """Build g for `n_clusters` clusters (seeded, on the extractor's device) and return it."""
        device = next(self.extractor.parameters()).device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = ClusterHead(self.extractor.project.out_features, n_clusters).to(device)
        return self.head

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z -> (proxy words S*, cluster logits g(S*) or None); in training, the head reads a copy
        of S* whose gradient `gradient_share` scales."""
        proxies = self.extractor(z)
        if self.head is None:
            return proxies, None
        for_diffusion, for_head = balanced_copies(proxies, self.gradient_share)
        return for_diffusion, self.head(for_head)


@torch.no_grad()
def assign_probabilities(head: nn.Module, proxies: torch.Tensor) -> torch.Tensor:
    """The head's cluster probabilities in prediction mode (running statistics), mode restored."""
    was_training = head.training
    probs = head.eval()(proxies).float().softmax(dim=1)
    head.train(was_training)
    return probs


def assign(proxies: torch.Tensor, head: nn.Module | None, centres: torch.Tensor | np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Cluster and confidence of each proxy word: head argmax, or the nearest k-means centre."""
    with torch.no_grad():
        if head is not None:
            probs = assign_probabilities(head, proxies)
        elif centres is not None:
            probs = kmeans_confidences(proxies, torch.as_tensor(centres, device=proxies.device))
        else:
            raise RuntimeError("Neither a cluster head nor k-means centres: the model is not fitted.")
    confidence, labels = probs.max(dim=1)
    return labels.cpu().numpy().astype(np.int64), confidence.cpu().numpy()
