"""dynviz: train, run and dissect dynamic-routing segmentation networks.

Li et al., "Learning Dynamic Routing for Semantic Segmentation", CVPR 2020 (arXiv 2003.10401).
"""

from __future__ import annotations

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

__version__ = "0.1.0"

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
]
