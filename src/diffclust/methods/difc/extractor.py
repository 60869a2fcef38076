"""DiFiC's semantic extractor f: a UNet feature map z -> one proxy word S*."""

from __future__ import annotations

import torch
from torch import nn


class SemanticExtractor(nn.Module):
    """Two blocks of [2x2 conv, 2x2 max-pool], 2x2 adaptive average pool, linear to a token.

    With SD-1.5 (z = 640x32x32, 768-d tokens) the flattened pool is 768*2*2 = 3072 and the
    linear layer is 3072 -> 768, as in the paper. The hidden width defaults to the token size.
    """

    def __init__(self, in_channels: int, token_dim: int, hidden_channels: int | None = None):
        super().__init__()
        hidden = hidden_channels or token_dim
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=2),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(hidden, hidden, kernel_size=2),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.AdaptiveAvgPool2d(2),
        )
        self.project = nn.Linear(hidden * 4, token_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(batch, C, H, W) -> (batch, token_dim)."""
        return self.project(self.features(z).flatten(1))
