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
    """f, and g for `n_clusters` clusters when `with_head` (cluster guidance)."""

    def __init__(self, feature_channels: int, token_dim: int, n_clusters: int, with_head: bool,
                 extractor_hidden: int | None = None):
        super().__init__()
        self.extractor = SemanticExtractor(feature_channels, token_dim, extractor_hidden)
        self.head = ClusterHead(token_dim, n_clusters) if with_head else None
        #: how much of the cluster loss's gradient reaches the extractor (see balance.py); None: all of it
        self.gradient_share: GradientShare | None = None

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
