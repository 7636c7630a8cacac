"""A routing cell (Sec. 3.2): cell operation, scale transforms and soft conditional gate.

Glossary (paper -> code): X_s^l -> ``x`` (summed node input); H_s^l = O(X) + X -> ``h``;
alpha_{s->j}^l -> ``alpha`` ``(B, num_paths)``; T_{s->j} -> ``transforms[direction]``;
Y_j^l = alpha * T(ReLU(H)) -> the outputs routed to the next layer.

The cell only holds modules. The network decides which samples run what (see
``dynviz.model.network``), so that closed paths and cells are never computed.
"""

from __future__ import annotations

import torch
from torch import nn

from dynviz.model.config import Direction
from dynviz.model.ops import DownTransform, SepConv, SoftConditionalGate, UpTransform

__all__ = ["RoutingCell"]


class RoutingCell(nn.Module):
    """Cell at one (layer, scale) with the transforms of ``directions`` and an optional gate."""

    def __init__(
        self,
        channels: int,
        directions: tuple[Direction, ...],
        *,
        gate: SoftConditionalGate | None = None,
    ) -> None:
        super().__init__()
        self.directions = directions
        self.op = SepConv(channels)
        if Direction.UP in directions:
            self.up = UpTransform(channels)
        if Direction.DOWN in directions:
            self.down = DownTransform(channels)
        self.gate = gate

    def hidden(self, x: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
        """ReLU(H) with H = O(X) + X (Eq. 4). Every transform starts from it.

        ``inplace`` (only without autograd) adds X and applies the ReLU in O(X)'s fresh output
        buffer instead of allocating temporaries: the same values. With BN folded, CPU inference
        runs it as fused kernels (:meth:`SepConv.hidden_fused`)."""
        if self.op.runs_fused(x):
            return self.op.hidden_fused(x)
        if not inplace:
            return torch.relu(self.op(x) + x)
        h = self.op(x)  # a fresh tensor: BN (or the folded conv) output
        h += x
        return h.relu_()

    def transform(self, direction: Direction, r: torch.Tensor) -> torch.Tensor:
        """T_{s->j} applied to ReLU(H): keep is the identity on ReLU(H)."""
        if direction is Direction.KEEP:
            return r
        return self.up(r) if direction is Direction.UP else self.down(r)
