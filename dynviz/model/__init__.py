"""The routing-space model: torch only (no pandas, plotting, networkx or streamlit).

:func:`build_model` and the rest of the model zoo live in :mod:`dynviz.model.zoo`.
"""

from __future__ import annotations

from dynviz.model.config import (
    ConfigError,
    Direction,
    GateKind,
    PathKey,
    RoutingSpaceConfig,
    Semantics,
)
from dynviz.model.network import RoutingNetwork, RoutingOutput
from dynviz.model.route import Route, RouteError
from dynviz.model.zoo import build_model, load_route, load_spec, models_dir, preset_names

__all__ = [
    "ConfigError",
    "Direction",
    "GateKind",
    "PathKey",
    "Route",
    "RouteError",
    "RoutingNetwork",
    "RoutingOutput",
    "RoutingSpaceConfig",
    "Semantics",
    "build_model",
    "load_route",
    "load_spec",
    "models_dir",
    "preset_names",
]
