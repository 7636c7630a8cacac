"""Settings as files and ``KEY=VALUE`` overrides: ``dynviz train --config FILE [KEY=VALUE ...]``.

A config file is YAML in one of two forms:

* a run's own ``config.yaml`` (what ``dynviz train`` writes): sections ``model`` (the resolved
  routing-space config), ``route`` (the static route, or null), ``train`` (the training
  arguments) and the informational ``data``, ``dynviz_version``, ``torch_version``,
  ``world_size`` and ``environment``. Training again from it builds exactly the saved network
  (not whatever the preset named in ``train.model`` has become) with the saved arguments;
* a flat mapping of training arguments (``model: tiny``, ``data: synthetic``, ``lr: 0.01``).

Overrides use the names of the file: ``train.lr=0.01`` or just ``lr=0.01`` (a training argument),
``model.base_channels=16`` (a field of the saved network's config), ``budget_mu=0.2``. Values are
YAML scalars (``0.01``, ``true``, ``null``) or, for pairs, ``64,64`` / ``64x64`` / ``[64, 64]``.
An unknown key is refused by name, with the closest known names.

For the inference commands (``eval``, ``record``, ``predict``) :func:`command_settings` applies
the same ``--config FILE`` / ``KEY=VALUE`` scheme to their own option names.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dynviz.errors import BadFileError, UserError, suggest, yaml_problem

__all__ = [
    "INFO_KEYS",
    "RunConfig",
    "SettingsError",
    "SettingsFileError",
    "command_settings",
    "parse_overrides",
    "read_run_config",
]

INFO_KEYS = frozenset(
    {"dynviz_version", "torch_version", "world_size", "environment", "data", "checkpoint"}
)
"""Sections of a run's ``config.yaml`` that describe the run and are not settings."""

# the training arguments that a run resolves from its network: re-derived from the saved
# model section unless given again (the budget is a training argument: kept as resolved)
_FROM_MODEL = ("num_classes",)


class SettingsError(UserError):
    """A config file or override is invalid; the message names the file or key."""


class SettingsFileError(SettingsError, BadFileError):
    """A config file is missing, unreadable or not a YAML mapping; the message names it."""


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["lr=0.01", "budget_mu=0.2"]`` -> ``{"lr": 0.01, "budget_mu": 0.2}`` (YAML scalars).

    Raises:
        SettingsError: an item is not ``KEY=VALUE`` or a key is given twice.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w.]*", key):
            raise SettingsError(f"{item!r} is not KEY=VALUE (e.g. lr=0.01)")
        if key in out:
            raise SettingsError(f"{key} is given twice")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        out[key] = value
    return out


def _read_mapping(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsFileError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SettingsFileError(f"{path}: cannot read ({err})") from None
    except yaml.YAMLError as err:
        raise SettingsFileError(f"{path}: not valid YAML ({yaml_problem(err)})") from None
    if not isinstance(data, dict):
        raise SettingsFileError(f"{path}: expected a YAML mapping of settings")
    return data


# ------------------------------------------------------------------------- typed values
def _coerce(value: Any, annotation: str, key: str) -> Any:
    """``value`` as the dataclass field type ``annotation`` (a string: postponed annotations)."""
    kinds = [part.strip() for part in str(annotation).split("|")]
    if value is None:
        if "None" in kinds:
            return None
        raise SettingsError(f"{key}: a value is required (got null)")
    base = next(k for k in kinds if k != "None")
    if base.startswith("tuple"):
        if isinstance(value, str):
            value = [v for v in re.split(r"[,x\s]+", value.strip()) if v]
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise SettingsError(f"{key}: {value!r} must be a pair, e.g. {key}=64,64")
        inner = "int" if "int" in base else "float"
        return tuple(_coerce(v, inner, key) for v in value)
    try:
        return _scalar(value, base)
    except (TypeError, ValueError):
        raise SettingsError(f"{key}: {value!r} is not a valid {base}") from None


def _scalar(value: Any, base: str) -> Any:
    """``value`` as the scalar type named ``base`` (``bool``, ``int``, ``float``, ``str``; any
    other type passes it unchanged).

    Raises:
        ValueError, TypeError: ``value`` is not one of type ``base``.
    """
    if base == "bool":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "yes", "on", "1"):
            return True
        if str(value).lower() in ("false", "no", "off", "0"):
            return False
        raise ValueError
    if base == "int":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    if base == "float":
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    if base == "str":
        return str(value)
    return value


def _field_types(cls: type) -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(cls)}


# ------------------------------------------------------------------------ training runs
@dataclass(frozen=True)
class RunConfig:
    """A training config read from a file, with overrides applied.

    Attributes:
        train: training arguments (:class:`dynviz.train.config.TrainConfig` fields).
        model: a run's saved network config (None: the network comes from ``train["model"]``).
        route: a run's saved static route (with its space inline), or None.
        source: the file, for messages.
        given: the training arguments set by overrides (the command line), not by ``source``.
    """

    train: dict[str, Any]
    model: dict[str, Any] | None = None
    route: dict[str, Any] | None = None
    source: str = "config"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset()

    def network(self) -> Any:
        """The network spec to build (a ``RoutingSpaceConfig`` or ``Route``), or None when
        ``train["model"]`` names it; model overrides applied."""
        from dynviz.model import ConfigError, Route, RoutingSpaceConfig

        if self.model is None:
            return None
        try:
            config = RoutingSpaceConfig.from_dict(self.model, source=f"{self.source}: model")
            if self.model_overrides:
                config = config.replace(**self.model_overrides)
            if self.route is None:
                return config
            route = Route.from_dict(self.route, source=f"{self.source}: route")
            if self.model_overrides:
                route = dataclasses.replace(route, space=config)
            return route
        except ConfigError as err:
            raise SettingsError(str(err)) from None

    def typed(self) -> dict[str, Any]:
        """The training arguments given, as their field types (``"64,64"`` -> ``(64, 64)``)."""
        from dynviz.train.config import TrainConfig

        types = _field_types(TrainConfig)
        return {key: _coerce(value, types[key], key) for key, value in self.train.items()}

    def train_config(self, *, require_paths: bool = True) -> Any:
        """The validated :class:`~dynviz.train.config.TrainConfig` (``require_paths=False``:
        ``data`` and ``out`` may be missing, for showing the settings)."""
        from dynviz.model import ConfigError
        from dynviz.train.config import TrainConfig

        values = self.typed()
        if not require_paths:
            values = {"data": None, "out": None, **values}
        missing = [k for k in ("model", "data", "out") if values.get(k) is None and require_paths]
        missing += ["model"] if not require_paths and values.get("model") is None else []
        if missing:
            raise SettingsError(
                f"{self.source}: no {', '.join(missing)} (give "
                + ", ".join(f"{k}=..." if k != "out" else "--out RUN_DIR" for k in missing)
                + ")"
            )
        try:
            return TrainConfig(**values)
        except ConfigError as err:  # named by its file when it came from one
            key = str(err).partition(":")[0].strip()
            if key in self.given:
                raise SettingsError(f"{err} (given on the command line)") from None
            raise SettingsError(f"{self.source}: {err}" if self.source else str(err)) from None


def read_run_config(path: str | Path) -> RunConfig:
    """Read a training config file (a run's ``config.yaml`` or a flat mapping).

    Raises:
        SettingsError: unreadable, not a mapping, or unknown keys (named).
    """
    from dynviz.train.config import TrainConfig

    data = _read_mapping(path)
    known = set(_field_types(TrainConfig))
    if "train" in data and isinstance(data["train"], dict):
        extra = sorted(set(data) - INFO_KEYS - {"train", "model", "route"})
        if extra:
            raise SettingsError(
                f"{path}: unknown section {extra[0]!r}; a run config has model, route, train"
            )
        train = dict(data["train"])
        unknown = sorted(set(train) - known)
        if unknown:
            raise SettingsError(
                f"{path}: unknown training argument train.{unknown[0]}{suggest(unknown[0], known)}"
            )
        model = data.get("model")
        if model is not None and not isinstance(model, dict):
            raise SettingsError(f"{path}: 'model' must be the network's config mapping")
        route = data.get("route")
        if model is not None:
            for key in _FROM_MODEL:
                train.pop(key, None)  # re-derived from the saved network, or given again
        train["progress"] = None  # re-decided for this terminal
        return RunConfig(train=train, model=model, route=route, source=str(path))
    unknown = sorted(set(data) - known - {"dynviz_version", "torch_version"})
    if unknown:
        raise SettingsError(
            f"{path}: unknown training argument {unknown[0]!r}{suggest(unknown[0], known)}"
        )
    return RunConfig(
        train={k: v for k, v in data.items() if k in known}, model=None, source=str(path)
    )


def apply_overrides(config: RunConfig, overrides: Mapping[str, Any]) -> RunConfig:
    """Apply ``KEY=VALUE`` overrides (see the module docstring) to a :class:`RunConfig`.

    Raises:
        SettingsError: an unknown key, named with the closest known ones.
    """
    from dynviz.model import RoutingSpaceConfig
    from dynviz.train.config import TrainConfig

    train_keys = list(_field_types(TrainConfig))
    model_types = _field_types(RoutingSpaceConfig)
    train = dict(config.train)
    given = set(config.given)
    model_overrides = dict(config.model_overrides)
    model, route = config.model, config.route
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        if section in ("", "train"):
            if name not in train_keys:
                known = train_keys + [f"model.{k}" for k in model_types]
                raise SettingsError(f"unknown setting {key!r}{suggest(name, known)}")
            train[name] = value
            given.add(name)
            if name == "model" and model is not None:
                model, route = None, None  # another network: the saved one no longer applies
        elif section == "model":
            if name not in model_types:
                raise SettingsError(f"unknown setting {key!r}{suggest(name, list(model_types))}")
            if model is None:
                train_model = train.get("model")
                if not train_model:
                    raise SettingsError(f"{key}: no network to change (give model=...)")
                from dynviz.model import ConfigError
                from dynviz.model.zoo import load_space

                try:
                    model = load_space(str(train_model)).to_dict()
                except ConfigError as err:
                    raise SettingsError(str(err)) from None
                if route is None:
                    from dynviz.model import Route, load_spec

                    spec = load_spec(str(train_model))
                    if isinstance(spec, Route):
                        from dynviz.model.checkpoint import route_to_dict

                        route = route_to_dict(spec)
            if name == "gate":
                model_overrides[name] = str(value)
            else:
                model_overrides[name] = _coerce(value, model_types[name], key)
            if name in _FROM_MODEL and name not in overrides:
                train.pop(name, None)
        else:
            raise SettingsError(
                f"unknown setting {key!r}: only training arguments (lr=..., train.lr=...) and "
                "model.<field> can be set"
            )
    return dataclasses.replace(
        config,
        train=train,
        model=model,
        route=route,
        model_overrides=model_overrides,
        given=frozenset(given),
    )


# ------------------------------------------------------------------ inference commands
def _action_value(action: argparse.Action, value: Any, key: str) -> Any:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return _coerce(value, "bool", key)
    if isinstance(action, argparse.BooleanOptionalAction):
        return _coerce(value, "bool | None", key)
    if action.nargs in (2, "+", "*"):
        if isinstance(value, str):
            pattern = r"\s+" if action.dest == "aug" else r"[,x\s]+"
            value = [v for v in re.split(pattern, value.strip()) if v]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        if action.nargs == 2 and len(value) != 2:
            raise SettingsError(f"{key}: {value!r} must be a pair, e.g. {key}=64,64")
        items = value
    else:
        items = [value]
    converted = []
    for item in items:
        if item is None:
            converted.append(None)
            continue
        try:
            converted.append(action.type(str(item)) if action.type else item)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
            raise SettingsError(f"{key}: {item!r} is not valid ({err})") from None
        if action.choices is not None and converted[-1] not in action.choices:
            raise SettingsError(
                f"{key}: {item!r} is not one of {', '.join(map(str, action.choices))}"
            )
    return converted if action.nargs in (2, "+", "*") else converted[0]


def command_settings(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    *,
    config: str | None,
    overrides: Sequence[str],
    source_key: str,
) -> argparse.Namespace:
    """Apply ``--config FILE`` and ``KEY=VALUE`` overrides to an inference command's arguments.

    The keys are the command's own option names (``split``, ``limit``, ``size``, ``aug``;
    dashes or underscores). ``FILE`` is a YAML mapping of them, or a run's ``config.yaml``: its
    folder is then the run to load (``source_key``) and its validation data the default data.
    Options given on the command line win over the file; overrides win over both.

    Raises:
        SettingsError: an unknown key (named), or a value the option refuses.
    """
    skip = ("help", "config", "overrides", "cfg_options")
    actions = {a.dest: a for a in parser._actions if a.dest not in skip}
    values: dict[str, Any] = {}
    if config:
        data = _read_mapping(config)
        if "train" in data and isinstance(data["train"], dict):  # a run's config.yaml
            train = data["train"]
            values[source_key] = str(Path(config).parent)
            spec = train.get("val_data") or train.get("data")
            if spec and "data" in actions:
                values["data"] = spec
        else:
            for key, value in data.items():
                name = str(key).replace("-", "_")
                if name not in actions:
                    raise SettingsError(
                        f"{config}: unknown setting {key!r}{suggest(name, list(actions))}"
                    )
                values[name] = _action_value(actions[name], value, name)
    for key, value in values.items():
        default = parser.get_default(key)
        if getattr(args, key, None) in (None, default):
            setattr(args, key, value)
    for key, value in parse_overrides(overrides).items():
        if key not in actions:
            raise SettingsError(f"unknown setting {key!r}{suggest(key, list(actions))}")
        setattr(args, key, _action_value(actions[key], value, key))
    return args
