"""Training: the loop (:mod:`~dynviz.train.trainer`), budget loss, optimiser and torchrun helpers.

Names are imported lazily so that ``dynviz.evaluate`` can use the torchrun helpers of
:mod:`dynviz.train.distributed` without importing the trainer (which imports ``dynviz.evaluate``).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BudgetLoss",
    "BudgetSchedule",
    "NonFiniteLossError",
    "PolySchedule",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "param_groups",
    "train",
]

_SOURCES = {
    "BudgetLoss": "dynviz.train.budget",
    "BudgetSchedule": "dynviz.train.budget",
    "PolySchedule": "dynviz.train.optim",
    "param_groups": "dynviz.train.optim",
    "NonFiniteLossError": "dynviz.train.trainer",
    "TrainConfig": "dynviz.train.config",
    "TrainResult": "dynviz.train.trainer",
    "Trainer": "dynviz.train.trainer",
    "train": "dynviz.train.trainer",
}


def __getattr__(name: str) -> Any:
    if name in _SOURCES:
        return getattr(importlib.import_module(_SOURCES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
