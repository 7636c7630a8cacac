"""The module paths of dynviz 0.x before the modules were grouped by stage, still importable.

``import dynviz.cost`` gives :mod:`dynviz.model.cost` itself (the same module object, so
``isinstance`` checks and monkeypatching agree) and a :class:`DeprecationWarning` that names the
new path. The table below is the whole mapping; nothing else is looked up by name.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED: dict[str, str] = {
    "dynviz.allocator": "dynviz.inference.allocator",
    "dynviz.attribution": "dynviz.analysis.attribution",
    "dynviz.chain": "dynviz.demo.chain",
    "dynviz.checkpoint": "dynviz.model.checkpoint",
    "dynviz.cityscapes_eval": "dynviz.data.cityscapes_eval",
    "dynviz.compare": "dynviz.analysis.compare",
    "dynviz.cost": "dynviz.model.cost",
    "dynviz.distributed": "dynviz.support.distributed",
    "dynviz.environment": "dynviz.support.environment",
    "dynviz.evaluate": "dynviz.inference.evaluate",
    "dynviz.export": "dynviz.inference.export",
    "dynviz.flopcheck": "dynviz.model.flopcheck",
    "dynviz.graph": "dynviz.model.graph",
    "dynviz.latency": "dynviz.inference.latency",
    "dynviz.metrics": "dynviz.inference.metrics",
    "dynviz.official": "dynviz.interop.official",
    "dynviz.predict": "dynviz.inference.predict",
    "dynviz.processes": "dynviz.support.processes",
    "dynviz.progress": "dynviz.support.progress",
    "dynviz.report": "dynviz.analysis.report",
    "dynviz.resources": "dynviz.support.resources",
    "dynviz.runconfig": "dynviz.train.runconfig",
    "dynviz.runs": "dynviz.analysis.runs",
    "dynviz.torchfile": "dynviz.model.torchfile",
    "dynviz.tta": "dynviz.inference.tta",
    "dynviz.uploads": "dynviz.record.uploads",
    "dynviz.zoo": "dynviz.model.zoo",
}
"""Old module path -> where the module lives now."""


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A finder that answers the old paths of :data:`MOVED` with the modules at their new ones."""

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} is now {new}; the old path will be removed in a later release",
            DeprecationWarning,
            stacklevel=3,
        )
        module = importlib.import_module(new)
        self._specs[new] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the old path's spec on the module: give it back its own.
        module.__spec__ = self._specs[module.__name__]


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
