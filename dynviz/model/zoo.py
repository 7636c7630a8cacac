"""The model zoo: YAML model configs and route specs in ``models/`` (data, not code).

A reference is a preset name (``layer16``, ``fcn32s``) or a path to a YAML file. A YAML file with a
``space`` key is a route spec (a static network); any other is a routing-space config.
"""

from __future__ import annotations

import os
from pathlib import Path

from dynviz.model.config import (
    ConfigError,
    RoutingSpaceConfig,
    _read_yaml_mapping,
    split_training,
)
from dynviz.model.route import Route

__all__ = [
    "models_dir",
    "preset_names",
    "is_preset",
    "load_space",
    "load_spec",
    "training_defaults",
]


def models_dir() -> Path:
    """The zoo folder: ``$DYNVIZ_MODELS`` or the repository's ``models/``."""
    env = os.environ.get("DYNVIZ_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models"


def preset_names() -> list[str]:
    return sorted(p.stem for p in models_dir().glob("*.yaml"))


def _preset_path(name: str) -> Path | None:
    path = models_dir() / f"{name}.yaml"
    return path if path.is_file() else None


def _locate(ref: str | os.PathLike[str]) -> Path:
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
        return path
    preset = _preset_path(str(ref))
    if preset is None:
        raise ConfigError(
            f"unknown model {str(ref)!r}: not a file and not a preset ({', '.join(preset_names())})"
        )
    return preset


def load_spec(ref: str | os.PathLike[str]) -> RoutingSpaceConfig | Route:
    """Load a preset or YAML file: a routing-space config or a route spec."""
    path = _locate(ref)
    data = _read_yaml_mapping(path)
    if "space" in data:
        return Route.from_dict(data, source=str(path), base_dir=path.parent)
    return RoutingSpaceConfig.from_dict(data, source=str(path))


def training_defaults(ref: str | os.PathLike[str]) -> dict[str, float]:
    """The training defaults a preset or YAML file carries (its ``training:`` section, e.g.
    Dynamic-A's ``budget_lambda: 0.8``, ``budget_mu: 0.1``); empty for a route spec."""
    path = _locate(ref)
    data = _read_yaml_mapping(path)
    if "space" in data:
        return {}
    return split_training(data, source=str(path))[1]


def load_space(ref: str | os.PathLike[str]) -> RoutingSpaceConfig:
    """Load a routing-space config (a route spec's space when ``ref`` names a route)."""
    spec = load_spec(ref)
    return spec.space if isinstance(spec, Route) else spec


def is_preset(config: RoutingSpaceConfig) -> bool:
    path = _preset_path(config.name)
    if path is None:
        return False
    try:
        spec = load_spec(path)
    except ConfigError:
        return False
    return isinstance(spec, RoutingSpaceConfig) and spec == config
