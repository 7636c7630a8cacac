"""dynviz: train, run and dissect dynamic-routing segmentation networks.

Li et al., "Learning Dynamic Routing for Semantic Segmentation", CVPR 2020 (arXiv 2003.10401).

``import dynviz`` loads no torch (``dynviz --help`` stays quick): the names below come from
:mod:`dynviz.model` (the network) and :mod:`dynviz.model.zoo` (the model zoo) on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dynviz import _moved
from dynviz.version import __version__

_moved.install()  # the module paths before the stage packages (dynviz.cost, ...) still import

if TYPE_CHECKING:
    from dynviz.model import (
        ConfigError,
        Direction,
        GateKind,
        Route,
        RouteError,
        RoutingNetwork,
        RoutingOutput,
        RoutingSpaceConfig,
        Semantics,
        build_model,
    )
    from dynviz.model.zoo import create_model, list_models, load_model

__all__ = [
    "ConfigError",
    "Direction",
    "GateKind",
    "Route",
    "RouteError",
    "RoutingNetwork",
    "RoutingOutput",
    "RoutingSpaceConfig",
    "Semantics",
    "__version__",
    "build_model",
    "create_model",
    "list_models",
    "load_model",
]

_FROM_MODEL = frozenset(
    {
        "ConfigError",
        "Direction",
        "GateKind",
        "Route",
        "RouteError",
        "RoutingNetwork",
        "RoutingOutput",
        "RoutingSpaceConfig",
        "Semantics",
        "build_model",
    }
)
_FROM_ZOO = frozenset({"create_model", "list_models", "load_model"})


def __getattr__(name: str) -> Any:
    """The public names of :data:`__all__`, imported on first use (PEP 562)."""
    if name in _FROM_MODEL:
        from dynviz import model

        value = getattr(model, name)
    elif name in _FROM_ZOO:
        from dynviz.model import zoo

        value = getattr(zoo, name)
    else:
        raise AttributeError(f"module 'dynviz' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
