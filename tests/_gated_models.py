"""Tiny gated networks for the gate-graph command tests, built through entry points
(``_gated_models:build``): plain ``nn.Module`` s whose gates :func:`dynviz.gates.watch` attaches.

``TinyGated`` decides by hand-computable rules:

- ``router`` (a top-1 router over three experts): scores ``[s, -s, 0]`` with ``s`` the sum of the
  image's channel means, so ``expert0`` runs where the image mean is above 0, ``expert1`` where
  it is below, and ``expert2`` never;
- ``blocks.0.gate``: a constant probability ``sigmoid(5)``: the block always runs;
- ``blocks.1.gate``: ``sigmoid(-5)``: the block never runs.

Costs (MACs per input): base 1000, experts 100, 200, 400, blocks 50 each.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch
from torch import nn

from dynviz.gates import Sigmoid, TopK, watch

BASE_MACS = 1000.0
EXPERT_MACS = [100.0, 200.0, 400.0]
BLOCK_MACS = 50.0


class Router(nn.Module):
    """Expert scores from the image's channel means: ``[s, -s, 0]``, ``s`` their sum."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [0, 0, 0]]))
            self.fc.bias.zero_()

    def forward(self, image):
        return self.fc(image.mean((2, 3)))  # (N, 3)


class Gate(nn.Module):
    """Run probability that ignores the input: ``sigmoid(bias)``."""

    def __init__(self, channels: int, bias: float) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, 1)
        nn.init.zeros_(self.fc.weight)
        nn.init.constant_(self.fc.bias, bias)

    def forward(self, x):
        return torch.sigmoid(self.fc(x.mean((2, 3))))  # (N, 1)


class Block(nn.Module):
    """A residual block that runs only on the inputs whose ``gate`` gives more than 0.5 (a
    ``Gate`` of that bias when ``gate`` is a number): real skipping."""

    def __init__(self, channels: int, gate: nn.Module | float) -> None:
        super().__init__()
        self.gate = gate if isinstance(gate, nn.Module) else Gate(channels, float(gate))
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())

    def forward(self, x):
        run = self.gate(x).reshape(-1) > 0.5
        out = x.clone()
        if run.any():
            out[run] = x[run] + self.body(x[run])
        return out


class TinyGated(nn.Module):
    def __init__(self, classes: int = 4, width: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.router = Router()
        self.experts = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(3))
        self.blocks = nn.ModuleList([Block(width, 5.0), Block(width, -5.0)])
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        choice = self.router(x).argmax(1)  # (N,)
        h = torch.relu(self.stem(x))
        out = h.clone()
        for index, expert in enumerate(self.experts):
            chosen = choice == index
            if chosen.any():
                out[chosen] = h[chosen] + expert(h[chosen])
        for block in self.blocks:
            out = block(out)
        return self.head(out)

    def static(self, keep: Mapping[str, Collection[str]]) -> nn.Module:
        """The static network of a plan: the kept experts (summed) and the blocks whose only
        kept option is ``run``."""
        experts = [int(name.removeprefix("expert")) for name in keep.get("router", ())]
        blocks = [i for i in range(2) if tuple(keep.get(f"blocks.{i}.gate", ())) == ("run",)]
        return StaticTiny(self, experts, blocks)


class StaticTiny(nn.Module):
    def __init__(self, net: TinyGated, experts: list[int], blocks: list[int]) -> None:
        super().__init__()
        self.stem = net.stem
        self.experts = nn.ModuleList(net.experts[i] for i in experts)
        self.bodies = nn.ModuleList(net.blocks[i].body for i in blocks)
        self.head = net.head

    def forward(self, x):
        h = torch.relu(self.stem(x))
        out = h + sum((expert(h) for expert in self.experts), torch.zeros_like(h))
        for body in self.bodies:
            out = out + body(out)
        return self.head(out)


def watch_tiny(model: TinyGated) -> TinyGated:
    watch(
        model,
        {
            "router": TopK(k=1, names=["expert0", "expert1", "expert2"], macs=EXPERT_MACS),
            "blocks.0.gate": Sigmoid(macs=BLOCK_MACS),
            "blocks.1.gate": Sigmoid(macs=BLOCK_MACS),
        },
        name="tiny-gated",
        base_macs=BASE_MACS,
    )
    return model


def build(classes: int = 4, width: int = 4) -> nn.Module:
    """The entry point: a watched :class:`TinyGated`."""
    torch.manual_seed(0)
    return watch_tiny(TinyGated(classes, width))


class NoStatic(TinyGated):
    static = None  # a gated network without a static network


def build_no_static() -> nn.Module:
    torch.manual_seed(0)
    return watch_tiny(NoStatic())


def build_plain() -> nn.Module:
    """A network without gates."""
    return nn.Conv2d(3, 4, 1)


def build_number() -> int:
    return 3


NOT_CALLABLE = 3
