"""Keep the cluster loss from drowning the diffusion loss in the proxy words' gradient.

At the hand-over the cluster-guidance gradient reaching the extractor f is orders of
magnitude larger than the diffusion gradient, so the plain sum the paper writes trains f on
the cluster loss alone, and f forgets what warm-up distilled (measured on the 16 px digit
model: docs/benchmarks/difc.md). A fixed smaller loss weight would have to match a ratio that
depends on the backbone and drifts during training. So the copy of the proxy words that feeds the head
passes back at most `ratio` times the diffusion gradient's norm, measured in the same step;
the head itself still learns from the full cluster loss (it has no other teacher).
"""

from __future__ import annotations

import torch


class GradientShare:
    """The last steps' scale applied to the cluster gradient (1: unscaled), summed for the log.
    The sum stays a tensor on the device: reading it each step would wait for the GPU."""

    def __init__(self, ratio: float | None):
        self.ratio = ratio
        self.total: torch.Tensor | float = 0.0
        self.count = 0

    def record(self, scale: torch.Tensor) -> None:
        self.total = self.total + scale.detach()
        self.count += 1

    def mean_and_reset(self) -> float | None:
        """Mean scale since the last call (None if no step was balanced)."""
        if not self.count:
            return None
        mean = float(self.total) / self.count
        self.total, self.count = 0.0, 0
        return mean


class _BalancedCopies(torch.autograd.Function):
    """Two copies of x; backward returns grad_diffusion + s * grad_cluster with
    s = min(1, ratio * |grad_diffusion| / |grad_cluster|), both gradients of the same step."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, share: GradientShare):
        ctx.share = share
        ctx.set_materialize_grads(False)  # an unused copy (warm-up: no cluster loss) passes None, not zeros
        return x.clone(), x.clone()

    @staticmethod
    def backward(ctx, grad_diffusion: torch.Tensor | None, grad_cluster: torch.Tensor | None):
        if grad_cluster is None:
            return grad_diffusion, None
        if grad_diffusion is None:  # nothing to balance against (the diffusion branch did not reach S*)
            return grad_cluster, None
        cluster_norm = grad_cluster.float().norm()
        scale = torch.clamp(ctx.share.ratio * grad_diffusion.float().norm() / cluster_norm.clamp_min(1e-30), max=1.0)
        ctx.share.record(scale)
        return grad_diffusion + scale.to(grad_cluster.dtype) * grad_cluster, None


def balanced_copies(proxies: torch.Tensor, share: GradientShare | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(copy for the diffusion loss, copy for the cluster head); plain copies when `share` is
    None or its ratio is None (the paper's unbalanced sum) or no gradient is being recorded."""
    if share is None or share.ratio is None or not torch.is_grad_enabled() or not proxies.requires_grad:
        return proxies, proxies
    return _BalancedCopies.apply(proxies, share)
