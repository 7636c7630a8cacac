"""A segmentation network with a mixture-of-experts layer, a reference gated network for dynviz.

After the sparsely-gated mixture of experts (Shazeer et al., ICLR 2017,
https://arxiv.org/abs/1701.06538) and the Switch Transformer's load balance (Fedus et al., JMLR
2022, https://arxiv.org/abs/2101.03961), per image instead of per token: a stem to stride 4, a
router (global average pool -> linear over ``E`` experts -> softmax), ``E`` residual expert
blocks, a 1x1 classifier and bilinear upsampling. Each input runs its ``k`` experts of largest
weight::

    out = x + sum over the k chosen experts e of w_e * expert_e(x)
    w_e = softmax of the chosen experts' logits (the router's weights renormalised over them)

Compute is sparse in training and inference alike: each expert runs only on the inputs that
chose it, and an expert no input chose is not computed. With ``k = 1`` the renormalised weight is
1 and the router learns from the load-balance loss alone (:func:`load_balance_loss`, Switch
style ``E * sum_i f_i * P_i``).

The router reports itself as a ``ROUTER`` point ``moe`` (values: the softmax weights ``(N, E)``;
ran: the chosen experts), so expert usage and load balance read from the records
(:func:`dynviz.analysis.gates.option_usage`). The graph's costs are counted at
``MoEConfig.size`` (see :mod:`dynviz.gates.skipnet` for why not at the last forward's size).

:meth:`MoENet.static` drops the experts a plan does not keep; the router is restricted to the kept
ones (with every expert some input used, the recorded inputs choose as before and the outputs are
the same).
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from dynviz.gates.collect import Decision, report
from dynviz.gates.graph import GateGraph, GatePoint
from dynviz.gates.skipnet import PIXEL_SCALE, Body
from dynviz.gates.static import check_keep, conv2d_macs, linear_macs
from dynviz.model import ConfigError

__all__ = ["MoEConfig", "MoENet", "build_moe", "load_balance_loss"]

POINT = "moe"
"""The router's gate point."""


@dataclass(frozen=True)
class MoEConfig:
    num_classes: int = 4
    channels: int = 32  # width of the stem's output and of every expert (at stride 4)
    experts: int = 4  # E
    k: int = 2  # experts each input runs
    in_channels: int = 3
    size: tuple[int, int] = (64, 64)  # input (H, W) the gate graph's MACs are counted at

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", tuple(self.size))
        if self.experts < 2 or not 1 <= self.k <= self.experts:
            raise ConfigError(
                f"moe: needs at least 2 experts and 1 <= k <= experts, not experts={self.experts} "
                f"k={self.k}"
            )
        if self.channels < 1 or self.num_classes < 1:
            raise ConfigError(
                f"moe: channels {self.channels} and num_classes {self.num_classes} must be >= 1"
            )
        if len(self.size) != 2 or min(self.size) < 1:
            raise ConfigError(f"moe: size {self.size} must be (height, width) >= 1")


def load_balance_loss(weights: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """The Switch Transformer's load-balance loss ``E * sum_i f_i * P_i`` over a batch.

    ``f_i`` is the share of the batch's expert runs that went to expert ``i`` (with top-k each
    input counts ``k`` runs), ``P_i`` the batch-mean router weight of expert ``i``. It is 1 when
    both are uniform and ``E`` when one expert takes everything; the gradient flows through
    ``P`` only.

    Args:
        weights: ``(N, E)`` the router's softmax weights.
        chosen: ``(N, E)`` bool, the experts that ran.
    """
    runs = chosen.float()  # (N, E)
    f = runs.sum(0) / runs.sum().clamp(min=1.0)  # (E,) share of the runs
    p = weights.mean(0)  # (E,)
    return weights.shape[1] * (f * p).sum()


class MoE(nn.Module):
    """A router over named residual experts; each input runs its top ``k``."""

    def __init__(self, channels: int, names: Sequence[str], k: int) -> None:
        super().__init__()
        self.channels = channels
        self.k = min(k, len(names))
        # one expert (or none) needs no router: it runs for every input with weight 1
        self.router = nn.Linear(channels, len(names)) if len(names) > 1 else None
        self.experts = nn.ModuleDict({name: Body(channels) for name in names})

    def forward(self, x: torch.Tensor, gates: dict[str, Decision]) -> torch.Tensor:
        names = list(self.experts)
        if self.router is None:
            return x + self.experts[names[0]](x) if names else x
        logits = self.router(x.mean((2, 3)))  # (N, E)
        weights = logits.softmax(1)  # (N, E)
        top = logits.topk(self.k, dim=1).indices  # (N, k)
        chosen = torch.zeros_like(weights, dtype=torch.bool).scatter_(1, top, True)  # (N, E)
        mix = logits.masked_fill(~chosen, float("-inf")).softmax(1)  # (N, E), 0 where not chosen
        report(POINT, weights, chosen)
        gates[POINT] = Decision(weights, chosen)
        out = x
        for e, name in enumerate(names):
            index = chosen[:, e].nonzero()[:, 0]  # (n,) the inputs that chose expert e
            if index.numel() == 0:
                continue
            y = self.experts[name](x[index]) * mix[index, e, None, None, None]  # (n, C, H, W)
            out = out.index_add(0, index, y)
        return out

    def restrict(self, names: Collection[str]) -> MoE:
        """A copy with only the experts ``names`` (in this layer's order) and the router's rows
        of those experts."""
        order = [n for n in self.experts if n in set(names)]
        out = MoE(self.channels, order, self.k)
        for name in order:
            out.experts[name].load_state_dict(self.experts[name].state_dict())
        if out.router is not None and self.router is not None:
            rows = [list(self.experts).index(n) for n in order]
            with torch.no_grad():
                out.router.weight.copy_(self.router.weight[rows])
                out.router.bias.copy_(self.router.bias[rows])
        return out


class MoENet(nn.Module):
    """Stem to stride 4, a mixture-of-experts layer, a 1x1 classifier, upsampling."""

    def __init__(self, config: MoEConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.stem1 = nn.Conv2d(config.in_channels, c, 3, stride=2, padding=1)
        self.stem2 = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.moe = MoE(c, [f"expert{e}" for e in range(config.experts)], config.k)
        self.head = nn.Conv2d(c, config.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` images -> ``(N, num_classes, H, W)`` logits."""
        return self.forward_gates(x)[0]

    def forward_gates(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Decision]]:
        """The logits and the router's weights and choices (the weights keep their gradient:
        what a load-balance loss needs in training)."""
        gates: dict[str, Decision] = {}
        size = x.shape[-2:]  # (H, W)
        h = self.stem1(x * PIXEL_SCALE)  # (N, C, H/2, W/2)
        h = self.stem2(F.relu(h))  # (N, C, H/4, W/4)
        h = self.moe(h, gates)  # same shape
        logits = self.head(F.relu(h))  # (N, K, H/4, W/4)
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits, gates  # (N, K, H, W)

    # ------------------------------------------------------------------------------ costs
    @property
    def expert_names(self) -> tuple[str, ...]:
        return tuple(self.moe.experts)

    def _macs(self, size: tuple[int, int]) -> tuple[int, dict[str, int]]:
        """The MACs every input pays (stem, router, head) and each expert's, for one input."""
        stem1, hw = conv2d_macs(self.stem1, size)
        stem2, hw = conv2d_macs(self.stem2, hw)
        router = linear_macs(self.moe.router) if self.moe.router is not None else 0
        head = conv2d_macs(self.head, hw)[0]
        experts = {
            name: conv2d_macs(body.conv1, hw)[0] + conv2d_macs(body.conv2, hw)[0]
            for name, body in self.moe.experts.items()
        }
        return stem1 + stem2 + router + head, experts

    def macs(self, size: tuple[int, int] | None = None) -> int:
        """The MACs of one input of ``size`` (default ``config.size``): the base and its ``k``
        most expensive experts (the experts are alike: any ``k`` of them)."""
        base, experts = self._macs(tuple(size or self.config.size))
        return base + sum(sorted(experts.values(), reverse=True)[: self.moe.k])

    def gate_graph(self, size: tuple[int, int] | None = None) -> GateGraph:
        """The router as a ``ROUTER`` point (top-``k``), each expert's MACs for one input of
        ``size`` (default ``config.size``); ``base_macs`` is the stem, router and head.

        Raises:
            ConfigError: the network has no router left (a static network of one expert or
                none).
        """
        size = tuple(size or self.config.size)
        base, experts = self._macs(size)
        if self.moe.router is None:
            raise ConfigError(
                "this moe network has no router (a static network): nothing to record"
            )
        point = GatePoint.router(
            POINT, list(experts), k=self.moe.k, macs=[float(m) for m in experts.values()]
        )
        return GateGraph((point,), name="moe", base_macs=float(base), meta={"size": list(size)})

    # ---------------------------------------------------------------------- static networks
    def static(self, keep: Mapping[str, Collection[str]]) -> MoENet:
        """A network with only the experts ``keep`` keeps (a copy; the router restricted to
        them, each input running its top ``min(k, kept)`` of them; one kept expert runs for
        every input, none leaves the stem and head).

        Args:
            keep: ``{"moe": experts}`` (:meth:`dynviz.analysis.gates.CommonPlan.keep`).

        Raises:
            ConfigError: ``keep`` does not match the gate graph.
        """
        kept = check_keep(self.gate_graph(), keep)[POINT]
        net = copy.deepcopy(self)
        net.moe = self.moe.restrict(kept)
        return net.train(self.training)


def build_moe(
    *,
    num_classes: int,
    experts: int = 4,
    k: int = 2,
    channels: int = 32,
    size: tuple[int, int] = (64, 64),
) -> MoENet:
    """A :class:`MoENet` (see :class:`MoEConfig` for the arguments); weights from torch's
    default initialisation (seed it with ``torch.manual_seed``)."""
    config = MoEConfig(
        num_classes=num_classes, channels=channels, experts=experts, k=k, size=tuple(size)
    )
    return MoENet(config)
