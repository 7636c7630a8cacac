"""The routing space (Sec. 3.1 of Li et al., CVPR 2020) as one frozen dataclass.

A space has a fixed stem to 1/4, one initial cell at 1/4 (layer 0), then ``num_layers`` routing
layers (1..L) whose cells cover the scales 1/4 .. 1/(4 * 2**(num_scales - 1)) with a triangle start:
layer ``layer`` holds ``min(layer + 1, num_scales)`` cells. Widths double as the resolution halves.

Every cell owns up to three paths (its scale transforms), indexed by :class:`Direction`:
``KEEP`` to the same scale, ``UP`` to the next finer scale (resolution x2, channels /2) and ``DOWN``
to the next coarser scale (resolution /2, channels x2). Cells of the last layer only keep; their
output feeds the decoder. A path is named by its *source* cell: ``(layer, scale_index, direction)``.

Symbols: ``scale_index`` 0 is stride 4; ``stride(scale_index) = 4 * 2**scale_index``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from dynviz.errors import BadFileError, UserError, yaml_problem

__all__ = [
    "ConfigError",
    "ConfigFileError",
    "Direction",
    "GateKind",
    "OFFICIAL_DROP_THRESHOLD",
    "PathKey",
    "RoutingSpaceConfig",
    "Semantics",
    "TRAINING_KEYS",
    "split_training",
]


class ConfigError(UserError):
    """A model configuration is invalid; the message names the key or value."""


class ConfigFileError(ConfigError, BadFileError):
    """A model or route YAML file is missing or unreadable; the message names it."""


class Direction(enum.IntEnum):
    """A scale transform. The integer is the index in dense gate tensors (official gate order)."""

    KEEP = 0
    UP = 1
    DOWN = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def step(self) -> int:
        """Change of scale index along this path."""
        return {Direction.KEEP: 0, Direction.UP: -1, Direction.DOWN: 1}[self]

    @classmethod
    def parse(cls, value: str | int | Direction) -> Direction:
        if isinstance(value, Direction):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value in range(len(cls)):
            return cls(value)
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        raise ConfigError(f"unknown direction {value!r}; expected one of keep, up, down")


class GateKind(enum.Enum):
    """Which soft conditional gate the cells carry (Sec. 3.2.2)."""

    FULL = "full"  # gate on the node input X at full resolution (Dynamic-Raw)
    SMALL = "small"  # X resized by 0.25 first (Dynamic-A/B/C)
    NONE = "none"  # no gates: every path open with weight 1 (Network-Fix)


class Semantics(enum.Enum):
    """Which function the network computes (docs/official.md).

    ``PAPER`` is the paper's network: padded stem, a path is open when alpha > the active
    threshold, a node that received nothing is not computed. ``OFFICIAL`` is the official
    code's inference function, per sample: unpadded stem conv, a cell is dropped (its input
    passes through) when its alpha sum is below 1e-4, a node fed only closed paths still runs
    on a zero input, and the small gate resizes with ``scale_factor=0.25``.
    """

    PAPER = "paper"
    OFFICIAL = "official"


OFFICIAL_DROP_THRESHOLD = 1e-4  # official: a cell is dropped when its alpha sum is below this

PathKey = tuple[int, int, Direction]  # (layer, scale_index, direction) of the source cell


_INTEGER_RANGES = {
    "num_layers": (1, 128),
    "num_scales": (2, 6),
    "num_classes": (1, 4096),
    "base_channels": (2, 4096),
}
"""The integer fields' ranges. The upper bounds are far above any network of the paper (33
layers, 4 scales, 64 channels) and refuse a typo such as ``num_layers: 16000`` at once instead
of exhausting the memory while the routing space is enumerated."""


@dataclass(frozen=True)
class RoutingSpaceConfig:
    """One routing space: the architecture only.

    Unknown keys in YAML are rejected; values are checked in ``__post_init__``. Training settings
    (the budget's lambda and mu) are not part of it: a preset may carry defaults for them in a
    ``training:`` section (see :func:`split_training`), which ``dynviz train`` reads.
    """

    name: str = "layer16"
    num_layers: int = 16  # L, routing layers after the initial cell
    num_scales: int = 4  # scales 1/4 .. 1/32
    base_channels: int = 64  # C at 1/4; the stem width too
    num_classes: int = 19
    gate: GateKind = GateKind.FULL
    gate_bias_init: float = 1.5  # tanh(1.5) = 0.905: paths start about 90% open
    active_threshold: float = 0.0  # a path is active when alpha > this (paper: alpha > 0)
    semantics: Semantics = Semantics.PAPER  # official: the official code's function
    description: str = ""

    def __post_init__(self) -> None:
        self._set_enum("gate", GateKind)
        self._set_enum("semantics", Semantics)
        for key in ("name", "description"):
            if not isinstance(getattr(self, key), str):
                raise ConfigError(f"{key}: {getattr(self, key)!r} must be a string")
        for key, (low, high) in _INTEGER_RANGES.items():
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{key}: {value!r} must be an integer >= {low}")
            if value > high:
                raise ConfigError(f"{key}: {value} must be <= {high}")
        if self.base_channels % 2:
            raise ConfigError(f"base_channels: {self.base_channels} must be even")
        for key in ("gate_bias_init", "active_threshold"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"{key}: {value!r} must be a number")
            object.__setattr__(self, key, float(value))
        if not 0.0 <= self.active_threshold < 1.0:
            raise ConfigError(f"active_threshold: {self.active_threshold} must be in [0, 1)")

    def _set_enum(self, key: str, kind: type[enum.Enum]) -> None:
        """Field ``key`` as a member of ``kind`` (YAML gives its value as a string)."""
        value = getattr(self, key)
        if isinstance(value, kind):
            return
        try:
            object.__setattr__(self, key, kind(value))
        except (ValueError, TypeError):
            choices = ", ".join(str(member.value) for member in kind)
            raise ConfigError(f"{key}: {value!r} is not one of {choices}") from None

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> RoutingSpaceConfig:
        """Build from a mapping; a ``training:`` section and the training keys of older files
        (``budget_lambda``, ``budget_mu``) are set aside (:func:`split_training`)."""
        data, _ = split_training(data, source=source)
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(
                    f"{source}: unknown key {key!r}; known keys: {', '.join(sorted(known))}"
                )
        try:
            return cls(**dict(data))
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> RoutingSpaceConfig:
        data = _read_yaml_mapping(path)
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["gate"] = self.gate.value
        out["semantics"] = self.semantics.value
        return out

    def replace(self, **changes: Any) -> RoutingSpaceConfig:
        known = {f.name for f in dataclasses.fields(self)}
        for key in changes:
            if key not in known:
                raise ConfigError(
                    f"unknown override {key!r}; known keys: {', '.join(sorted(known))}"
                )
        return dataclasses.replace(self, **changes)

    # --------------------------------------------------------------------------- topology
    @property
    def official(self) -> bool:
        """Whether the network computes the official code's function (:class:`Semantics`)."""
        return self.semantics is Semantics.OFFICIAL

    def is_active(self, alpha: Any) -> Any:
        """The active rule: a path runs when its ``alpha > active_threshold`` (the paper: above
        0). Numbers, numpy arrays and tensors alike; the network, the recorder and the cost model
        apply it through this method."""
        return alpha > self.active_threshold

    @property
    def has_gates(self) -> bool:
        return self.gate is not GateKind.NONE

    def channels(self, scale: int) -> int:
        return self.base_channels * 2**scale

    @staticmethod
    def stride(scale: int) -> int:
        return 4 * 2**scale

    @property
    def max_stride(self) -> int:
        return self.stride(self.num_scales - 1)

    def scales_in_layer(self, layer: int) -> range:
        """Scale indices of the cells in ``layer`` (0 = the initial cell)."""
        if layer == 0:
            return range(1)
        if 1 <= layer <= self.num_layers:
            return range(min(layer + 1, self.num_scales))
        return range(0)

    def has_cell(self, layer: int, scale: int) -> bool:
        return scale in self.scales_in_layer(layer)

    @cached_property
    def cells(self) -> tuple[tuple[int, int], ...]:
        """Every cell ``(layer, scale)`` in forward order."""
        return tuple(
            (layer, scale)
            for layer in range(self.num_layers + 1)
            for scale in self.scales_in_layer(layer)
        )

    def directions(self, layer: int, scale: int) -> tuple[Direction, ...]:
        """The paths a cell owns, in gate order (keep, up, down)."""
        if not self.has_cell(layer, scale):
            return ()
        if layer == self.num_layers:
            return (Direction.KEEP,)
        out = [Direction.KEEP]
        if scale > 0:
            out.append(Direction.UP)
        if scale < self.num_scales - 1:
            out.append(Direction.DOWN)
        return tuple(out)

    @cached_property
    def paths(self) -> tuple[PathKey, ...]:
        """Every path of the space, in forward order."""
        return tuple(
            (layer, scale, d) for layer, scale in self.cells for d in self.directions(layer, scale)
        )

    def has_path(self, layer: int, scale: int, direction: Direction) -> bool:
        return direction in self.directions(layer, scale)

    def target(self, layer: int, scale: int, direction: Direction) -> tuple[int, int] | None:
        """The receiving cell of a path; ``None`` for last-layer keeps (they feed the decoder)."""
        if layer == self.num_layers:
            return None
        return (layer + 1, scale + direction.step)

    def incoming(self, layer: int, scale: int) -> tuple[PathKey, ...]:
        """Paths that end in cell ``(layer, scale)``."""
        if layer == 0:
            return ()
        out = []
        for d in Direction:
            src = scale - d.step
            if self.has_path(layer - 1, src, d):
                out.append((layer - 1, src, d))
        return tuple(out)

    @property
    def num_cells(self) -> int:
        return len(self.cells)


TRAINING_KEYS = ("budget_lambda", "budget_mu")  # training defaults a preset may carry


def split_training(
    data: Mapping[str, Any], *, source: str = "config"
) -> tuple[dict[str, Any], dict[str, float]]:
    """Split a model mapping into its architecture and its training defaults.

    Training defaults sit in a ``training:`` section (``budget_lambda``, ``budget_mu``); files
    and checkpoints written before they left the architecture carry them at the top level, and
    load the same way.

    Raises:
        ConfigError: an unknown training key or a value that is not a number.
    """
    arch = dict(data)
    section = arch.pop("training", None) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{source}: training: expected a mapping of {', '.join(TRAINING_KEYS)}")
    training: dict[str, float] = {}
    for key in TRAINING_KEYS:
        if key in arch:  # older files: at the top level
            training[key] = arch.pop(key)
    for key, value in section.items():
        if key not in TRAINING_KEYS:
            raise ConfigError(
                f"{source}: training: unknown key {key!r}; known keys: {', '.join(TRAINING_KEYS)}"
            )
        training[key] = value
    for key, value in training.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{source}: {key}: {value!r} must be a number")
        training[key] = float(value)
    if training.get("budget_lambda", 0.0) < 0:
        raise ConfigError(f"{source}: budget_lambda: {training['budget_lambda']} must be >= 0")
    if not 0.0 <= training.get("budget_mu", 0.0) <= 1.0:
        raise ConfigError(f"{source}: budget_mu: {training['budget_mu']} must be in [0, 1]")
    return arch, training


def _read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigFileError(f"{path}: cannot read ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path}: not a text file (not UTF-8)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigFileError(f"{path}: not valid YAML ({yaml_problem(err)})") from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: expected a mapping at the top level")
    return data
