"""The model zoo: YAML model configs and route specs in ``models/`` (data, not code).

A reference is a preset name (``layer16``, ``fcn32s``) or a path to a YAML file. A YAML file with a
``space`` key is a route spec (a static network); any other is a routing-space config. Finding
presets and loading routing spaces is :mod:`dynviz.model.presets` (below the route module).
"""

from __future__ import annotations

import os

from dynviz.model.config import RoutingSpaceConfig, _read_yaml_mapping
from dynviz.model.presets import is_preset, load_space, locate, models_dir, preset_names
from dynviz.model.route import Route

__all__ = ["models_dir", "preset_names", "is_preset", "load_space", "load_spec"]


def load_spec(ref: str | os.PathLike[str]) -> RoutingSpaceConfig | Route:
    """Load a preset or YAML file: a routing-space config or a route spec."""
    path = locate(ref)
    data = _read_yaml_mapping(path)
    if "space" in data:
        return Route.from_dict(data, source=str(path), base_dir=path.parent)
    return RoutingSpaceConfig.from_dict(data, source=str(path))
