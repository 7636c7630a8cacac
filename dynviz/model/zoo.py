"""The model zoo: YAML model configs and route specs in ``models/`` (data, not code).

A reference is a preset name (``layer16``, ``fcn32s``) or a path to a YAML file. A YAML file with a
``space`` key is a route spec (a static network); any other is a routing-space config. Finding
presets and loading routing spaces is :mod:`dynviz.model.presets` (below the route module).
"""

from __future__ import annotations

import os

from dynviz.model.config import ConfigError, RoutingSpaceConfig, _read_yaml_mapping, split_training
from dynviz.model.presets import is_preset, load_space, locate, models_dir, preset_names
from dynviz.model.route import Route

__all__ = [
    "models_dir",
    "preset_names",
    "is_preset",
    "load_space",
    "load_route",
    "load_spec",
    "training_defaults",
]


def load_spec(ref: str | os.PathLike[str]) -> RoutingSpaceConfig | Route:
    """Load a preset or YAML file: a routing-space config or a route spec."""
    path = locate(ref)
    data = _read_yaml_mapping(path)
    if "space" in data:
        return Route.from_dict(data, source=str(path), base_dir=path.parent)
    return RoutingSpaceConfig.from_dict(data, source=str(path))


def load_route(ref: str | os.PathLike[str]) -> Route:
    """Load a route spec (a preset or YAML file with a ``space`` key); a routing-space config is
    refused, naming the reference."""
    loaded = load_spec(ref)
    if not isinstance(loaded, Route):
        raise ConfigError(f"{ref}: not a route spec (no 'space' key)")
    return loaded


def training_defaults(ref: str | os.PathLike[str]) -> dict[str, float]:
    """The training defaults a preset or YAML file carries (its ``training:`` section, e.g.
    Dynamic-A's ``budget_lambda: 0.8``, ``budget_mu: 0.1``); empty for a route spec."""
    path = locate(ref)
    data = _read_yaml_mapping(path)
    if "space" in data:
        return {}
    return split_training(data, source=str(path))[1]
