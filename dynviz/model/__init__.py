"""The routing-space model: torch only (no pandas, plotting, networkx or streamlit)."""

from __future__ import annotations

import os

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
from dynviz.model.zoo import load_route, load_spec, models_dir, preset_names

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
    "load_spec",
    "models_dir",
    "preset_names",
]


def build_model(
    spec: str | os.PathLike[str] | RoutingSpaceConfig | Route,
    /,
    *,
    route: Route | str | os.PathLike[str] | None = None,
    **overrides: object,
) -> RoutingNetwork:
    """Build a network from a preset name, a YAML path, a config or a route.

    Args:
        spec: ``"layer16"``, ``"models/fcn32s.yaml"``, a :class:`RoutingSpaceConfig` or a
            :class:`Route`. A route spec gives a static network (no gates).
        route: build the static network of this route in the space of ``spec``.
        **overrides: config fields to change, e.g. ``num_classes=21``.
    """
    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec)
    if isinstance(route, (str, os.PathLike)):
        route = load_route(route)
    if isinstance(spec, Route):
        route, spec = spec, spec.space
    config = spec.replace(**overrides) if overrides else spec
    return RoutingNetwork(config, route=route)
