"""The sizes of one demo run (:class:`ChainSettings`), its presets (:data:`QUICK`, :data:`DEMO`,
:data:`FULL`) and what a run returns (:class:`ChainResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynviz.data.spec import parse_spec
from dynviz.model.config import GateKind
from dynviz.model.route import Route
from dynviz.rules import COMMON_THRESHOLD

__all__ = ["DEMO", "FULL", "QUICK", "ChainResult", "ChainSettings"]


@dataclass(frozen=True)
class ChainSettings:
    """Sizes of one chain run."""

    space: str = "small"  # preset of the dynamic models
    size: int = 64  # square synthetic scenes and training crops
    train_count: int = 128
    val_count: int = 48
    iters: int = 150  # per dynamic model
    static_iters: int = 150  # per retrained static network
    batch: int = 8
    scale: tuple[float, float] = (1.0, 1.0)  # training rescale (1: scenes keep their scale)
    budget_lambda: float = 4.0
    budget_mu: float = 0.15
    budget_start: float = 0.3  # share of training before the budget loss starts
    budget_ramp: float = 0.1
    gate_lr_mult: float = 4.0
    gate_warmup: float = 0.0  # share of a dynamic training with every path open, gates idle
    close_below: float = 0.0  # after training, the dynamic models close paths with alpha <= this
    bn_samples: str = "batch"  # the dynamic models' BatchNorm statistics (TrainConfig.bn_samples)
    threshold: float = COMMON_THRESHOLD
    active_threshold: float = 0.0  # a path is open when alpha > this (the paper: 0)
    gate_bias_init: float | None = None  # the gates' initial bias (None: the space's, 1.5)
    budget_gate: str | None = None  # Dynamic-Budget's gates (a GateKind value; None: the space's)
    seed: int = 0
    threads: int = 1  # torch threads per step; several threads on shared cores can stall
    jobs: int = 2  # steps run side by side (processes); 2 keeps a 2-core machine busy
    workers: int = 0  # data-loading workers per training (0: scenes made in the training process)
    eval_limit: int = 16
    scenes: str = ""  # a variant of the scenes, e.g. "tiny=3-8,checker=2.4-4" (SceneOptions)

    def __post_init__(self) -> None:
        parse_spec(self.train_data)  # a bad scene option fails here, named, before any step
        kinds = [kind.value for kind in GateKind]
        if self.budget_gate is not None and self.budget_gate not in kinds:
            raise ValueError(f"budget_gate {self.budget_gate!r} must be one of {', '.join(kinds)}")

    @property
    def train_data(self) -> str:
        return self._data(self.train_count)

    @property
    def val_data(self) -> str:
        return self._data(self.val_count)

    def _data(self, count: int) -> str:
        variant = f",{self.scenes}" if self.scenes else ""
        return f"synthetic:count={count},size={self.size}x{self.size},seed={self.seed}{variant}"


# A few minutes on two idle cores; what the slow test and `analysis/run_chain.py --quick` run.
QUICK = ChainSettings()
# The demo (`make demo`): within 10 minutes on two idle cores. The dynamic models first train
# with every path open for 10% of their iterations (gate warm-up: the gates idle, no budget);
# then the gates, starting half open (bias 0.5 instead of the official 1.5, which opens every
# path for every image and saturates tanh), route at the network's rate under the budget (mu
# 0.4). Without the warm-up, gates at bias 0.5 scale every path by about 0.46 and a short run
# learns slowly; gates that start open settle on one route for every image. Routes that follow
# the image need both many scenes (2048; with 256 every image costs about the same) and 2400
# iterations (with 1600 they do not form); after training, paths with alpha <= 0.3 are closed:
# the soft gates leave many paths barely open, which cost full MACs, change little and hide
# the regimes' different routes in a common cost. Dynamic-Budget gates on its input resized by
# 0.25, as the paper's budgeted networks (Dynamic-A/B/C) do; Dynamic-Raw on the full input, as
# the paper's: with small gates every seed's cost spread passed 1.5x, with full ones one of five
# (docs/demo.md lists the runs).
DEMO = ChainSettings(
    size=64,
    train_count=2048,
    val_count=96,
    iters=2400,
    static_iters=1200,
    gate_bias_init=0.5,
    gate_warmup=0.1,
    budget_mu=0.4,
    budget_start=0.1,
    budget_ramp=0.05,
    gate_lr_mult=1.0,
    close_below=0.3,
    budget_gate="small",
)
# Longer runs for nicer figures.
FULL = ChainSettings(size=96, train_count=512, val_count=128, iters=2000, static_iters=1000)


@dataclass(frozen=True)
class ChainResult:
    """Where a run's report, table and figures are, and how long it took."""

    out: Path
    report: Path
    table: Path
    figures: dict[str, Path] = field(default_factory=dict)
    common: Route | None = None
    seconds: float = 0.0  # wall time of this call
    made_seconds: float = 0.0  # wall time of the runs that made the outputs
    adaptivity: dict[str, Any] | None = None
