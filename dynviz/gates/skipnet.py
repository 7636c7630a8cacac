"""A block-skipping residual segmentation network, a reference gated network for dynviz.

In the style of SkipNet (Wang et al., ECCV 2018, https://arxiv.org/abs/1711.09485) and
ConvNet-AIG (Veit and Belongie, ECCV 2018, https://arxiv.org/abs/1711.11503): a stem, stages of
residual blocks (each stage after the first starts with a stride-2 convolution), a 1x1 classifier
and bilinear upsampling to the input size. Each block has a small gate, global pooling -> linear
-> sigmoid, the probability ``p = sigmoid(l)`` that the block runs for this input. The gate pools
the block's input by its average (``gate_pool="avg"``, as in the papers) or by its average and
its maximum side by side (``gate_pool="avgmax"``: a linear layer over ``2C`` features, so that a
gate sees a small bright object that an average over the image washes out).

- training (``model.train()``), ``gate_mode="soft"``: ``out = x + p * body(x)``; every block
  runs for every input and the gates get gradients, so a budget loss
  (:func:`dynviz.train.gated.train_gated`) can act on them. The blocks tend to learn to work
  at a scale of ``p``, not to be on or off, and the gates to settle on one route for every input;
- training, ``gate_mode="gumbel"`` (ConvNet-AIG's straight-through Gumbel-sigmoid): logistic
  noise ``g = log(u) - log(1 - u)``, ``u ~ U(0, 1)`` (the difference of two Gumbel samples), is
  added to the logit, ``s = sigmoid((l + g) / tau)``, and the forward uses the hard decision
  ``z = [s > 0.5]`` (``out = x + z * body(x)``) while the gradient is the soft one's,
  ``d z / d l := d s / d l`` (:func:`gumbel_sigmoid`). Training sees the on/off network that
  inference runs, and the noise makes each input's route a sample of ``p``, so the gates learn
  which inputs need a block. The noise comes from torch's global generator
  (``torch.manual_seed`` makes it reproducible);
- inference (``model.eval()``), either mode: no noise, hard decisions ``p > threshold`` and
  real skipping: only the inputs whose gate opens are gathered and run through the body
  (``out = x + body(x)``), the others pass through; a block no input runs is not computed.

In every mode a gate reports ``p`` as its value (what the budget loss and the records' expected
cost use) and the decision the forward took (in ``gumbel`` training, the noisy ``z``).

Every gate reports itself (:func:`dynviz.gates.report`, points ``block1``, ``block2``...), so
:func:`dynviz.record.record` records the network as it is. The gate graph's costs are counted at
the configured ``size`` (``SkipNetConfig.size``, or ``gate_graph(size=...)``), not at the size of
the last forward: a graph is asked for before the first forward (by ``record``), and the records
of one folder share one graph, so record images of that size.

:meth:`SkipNet.static` cuts the network a plan keeps (:meth:`dynviz.analysis.gates.CommonPlan.keep`)
into a plain network of the blocks whose ``run`` option is kept, without gates.

::

    model = build_skipnet(num_classes=4, blocks=(2, 2), channels=(16, 32))
    model.gate_graph()          # GateGraph: block1..block4 (SKIP points), costs at 64x64
    static = model.static({"block1": ("run",), "block2": (), "block3": ("run",), "block4": ()})
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from dynviz.gates.collect import Decision, report
from dynviz.gates.graph import GateGraph, GatePoint
from dynviz.gates.static import check_keep, conv2d_macs, linear_macs
from dynviz.model import ConfigError

__all__ = [
    "GATE_MODES",
    "GATE_POOLS",
    "SkipNet",
    "SkipNetConfig",
    "build_skipnet",
    "gumbel_sigmoid",
]

GATE_MODES = ("soft", "gumbel")
"""How the gates act in training (inference is hard in both): see the module's docstring."""
GATE_POOLS = ("avg", "avgmax")
"""What a gate pools from its block's input: the average, or the average and the maximum."""

PIXEL_SCALE = 1.0 / 58.0
"""dynviz's images are mean-subtracted pixels of 0..255 (standard deviation 1); the stem scales
them to about unit variance, as these small networks have no normalisation layers."""


@dataclass(frozen=True)
class SkipNetConfig:
    num_classes: int = 4
    channels: tuple[int, ...] = (16, 32)  # width of each stage (stride 2, 4, 8... of the input)
    blocks: tuple[int, ...] = (2, 2)  # gated residual blocks per stage
    in_channels: int = 3
    threshold: float = 0.5  # a block runs for an input where its gate's p > threshold
    gate_bias: float = 2.0  # the gates' initial logit: sigmoid(2) = 0.88, every block open
    size: tuple[int, int] = (64, 64)  # input (H, W) the gate graph's MACs are counted at
    gate_mode: str = "soft"  # training: "soft" (x + p * body) or "gumbel" (straight-through)
    tau: float = 1.0  # the Gumbel-sigmoid's temperature (gate_mode="gumbel")
    gate_pool: str = "avg"  # the gates' pooling: "avg" or "avgmax"

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "blocks", tuple(self.blocks))
        object.__setattr__(self, "size", tuple(self.size))
        if not self.channels or len(self.channels) != len(self.blocks):
            raise ConfigError(
                f"skipnet: channels {self.channels} and blocks {self.blocks} need one entry per "
                "stage"
            )
        if min(self.channels) < 1 or min(self.blocks) < 0 or sum(self.blocks) < 1:
            raise ConfigError(
                f"skipnet: channels {self.channels} must be >= 1 and blocks {self.blocks} >= 0 "
                "with at least one block"
            )
        if self.num_classes < 1 or not 0.0 < self.threshold < 1.0:
            raise ConfigError(
                f"skipnet: num_classes {self.num_classes} must be >= 1 and threshold "
                f"{self.threshold} in (0, 1)"
            )
        if len(self.size) != 2 or min(self.size) < 1:
            raise ConfigError(f"skipnet: size {self.size} must be (height, width) >= 1")
        if self.gate_mode not in GATE_MODES or self.gate_pool not in GATE_POOLS:
            raise ConfigError(
                f"skipnet: gate_mode {self.gate_mode!r} must be one of {list(GATE_MODES)} and "
                f"gate_pool {self.gate_pool!r} one of {list(GATE_POOLS)}"
            )
        if not self.tau > 0.0:
            raise ConfigError(f"skipnet: tau {self.tau} must be > 0")


def gumbel_sigmoid(logits: torch.Tensor, tau: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """ConvNet-AIG's straight-through Gumbel-sigmoid: ``(z, run)``, ``z`` hard 0/1 in the
    forward with the gradient of the soft ``sigmoid((logits + g) / tau)``, ``g`` logistic noise
    from torch's global generator; ``run`` is ``z > 0.5`` as booleans."""
    u = torch.rand_like(logits).clamp_(1e-6, 1.0 - 1e-6)
    soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / tau)
    run = soft > 0.5
    hard = run.to(soft.dtype)
    return hard - soft.detach() + soft, run


class Gate(nn.Module):
    """A block's gate: global pool (average, or average and maximum) -> linear -> the logit
    ``l`` (:meth:`logit`); ``forward`` gives the probability ``sigmoid(l)``."""

    def __init__(self, channels: int, bias: float, pool: str = "avg") -> None:
        super().__init__()
        self.pool = pool
        self.fc = nn.Linear(channels * (2 if pool == "avgmax" else 1), 1)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.constant_(self.fc.bias, bias)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean((2, 3))  # (N, C)
        if self.pool == "avgmax":
            pooled = torch.cat([pooled, x.amax((2, 3))], 1)  # (N, 2C)
        return self.fc(pooled)[:, 0]  # (N,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(x))  # (N,)


class Body(nn.Module):
    """A pre-activation residual body: relu -> conv3x3 -> relu -> conv3x3."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x))))


class Block(nn.Module):
    """A residual block with a run/skip gate (``gate`` None: a static block, it always runs)."""

    def __init__(self, name: str, channels: int, config: SkipNetConfig) -> None:
        super().__init__()
        self.name = name
        self.threshold = config.threshold
        self.mode = config.gate_mode
        self.tau = config.tau
        self.gate: Gate | None = Gate(channels, config.gate_bias, config.gate_pool)
        self.body = Body(channels)

    def forward(self, x: torch.Tensor, gates: dict[str, Decision]) -> torch.Tensor:
        if self.gate is None:
            return x + self.body(x)
        gumbel = self.training and self.mode == "gumbel"
        if gumbel:  # straight-through: hard z forward, soft gradient
            logit = self.gate.logit(x)  # (N,)
            p = torch.sigmoid(logit)  # (N,) probability of running
            z, run = gumbel_sigmoid(logit, self.tau)  # (N,) 0/1 and its booleans
        else:
            p = self.gate(x)  # (N,) probability of running
            run = p > self.threshold  # (N,) the hard decision
        report(self.name, p, run)
        gates[self.name] = Decision(torch.stack([1.0 - p, p], 1), torch.stack([~run, run], 1))
        if gumbel:  # every input computes the body (for the gradient); z keeps or drops it
            return x + z[:, None, None, None] * self.body(x)
        if self.training:  # soft: every input runs the body, scaled by its p
            return x + p[:, None, None, None] * self.body(x)
        index = run.nonzero()[:, 0]  # (n,) the inputs that run the block
        if index.numel() == 0:
            return x
        if index.numel() == x.shape[0]:
            return x + self.body(x)
        part = x[index]  # (n, C, H, W)
        return x.index_copy(0, index, part + self.body(part))


class Stage(nn.Module):
    """A stride-2 convolution into the stage's width (none for the first stage), then blocks."""

    def __init__(self, down: nn.Conv2d | None, blocks: list[Block]) -> None:
        super().__init__()
        self.down = down
        self.blocks = nn.ModuleList(blocks)


class SkipNet(nn.Module):
    """A residual segmentation network whose blocks each decide per input whether to run."""

    def __init__(self, config: SkipNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.stem = nn.Conv2d(config.in_channels, c[0], 3, stride=2, padding=1)
        stages, count = [], 0
        for s, (width, n) in enumerate(zip(c, config.blocks, strict=True)):
            down = None if s == 0 else nn.Conv2d(c[s - 1], width, 3, stride=2, padding=1)
            names = [f"block{count + i + 1}" for i in range(n)]
            stages.append(Stage(down, [Block(name, width, config) for name in names]))
            count += n
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(c[-1], config.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` images -> ``(N, num_classes, H, W)`` logits."""
        return self.forward_gates(x)[0]

    def forward_gates(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Decision]]:
        """The logits and each gate's values and decisions (values keep their gradient: what
        a budget loss needs in training)."""
        gates: dict[str, Decision] = {}
        size = x.shape[-2:]  # (H, W)
        h = self.stem(x * PIXEL_SCALE)  # (N, C0, H/2, W/2)
        for stage in self.stages:
            if stage.down is not None:
                h = stage.down(F.relu(h))  # (N, Cs, H/2^(s+1), W/2^(s+1))
            for block in stage.blocks:
                h = block(h, gates)  # same shape
        logits = self.head(F.relu(h))  # (N, K, h, w)
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits, gates  # (N, K, H, W)

    # ------------------------------------------------------------------------------ costs
    def blocks(self) -> list[Block]:
        return [block for stage in self.stages for block in stage.blocks]

    def _macs(self, size: tuple[int, int]) -> tuple[int, dict[str, int]]:
        """The MACs every input pays (stem, stride-2 convolutions, gates, head and the blocks
        without a gate) and each gated block's body, for one input of ``size``."""
        base, hw = conv2d_macs(self.stem, size)
        gated = {}
        for stage in self.stages:
            if stage.down is not None:
                macs, hw = conv2d_macs(stage.down, hw)
                base += macs
            for block in stage.blocks:
                body = conv2d_macs(block.body.conv1, hw)[0] + conv2d_macs(block.body.conv2, hw)[0]
                if block.gate is None:
                    base += body
                else:
                    base += linear_macs(block.gate.fc)
                    gated[block.name] = body
        base += conv2d_macs(self.head, hw)[0]
        return base, gated

    def macs(self, size: tuple[int, int] | None = None) -> int:
        """The MACs of one input of ``size`` (default ``config.size``) when every block runs:
        a static network's exact cost, a dynamic one's largest."""
        base, gated = self._macs(tuple(size or self.config.size))
        return base + sum(gated.values())

    def gate_graph(self, size: tuple[int, int] | None = None) -> GateGraph:
        """The gates as ``SKIP`` points, with each block's MACs for one input of ``size``
        (default ``config.size``); ``base_macs`` is the stem, stride-2 convolutions, gates,
        head and any block without a gate.

        Raises:
            ConfigError: the network has no gate left (a static network).
        """
        size = tuple(size or self.config.size)
        base, gated = self._macs(size)
        if not gated:
            raise ConfigError("this skipnet has no gates (a static network): nothing to record")
        return GateGraph(
            tuple(GatePoint.skip(name, macs=float(m)) for name, m in gated.items()),
            name="skipnet",
            base_macs=float(base),
            meta={"size": list(size), "threshold": self.config.threshold},
        )

    # ---------------------------------------------------------------------- static networks
    def static(self, keep: Mapping[str, Collection[str]], *, keep_gates: bool = False) -> SkipNet:
        """A static network of the blocks whose ``run`` option ``keep`` keeps, without gates
        (a copy that starts from the dynamic network's weights).

        Args:
            keep: ``{point: options}`` for every gate point
                (:meth:`dynviz.analysis.gates.CommonPlan.keep`); a block runs if ``"run"`` is
                among its options and is dropped otherwise.
            keep_gates: a block that keeps both ``skip`` and ``run`` keeps its gate (it stays
                dynamic), so that ``plan.keep(lossless=True)`` gives the dynamic network's
                outputs on every recorded input; only blocks no input ran are dropped.

        Raises:
            ConfigError: ``keep`` does not match the gate graph.
        """
        kept = check_keep(self.gate_graph(), keep)
        net = copy.deepcopy(self)
        for stage in net.stages:
            blocks = []
            for block in stage.blocks:
                options = kept.get(block.name, {"run"})  # a block without a gate stays
                if "run" not in options:
                    continue
                if not (keep_gates and "skip" in options):
                    block.gate = None
                blocks.append(block)
            stage.blocks = nn.ModuleList(blocks)
        return net


def build_skipnet(
    *,
    num_classes: int,
    blocks: tuple[int, ...] = (2, 2),
    channels: tuple[int, ...] = (16, 32),
    threshold: float = 0.5,
    gate_bias: float = 2.0,
    size: tuple[int, int] = (64, 64),
    gate_mode: str = "soft",
    tau: float = 1.0,
    gate_pool: str = "avg",
) -> SkipNet:
    """A :class:`SkipNet` (see :class:`SkipNetConfig` for the arguments); weights from torch's
    default initialisation (seed it with ``torch.manual_seed``)."""
    config = SkipNetConfig(
        num_classes=num_classes,
        channels=tuple(channels),
        blocks=tuple(blocks),
        threshold=threshold,
        gate_bias=gate_bias,
        size=tuple(size),
        gate_mode=gate_mode,
        tau=tau,
        gate_pool=gate_pool,
    )
    return SkipNet(config)
