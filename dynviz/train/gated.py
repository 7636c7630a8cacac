"""A small training loop for gated networks: the reference networks of :mod:`dynviz.gates`
(:class:`~dynviz.gates.skipnet.SkipNet`, :class:`~dynviz.gates.moe.MoENet`) or any network with
their ``forward_gates``.

The loss of one batch::

    L = CE(logits, labels)                                           # ignore_index pixels left out
      + budget_weight * w(it) * (E / C_all - mu)^2                   # with budget=mu
      + balance_weight * sum over ROUTER points of E_p * sum_i f_i P_i  # load balance
      + target_weight * mean over SKIP points l of (mean_batch p_l - t_l)^2  # with target_rates

The budget term generalises the paper's (:mod:`dynviz.train.budget`) to any gate graph: ``E`` is
the batch mean of each input's expected cost, ``base_macs + sum over points and options of the
option's value times its MACs`` (what the records call ``expected_gmacs``), differentiable in the
gates; ``C_all`` is the graph's all-run cost (:attr:`dynviz.gates.GateGraph.all_run_macs`, every
option of every point). For a skip gate the value of ``run`` is its probability, so ``E / C_all``
is the expected share of the all-run cost. For a router the values are softmax weights that sum
to 1, so its share stays below ``1 / E`` of its experts' cost: constrain routers with the
load balance (:func:`dynviz.gates.moe.load_balance_loss`), not the budget.

The target-rate term is ConvNet-AIG's (Veit and Belongie, ECCV 2018): each skip point ``l`` should
run for a share ``t_l`` of the inputs of a batch. ``p_l`` is the gate's probability (with
logistic noise at ``tau = 1`` the straight-through gate runs with exactly that probability, so
``mean p_l`` is the expected execution rate, with less variance than the sampled one). Unlike the
budget, which one route for every input can meet, a rate strictly between 0 and 1 can only be met
by running the block for some inputs and skipping it for others: it asks the gates to choose.

A trainable gated network has ``forward_gates(images) -> (logits, {point: Decision})`` whose
values keep their gradient, and ``gate_graph()`` with costs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from dynviz.gates import Decision, GateGraph, PointKind
from dynviz.gates.moe import load_balance_loss
from dynviz.model import ConfigError
from dynviz.train.budget import BudgetSchedule

__all__ = ["GatedTraining", "TrainableGated", "expected_macs", "train_gated"]

logger = logging.getLogger(__name__)

ALWAYS = BudgetSchedule(start=0.0, ramp=0.0)
"""The budget schedule of :func:`train_gated` by default: on at full weight from the start."""


@runtime_checkable
class TrainableGated(Protocol):
    """A gated network :func:`train_gated` trains."""

    def gate_graph(self) -> GateGraph: ...

    def forward_gates(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Decision]]: ...


@dataclass
class GatedTraining:
    """What :func:`train_gated` did, one entry per iteration.

    Attributes:
        losses: the total loss.
        task_losses: the cross-entropy.
        shares: the batch-mean expected cost over the all-run cost, ``E / C_all``.
        balance: the load-balance loss summed over the router points (0 without routers).
        mu: the budget's target share (None without a budget).
    """

    losses: list[float] = field(default_factory=list)
    task_losses: list[float] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)
    balance: list[float] = field(default_factory=list)
    mu: float | None = None

    @staticmethod
    def _tail(values: list[float]) -> float:
        """The mean over the last tenth of the iterations (at least one)."""
        if not values:
            return math.nan
        tail = values[-max(1, len(values) // 10) :]
        return sum(tail) / len(tail)

    @property
    def final_share(self) -> float:
        return self._tail(self.shares)

    @property
    def final_loss(self) -> float:
        return self._tail(self.task_losses)


def expected_macs(graph: GateGraph, gates: Mapping[str, Decision]) -> torch.Tensor:
    """Each input's expected cost, ``base_macs + sum of value * macs`` over every point's
    options, ``(N,)`` and differentiable in the values (a point that did not report costs
    nothing; NaN values, inputs that did not reach it, count 0).

    Raises:
        ConfigError: the graph lacks a cost.
    """
    if not graph.has_costs:
        raise ConfigError(f"gate graph {graph.name!r} lacks costs: no budget can be computed")
    total: torch.Tensor | float = float(graph.base_macs)
    for point in graph:
        decision = gates.get(point.name)
        if decision is None:
            continue
        macs = torch.tensor([o.macs for o in point.options], dtype=torch.float32)
        values = torch.nan_to_num(decision.values.float(), nan=0.0)  # (N, K)
        total = total + values @ macs.to(values.device)  # (N,)
    if not isinstance(total, torch.Tensor):
        raise ConfigError(f"no point of gate graph {graph.name!r} reported")
    return total


def _batches(
    dataset: Any, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(images (B, 3, H, W), labels (B, H, W))`` in a new random order each epoch."""
    while True:
        order = torch.randperm(len(dataset), generator=generator).tolist()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            items = [dataset[i] for i in order[start : start + batch_size]]
            yield (
                torch.stack([it["image"] for it in items]),
                torch.stack([it["label"] for it in items]),
            )


def _optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ConfigError(f"optimizer must be 'adam' or 'sgd', not {name!r}")


def _targets(graph: GateGraph, rates: float | Mapping[str, float] | None) -> dict[str, float]:
    """``{skip point: target rate}`` of ``train_gated``'s ``target_rates``."""
    if rates is None:
        return {}
    skips = [p.name for p in graph if p.kind is PointKind.SKIP]
    if not isinstance(rates, Mapping):
        rates = dict.fromkeys(skips, float(rates))
    unknown = sorted(set(rates) - set(skips))
    if unknown:
        raise ConfigError(f"target_rates names {unknown}, not skip points of {graph.name!r}")
    bad = {n: t for n, t in rates.items() if not 0.0 <= t <= 1.0}
    if bad:
        raise ConfigError(f"target rates must be in [0, 1]: {bad}")
    return {n: float(t) for n, t in rates.items()}


def train_gated(
    model: nn.Module,
    dataset: Any,
    *,
    iterations: int,
    batch_size: int = 8,
    lr: float = 1e-3,
    optimizer: Literal["adam", "sgd"] = "adam",
    weight_decay: float = 0.0,
    budget: float | None = None,
    budget_weight: float = 1.0,
    budget_schedule: BudgetSchedule | None = None,
    balance_weight: float = 0.0,
    target_rates: float | Mapping[str, float] | None = None,
    target_weight: float = 1.0,
    seed: int = 0,
    ignore_index: int | None = None,
    log_every: int = 0,
) -> GatedTraining:
    """Train a gated network on a segmentation data set (in place, on the model's device).

    Args:
        model: a :class:`TrainableGated` network.
        dataset: items with ``image`` ``(3, H, W)`` and ``label`` ``(H, W)`` of one size
            (:func:`dynviz.data.build_dataset`).
        iterations: optimiser steps.
        batch_size: images per step (a last incomplete batch of an epoch is left out).
        lr: learning rate (constant).
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: L2 weight decay.
        budget: the target share ``mu`` of the all-run cost (None: no budget term).
        budget_weight: lambda, the budget term's weight.
        budget_schedule: when the budget is on (default :data:`ALWAYS`; the paper's is
            ``BudgetSchedule()``, from 40% of training).
        balance_weight: the load-balance term's weight (0: none).
        target_rates: ConvNet-AIG's target rate of each skip point, the share of a batch's
            inputs it should run for: one rate for every skip point, or ``{point: rate}`` (the
            points not named have no target); None: no target-rate term.
        target_weight: the target-rate term's weight.
        seed: the batches' order.
        ignore_index: label left out of the loss (default the data set's ``ignore_index``, else
            255).
        log_every: log the losses every that many iterations (0: only at the end).

    Returns:
        The losses and cost shares of every iteration (the model is left in eval mode).

    Raises:
        ConfigError: the model is not a :class:`TrainableGated` network, the data set holds fewer
            images than a batch, or a budget is asked of a graph without costs.
    """
    if not isinstance(model, TrainableGated):
        raise ConfigError(
            f"{type(model).__name__} has no forward_gates and gate_graph: train_gated trains the "
            "reference networks of dynviz.gates (or networks with the same two methods)"
        )
    if iterations < 1 or batch_size < 1 or len(dataset) < batch_size:
        raise ConfigError(
            f"iterations ({iterations}) and batch_size ({batch_size}) must be >= 1, and the data "
            f"set ({len(dataset)} images) must hold a batch"
        )
    if budget is not None and not 0.0 <= budget <= 1.0:
        raise ConfigError(f"budget (mu) must be in [0, 1], not {budget}")
    graph = model.gate_graph()
    all_run = graph.all_run_macs
    if all_run is None:
        raise ConfigError(f"gate graph {graph.name!r} lacks costs")
    ignore = int(getattr(dataset, "ignore_index", 255) if ignore_index is None else ignore_index)
    schedule = budget_schedule or ALWAYS
    routers = [p for p in graph if p.kind is PointKind.ROUTER]
    targets = _targets(graph, target_rates)
    device = next(model.parameters()).device
    opt = _optimizer(model, optimizer, lr, weight_decay)
    batches = _batches(dataset, batch_size, torch.Generator().manual_seed(seed))
    result = GatedTraining(mu=budget)
    model.train()
    for it in range(iterations):
        images, labels = next(batches)
        images, labels = images.to(device), labels.to(device)
        logits, gates = model.forward_gates(images)  # (B, K, H, W), {point: Decision}
        task = F.cross_entropy(logits, labels, ignore_index=ignore)
        share = expected_macs(graph, gates).mean() / all_run
        loss = task
        if budget is not None:
            w = schedule.weight(it, iterations)
            loss = loss + budget_weight * w * (share - budget) ** 2
        balance = sum(
            (load_balance_loss(gates[p.name].values, gates[p.name].ran) for p in routers),
            torch.zeros((), device=device),
        )
        if balance_weight:
            loss = loss + balance_weight * balance
        if targets:
            rates = [
                (gates[n].values[:, 1].mean() - t) ** 2 for n, t in targets.items() if n in gates
            ]
            if rates:
                loss = loss + target_weight * torch.stack(rates).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        result.losses.append(float(loss.detach()))
        result.task_losses.append(float(task.detach()))
        result.shares.append(float(share.detach()))
        result.balance.append(float(balance.detach()))
        if (log_every and (it + 1) % log_every == 0) or it + 1 == iterations:
            logger.info(
                "%s it %d/%d: loss %.4f (ce %.4f) cost share %.3f%s balance %.3f",
                graph.name,
                it + 1,
                iterations,
                result.losses[-1],
                result.task_losses[-1],
                result.shares[-1],
                "" if budget is None else f" (mu {budget})",
                result.balance[-1],
            )
    model.eval()
    return result
