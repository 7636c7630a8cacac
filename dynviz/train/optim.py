"""Optimiser and learning-rate schedule of the official recipe (``official_repo.md`` section 7).

* SGD, momentum 0.9, weight decay 1e-4; no weight decay on BatchNorm weights and biases; conv
  biases keep 1e-4 (official ``WEIGHT_DECAY_NORM = 0``, ``BIAS_LR_FACTOR = 1``).
* Gate parameters (every parameter under ``.gate.``) may get a learning-rate multiplier (official
  2.5 when fine-tuning from ImageNet weights; 1.0 from scratch).
* Poly schedule, power 0.9, after a linear warm-up from 0.001x. The official warm-up is 1000
  iterations; for short runs it is ``min(1000, 5% of the iterations)`` (see
  :func:`default_warmup_iters`) so that a 600-iteration run does not spend all its time warming up.

The schedule is a pure function of the iteration, so resuming needs no scheduler state: each
group's ``lr`` is set from ``base_lr * lr_mult * factor(iteration)`` before every step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "PolySchedule",
    "build_optimizer",
    "default_warmup_iters",
    "is_gate_parameter",
    "param_groups",
]

logger = logging.getLogger(__name__)

OFFICIAL_WARMUP_ITERS = 1000
WARMUP_SHARE = 0.05


def default_warmup_iters(max_iter: int) -> int:
    """Warm-up length for ``max_iter`` iterations: ``min(1000, round(0.05 * max_iter))``."""
    return min(OFFICIAL_WARMUP_ITERS, round(WARMUP_SHARE * max_iter))


def is_gate_parameter(name: str) -> bool:
    """Whether a parameter (by its ``named_parameters`` name) belongs to a soft gate."""
    return ".gate." in f".{name}"


def param_groups(
    model: nn.Module, *, weight_decay: float = 1e-4, gate_lr_mult: float = 1.0
) -> list[dict[str, Any]]:
    """Split the trainable parameters into optimiser groups.

    Groups (empty ones are dropped): ``decay`` / ``no_decay`` (BatchNorm weights and biases) for
    the rest of the network, and ``gate_decay`` / ``gate_no_decay`` for the gates. Each group
    carries ``weight_decay``, ``lr_mult`` and ``name``.

    Args:
        model: the network (not wrapped in DDP, so names have no ``module.`` prefix).
        weight_decay: decay of every parameter that is not a BatchNorm weight or bias.
        gate_lr_mult: learning-rate multiplier of gate parameters.

    Returns:
        A list of dicts for :class:`torch.optim.SGD`.
    """
    norm_params = {
        id(p)
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        for p in module.parameters(recurse=False)
    }
    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        gate = is_gate_parameter(name)
        norm = id(param) in norm_params
        key = ("gate_" if gate else "") + ("no_decay" if norm else "decay")
        group = groups.setdefault(
            key,
            {
                "name": key,
                "params": [],
                "weight_decay": 0.0 if norm else float(weight_decay),
                "lr_mult": float(gate_lr_mult) if gate else 1.0,
            },
        )
        group["params"].append(param)
    order = ("decay", "no_decay", "gate_decay", "gate_no_decay")
    return [groups[k] for k in order if k in groups]


@dataclass(frozen=True)
class PolySchedule:
    """Poly learning rate with linear warm-up (detectron2 ``WarmupPolyLR``).

    ``lr(it) = base_lr * warm(it) * (1 - it / max_iter) ** power`` with
    ``warm(it) = factor * (1 - it / warmup) + it / warmup`` for ``it < warmup``, else 1.

    Attributes:
        base_lr: the base learning rate.
        max_iter: total iterations.
        warmup_iters: warm-up length (0 for none).
        warmup_factor: starting multiplier of the warm-up (official 0.001).
        power: poly exponent (official 0.9).
    """

    base_lr: float
    max_iter: int
    warmup_iters: int = 0
    warmup_factor: float = 0.001
    power: float = 0.9

    def __post_init__(self) -> None:
        if self.max_iter < 1:
            raise ValueError(f"max_iter {self.max_iter} must be >= 1")
        if self.warmup_iters < 0:
            raise ValueError(f"warmup_iters {self.warmup_iters} must be >= 0")

    def factor(self, iteration: int) -> float:
        """Multiplier of ``base_lr`` at 0-based ``iteration``."""
        warm = 1.0
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            warm = self.warmup_factor * (1.0 - alpha) + alpha
        return warm * max(0.0, 1.0 - iteration / self.max_iter) ** self.power

    def lr(self, iteration: int) -> float:
        """The base learning rate at ``iteration`` (before group multipliers)."""
        return self.base_lr * self.factor(iteration)

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int) -> float:
        """Set every group's ``lr`` for ``iteration``; returns the base learning rate."""
        lr = self.lr(iteration)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        return lr


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    gate_lr_mult: float = 1.0,
) -> torch.optim.SGD:
    """SGD over :func:`param_groups` (call before wrapping the model in DDP)."""
    groups = param_groups(model, weight_decay=weight_decay, gate_lr_mult=gate_lr_mult)
    for group in groups:
        group["lr"] = lr * group["lr_mult"]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
