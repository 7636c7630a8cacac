"""The budget constraint (Eqs. 9-10 of Li et al., CVPR 2020) and its schedule.

``L_budget = lambda * w(it) * (E / C_all - mu)^2`` where

* ``E`` is the batch mean of the *expected* backbone cost (Eqs. 7-8: each cell's operation cost
  times its largest alpha plus each transform's cost times its alpha), differentiable in the
  gates (:meth:`dynviz.model.cost.CostTable.backbone_expected`);
* ``C_all`` is the same quantity with every path open, at the *training crop* size
  (:meth:`dynviz.model.cost.CostTable.backbone_all_open`). The official code hard-codes
  ``FLOPS_ALL = 26300`` (768x768, about 2% below the exact value); we take it from the cost
  model, so any crop and any space are normalised correctly. ``normaliser=`` takes the official
  constant instead (``dynviz.interop.official.OFFICIAL_BUDGET_NORMALISER``, ``--budget-normaliser
  official``), so the official mu values mean what they meant there;
* ``w(it)`` is 0 before 40% of training, then ramps linearly to 1 over 2% of the iterations
  (official ``UNUPDATE_RATE = 0.4`` with ``WARM_UP = True``).

Static networks and networks without gates have no budget term.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from dynviz.model.cost import CostTable

__all__ = ["BudgetLoss", "BudgetSchedule", "BudgetTerms"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BudgetSchedule:
    """When the budget loss is on: ``w = clip((it / max_iter - start) / ramp, 0, 1)``.

    Attributes:
        start: fraction of training before which the loss is off (official 0.4).
        ramp: fraction of training over which the weight rises linearly from 0 to 1
            (official 0.02). 0 switches it on at full weight.
    """

    start: float = 0.4
    ramp: float = 0.02

    def __post_init__(self) -> None:
        if not 0.0 <= self.start <= 1.0:
            raise ValueError(f"budget start {self.start} must be in [0, 1]")
        if self.ramp < 0.0:
            raise ValueError(f"budget ramp {self.ramp} must be >= 0")

    def weight(self, iteration: int, max_iter: int) -> float:
        """The weight ``w`` at 0-based ``iteration`` of ``max_iter``.

        Args:
            iteration: the iteration being run (0 for the first).
            max_iter: total number of iterations.

        Returns:
            A float in [0, 1].
        """
        progress = iteration / max(1, max_iter)
        if progress < self.start:
            return 0.0
        if self.ramp == 0.0:
            return 1.0
        return min(1.0, (progress - self.start) / self.ramp)


@dataclass
class BudgetTerms:
    """One evaluation of the budget loss.

    Attributes:
        loss: the scalar loss term (0 while the schedule weight is 0; still in the graph).
        ratio: batch-mean ``E / C_all``, detached.
        weight: the schedule weight ``w`` used.
    """

    loss: torch.Tensor
    ratio: torch.Tensor
    weight: float


class BudgetLoss:
    """``lambda * w * (E / C_all - mu)^2`` with ``C_all`` from a cost table at the crop size.

    Args:
        table: the cost table of the (dynamic) network at the training crop size.
        lam: lambda, the loss weight (``budget_lambda``).
        mu: the target share of the all-open expected cost (``budget_mu``).
        schedule: when the loss is on.
        normaliser: ``C_all`` in MACs (default: the table's all-open backbone cost).
    """

    def __init__(
        self,
        table: CostTable,
        *,
        lam: float,
        mu: float,
        schedule: BudgetSchedule | None = None,
        normaliser: float | None = None,
    ) -> None:
        if lam < 0:
            raise ValueError(f"budget lambda {lam} must be >= 0")
        if not 0.0 <= mu <= 1.0:
            raise ValueError(f"budget mu {mu} must be in [0, 1]")
        self.table = table
        self.lam = float(lam)
        self.mu = float(mu)
        self.schedule = schedule or BudgetSchedule()
        self.normaliser = table.backbone_all_open() if normaliser is None else float(normaliser)
        if self.normaliser <= 0:
            raise ValueError("the network has no backbone cost to constrain")

    def ratio(self, gates: torch.Tensor) -> torch.Tensor:
        """Batch-mean ``E / C_all``, differentiable in ``gates`` ``(B, L + 1, S, 3)``."""
        gates = gates.to(torch.promote_types(gates.dtype, torch.float32))  # no bf16 sums
        expected = self.table.backbone_expected(gates)  # (B,)
        return expected.mean() / self.normaliser

    def __call__(self, gates: torch.Tensor, iteration: int, max_iter: int) -> BudgetTerms:
        """Evaluate the loss for the gates of one batch.

        Args:
            gates: ``(B, L + 1, S, 3)`` alphas of the soft forward pass.
            iteration: the 0-based iteration being run.
            max_iter: total number of iterations.
        """
        ratio = self.ratio(gates)
        weight = self.schedule.weight(iteration, max_iter)
        loss = (self.lam * weight) * (ratio - self.mu) ** 2
        return BudgetTerms(loss=loss, ratio=ratio.detach(), weight=weight)

    def __repr__(self) -> str:
        return (
            f"BudgetLoss(lambda={self.lam}, mu={self.mu}, C_all={self.normaliser:.4g} MACs, "
            f"{self.schedule})"
        )
