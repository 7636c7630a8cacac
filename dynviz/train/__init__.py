"""Training: the loop (:mod:`~dynviz.train.trainer`) and its hooks (:mod:`~dynviz.train.hooks`),
budget loss, optimiser and run log.

The torchrun helpers live one layer down, in :mod:`dynviz.support.distributed` (evaluation and
recording use them too); the command line is :mod:`dynviz.commands.train`.
"""

from __future__ import annotations

from dynviz.train.budget import BudgetLoss, BudgetSchedule
from dynviz.train.config import TrainConfig
from dynviz.train.hooks import HookBase
from dynviz.train.optim import PolySchedule, param_groups
from dynviz.train.trainer import NonFiniteLossError, Trainer, TrainResult, train

__all__ = [
    "BudgetLoss",
    "BudgetSchedule",
    "HookBase",
    "NonFiniteLossError",
    "PolySchedule",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "param_groups",
    "train",
]
