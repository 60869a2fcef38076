"""DiEC's learnable part: a light residual mapping of the UNet feature and K cluster centres."""

from __future__ import annotations

import torch
from torch import nn

from diffclust.cluster.consensus import consensus_partition
from diffclust.cluster.kmeans import fit_kmeans, half_gap_scale, student_t_assignments
from diffclust.cluster.manifold import umap_partition


class ResidualMapping(nn.Module):
    """e = u + MLP(u) with u the standardised feature; the MLP's last layer starts at zero, so
    training starts from the UNet's own geometry (where the search found clusters) and bends it.

    Standardisation is one global scale (plus per-dimension centring): it keeps the relative
    weight of the dimensions that made the features clusterable.
    """

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or min(dim, 512)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(()))
        self.block = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.block[-1].weight)
        nn.init.zeros_(self.block[-1].bias)

    @torch.no_grad()
    def standardise_on(self, features: torch.Tensor) -> None:
        self.mean.copy_(features.mean(dim=0))
        self.scale.copy_((features - self.mean).pow(2).sum(dim=1).mean().sqrt().clamp_min(1e-8))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        unit = (features.float() - self.mean) / self.scale
        return unit + self.block(unit)


class DiECNetwork(nn.Module):
    """Feature -> embedding -> Student-t soft assignment q over K learnable centres."""

    def __init__(self, dim: int, n_clusters: int, hidden: int | None = None):
        super().__init__()
        self.mapping = ResidualMapping(dim, hidden)
        self.centres = nn.Parameter(torch.zeros(n_clusters, dim))
        #: unit of squared distance in the kernel: the centres' half-gap at initialisation
        self.register_buffer("kernel_scale", torch.ones(()))

    @torch.no_grad()
    def initialise(self, features: torch.Tensor, seed: int, init: str = "kmeans") -> torch.Tensor:
        """Standardise on the data, then put the centres at k-means of the initial embedding
        (or at the means of the clusters of the UMAP or consensus start partition). Returns the
        start partition (N,), the target of the self-labelling epochs."""
        self.mapping.standardise_on(features)
        embedding = self.embed_all(features)
        k = self.centres.shape[0]
        if init in ("umap", "consensus"):
            start = (umap_partition(embedding, k, seed, "DiEC's init='umap' (--init umap)") if init == "umap"
                     else consensus_partition(embedding, k, seed).labels)
            labels = torch.from_numpy(start).to(embedding.device)
            sums = torch.zeros_like(self.centres).index_add_(0, labels, embedding)
            centres = sums / torch.bincount(labels, minlength=len(sums)).clamp_min(1)[:, None]
        else:
            centres, start = fit_kmeans(embedding, k, seed=seed)
            centres, labels = torch.from_numpy(centres), torch.from_numpy(start)
        self.centres.copy_(centres)
        self.kernel_scale.fill_(half_gap_scale(self.centres.detach()))
        return labels.long().cpu()

    @torch.no_grad()
    def embed_all(self, features: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        return torch.cat([self.mapping(part) for part in features.split(chunk)])

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.mapping(features)
        return embedding, student_t_assignments(embedding, self.centres, scale=float(self.kernel_scale))
