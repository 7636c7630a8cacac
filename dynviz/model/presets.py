"""Where presets live and how a model reference becomes a routing space (no route parsing here).

A reference is a preset name (``layer16``, ``fcn32s``) or a path to a YAML file. This module sits
below :mod:`dynviz.model.route` (which resolves a route spec's ``space:`` with
:func:`resolve_space`) and :mod:`dynviz.model.zoo` (which adds route specs), so neither imports
the other's caller.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dynviz.errors import suggest
from dynviz.model.config import (
    ConfigError,
    ConfigFileError,
    RoutingSpaceConfig,
    _read_yaml_mapping,
)
from dynviz.support.resources import shipped

__all__ = [
    "is_preset",
    "load_space",
    "locate",
    "models_dir",
    "preset_names",
    "preset_path",
    "resolve_space",
]


def models_dir() -> Path:
    """The zoo folder: ``$DYNVIZ_MODELS``, else the presets that ship with dynviz
    (:func:`dynviz.support.resources.shipped`)."""
    env = os.environ.get("DYNVIZ_MODELS")
    return Path(env) if env else shipped("models")


def preset_names() -> list[str]:
    return sorted(p.stem for p in models_dir().glob("*.yaml"))


def preset_path(name: str) -> Path | None:
    """The YAML file of preset ``name``, or None."""
    path = models_dir() / f"{name}.yaml"
    return path if path.is_file() else None


def locate(ref: str | os.PathLike[str]) -> Path:
    """The YAML file a reference names: a file path, else a preset (:class:`ConfigError` when it
    is neither)."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigFileError(f"{path}: no such file")
        return path
    preset = preset_path(str(ref))
    if preset is None:
        raise ConfigError(
            f"unknown model {str(ref)!r}: not a file and not a preset"
            + suggest(str(ref), preset_names())
        )
    return preset


def resolve_space(ref: Any, *, source: str, base_dir: Path | None = None) -> RoutingSpaceConfig:
    """The routing space a route spec's ``space:`` names: a mapping (the config itself), a YAML
    path (relative to ``base_dir`` when that file exists) or a preset name."""
    if isinstance(ref, Mapping):
        return RoutingSpaceConfig.from_dict(ref, source=f"{source}: space")
    if isinstance(ref, str):
        candidate = (base_dir / ref) if base_dir is not None else Path(ref)
        return load_space(str(candidate) if candidate.is_file() else ref)
    raise ConfigError(f"{source}: space must be a preset name, a YAML path or a mapping")


def load_space(ref: str | os.PathLike[str]) -> RoutingSpaceConfig:
    """Load a routing-space config (a route spec's space when ``ref`` names a route)."""
    path = locate(ref)
    data = _read_yaml_mapping(path)
    if "space" in data:
        return resolve_space(data["space"], source=str(path), base_dir=path.parent)
    return RoutingSpaceConfig.from_dict(data, source=str(path))


def is_preset(config: RoutingSpaceConfig) -> bool:
    """Whether ``config`` is exactly the routing-space preset of its name."""
    path = preset_path(config.name)
    if path is None:
        return False
    try:
        data = _read_yaml_mapping(path)
        return "space" not in data and RoutingSpaceConfig.from_dict(data) == config
    except ConfigError:
        return False
