"""Helpers shared by the model tests."""

from __future__ import annotations

import torch


def randomise(
    model: torch.nn.Module,
    *,
    seed: int = 1,
    spread: float = 0.1,
    gate_bias: tuple[float, float] | None = None,
) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters (BN folding and the
    skip/soft equivalences must use all four), and optionally draw the gates' output biases
    from ``gate_bias`` (a range that closes some paths). Returns ``model``."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * spread)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * spread)
    if gate_bias is not None:
        lo, hi = gate_bias
        for cell in model.cells.values():
            bias = cell.gate.conv2.bias
            bias.data.copy_(torch.rand(bias.shape, generator=g) * (hi - lo) + lo)
    return model
