"""Route specs: which paths of a routing space are open.

A route is a set of open paths ``(layer, scale_index, direction)``. It is used two ways:

* forced onto a dynamic model, ``model(images, route=route)``: open paths get alpha 1, closed 0;
* to build a static network (``build_model("fcn32s")``): only the route's cells and transforms
  exist, with no gates.

Route YAML (``models/*.yaml`` with a ``space`` key)::

    name: fcn32s
    space: layer16            # a preset name, a YAML path, or an inline mapping
    description: ...
    chains:                   # optional: one stride per layer 0..L; each chain is a path
      - [4, 8, 16, 32, 32, ...]
    paths:                    # optional: explicit open paths [layer, stride, direction]
      - [3, 32, keep]

A route must be a valid network: every open path starts in a cell that receives an open path
(or the initial cell, fed by the stem) and ends in a cell with an open path onward (or in the
decoder). Anything else is rejected with a :class:`RouteError` that names the offending path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from dynviz.model.config import ConfigError, Direction, PathKey, RoutingSpaceConfig
from dynviz.model.presets import is_preset, resolve_space
from dynviz.model.topology import fed_and_onward

__all__ = ["Route", "RouteError", "format_path"]

_ROUTE_KEYS = {"name", "space", "description", "paper", "chains", "paths", "notes"}


class RouteError(ConfigError):
    """A route spec is not a valid network in its space; the message names the path."""


def format_path(path: PathKey) -> str:
    layer, scale, direction = path
    return f"(layer {layer}, 1/{RoutingSpaceConfig.stride(scale)}, {Direction(direction).label})"


@dataclass(frozen=True)
class Route:
    """A validated set of open paths of ``space``."""

    space: RoutingSpaceConfig
    paths: frozenset[PathKey]
    name: str = ""
    description: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        normal = frozenset(
            (int(layer), int(scale), Direction.parse(d)) for layer, scale, d in self.paths
        )
        object.__setattr__(self, "paths", normal)
        _validate(self.space, normal, self.name or "route")

    # --------------------------------------------------------------------------- builders
    @classmethod
    def all_open(cls, config: RoutingSpaceConfig) -> Route:
        return cls(config, frozenset(config.paths), name=f"{config.name}-all-open")

    @classmethod
    def from_chains(
        cls, config: RoutingSpaceConfig, chains: Iterable[Iterable[int]], **kwargs: Any
    ) -> Route:
        """Build a route from chains of strides (one per layer 0..L)."""
        return cls(config, frozenset(_chains_to_paths(config, chains)), **kwargs)

    @classmethod
    def from_mask(cls, config: RoutingSpaceConfig, mask: torch.Tensor, **kwargs: Any) -> Route:
        """Build a route from a boolean ``(L + 1, S, 3)`` tensor of open paths."""
        expected = (config.num_layers + 1, config.num_scales, len(Direction))
        if tuple(mask.shape) != expected:
            raise RouteError(f"route mask has shape {tuple(mask.shape)}, expected {expected}")
        opened = mask.nonzero().tolist()
        for layer, scale, d in opened:
            if not config.has_path(layer, scale, Direction(d)):
                raise RouteError(
                    f"path {format_path((layer, scale, Direction(d)))} is outside "
                    f"the space {config.name!r}"
                )
        return cls(config, frozenset((a, b, Direction(c)) for a, b, c in opened), **kwargs)

    # ----------------------------------------------------------------------------- views
    def mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Boolean ``(L + 1, S, 3)`` tensor, True on open paths."""
        out = torch.zeros(
            self.space.num_layers + 1, self.space.num_scales, len(Direction), dtype=torch.bool
        )
        for layer, scale, d in self.paths:
            out[layer, scale, int(d)] = True
        return out if device is None else out.to(device)

    @property
    def cells(self) -> frozenset[tuple[int, int]]:
        """Cells that run in this route (those with an open path)."""
        return frozenset((layer, scale) for layer, scale, _ in self.paths)

    def directions(self, layer: int, scale: int) -> tuple[Direction, ...]:
        return tuple(
            d for d in self.space.directions(layer, scale) if (layer, scale, d) in self.paths
        )

    def __len__(self) -> int:
        return len(self.paths)

    def sorted_paths(self) -> list[PathKey]:
        return sorted(self.paths, key=lambda p: (p[0], p[1], int(p[2])))

    # ------------------------------------------------------------------------------- YAML
    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        source: str = "route",
        space: RoutingSpaceConfig | None = None,
        base_dir: Path | None = None,
    ) -> Route:
        for key in data:
            if key not in _ROUTE_KEYS:
                raise RouteError(
                    f"{source}: unknown key {key!r}; known keys: {', '.join(sorted(_ROUTE_KEYS))}"
                )
        if space is None:
            if "space" not in data:
                raise RouteError(f"{source}: missing key 'space' (a preset name or a mapping)")
            space = _resolve_space(data["space"], source=source, base_dir=base_dir)
        chains = data.get("chains") or []
        raw_paths = data.get("paths") or []
        for key, value in (("chains", chains), ("paths", raw_paths)):
            if not isinstance(value, (list, tuple)):
                raise RouteError(f"{source}: {key} must be a list, not {value!r}")
        if not chains and not raw_paths:
            raise RouteError(f"{source}: a route needs 'paths' or 'chains'")
        try:
            paths = set(_chains_to_paths(space, chains))
            paths |= set(_parse_paths(space, raw_paths))
            meta = {k: data[k] for k in ("paper", "notes") if k in data}
            return cls(
                space,
                frozenset(paths),
                name=str(data.get("name", "")),
                description=str(data.get("description", "")),
                meta=meta,
            )
        except RouteError as err:
            raise RouteError(f"{source}: {err}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, *, space: RoutingSpaceConfig | None = None) -> Route:
        from dynviz.model.config import _read_yaml_mapping

        path = Path(path)
        data = _read_yaml_mapping(path)
        return cls.from_dict(data, source=str(path), space=space, base_dir=path.parent)

    def to_dict(self) -> dict[str, Any]:
        space: Any = self.space.name if is_preset(self.space) else self.space.to_dict()
        out: dict[str, Any] = {"name": self.name, "space": space}
        if self.description:
            out["description"] = self.description
        out.update(self.meta)
        out["paths"] = [
            [layer, self.space.stride(scale), d.label] for layer, scale, d in self.sorted_paths()
        ]
        return out

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text


# --------------------------------------------------------------------------------- helpers
def _resolve_space(ref: Any, *, source: str, base_dir: Path | None) -> RoutingSpaceConfig:
    if not isinstance(ref, (Mapping, str)):
        raise RouteError(f"{source}: space must be a preset name, a YAML path or a mapping")
    return resolve_space(ref, source=source, base_dir=base_dir)


def _scale_of_stride(config: RoutingSpaceConfig, stride: Any, where: str) -> int:
    for scale in range(config.num_scales):
        if stride == config.stride(scale):
            return scale
    strides = ", ".join(str(config.stride(s)) for s in range(config.num_scales))
    raise RouteError(f"{where}: stride {stride!r} is not one of {strides}")


def _parse_paths(config: RoutingSpaceConfig, raw: Iterable[Any]) -> Iterable[PathKey]:
    for item in raw:
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise RouteError(f"path {item!r} must be [layer, stride, direction]")
        layer, stride, d = item
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise RouteError(f"path {item!r}: layer must be an integer")
        scale = _scale_of_stride(config, stride, f"path {item!r}")
        try:
            direction = Direction.parse(d)
        except ConfigError as err:
            raise RouteError(f"path {item!r}: {err}") from None
        yield (layer, scale, direction)


def _chains_to_paths(
    config: RoutingSpaceConfig, chains: Iterable[Iterable[int]]
) -> Iterable[PathKey]:
    for number, chain in enumerate(chains):
        where = f"chain {number}"
        if not isinstance(chain, (list, tuple)):
            raise RouteError(f"{where}: {chain!r} must be a list of strides, one per layer")
        strides = list(chain)
        if len(strides) != config.num_layers + 1:
            raise RouteError(
                f"{where} has {len(strides)} strides; expected one per layer 0..{config.num_layers}"
                f" ({config.num_layers + 1})"
            )
        scales = [_scale_of_stride(config, s, f"{where}, layer {i}") for i, s in enumerate(strides)]
        for layer in range(config.num_layers):
            step = scales[layer + 1] - scales[layer]
            if step not in (-1, 0, 1):
                raise RouteError(
                    f"{where}: layer {layer} -> {layer + 1} jumps from 1/{strides[layer]} to "
                    f"1/{strides[layer + 1]}; adjacent layers differ by at most one scale"
                )
            yield (
                layer,
                scales[layer],
                {0: Direction.KEEP, -1: Direction.UP, 1: Direction.DOWN}[step],
            )
        yield (config.num_layers, scales[-1], Direction.KEEP)


def _validate(config: RoutingSpaceConfig, paths: frozenset[PathKey], name: str) -> None:
    if not paths:
        raise RouteError(f"{name}: no open path")
    for path in sorted(paths, key=lambda p: (p[0], p[1], int(p[2]))):
        layer, scale, d = path
        if not config.has_path(layer, scale, d):
            raise RouteError(
                f"{name}: path {format_path(path)} is outside the space "
                f"{config.name!r} (L={config.num_layers}, {config.num_scales} scales)"
            )
    fed, onward = fed_and_onward(config, paths)
    for path in sorted(paths, key=lambda p: (p[0], p[1], int(p[2]))):
        layer, scale, d = path
        if (layer, scale) not in fed:
            raise RouteError(
                f"{name}: path {format_path(path)} leaves a dangling cell: cell (layer {layer}, "
                f"1/{config.stride(scale)}) receives no open path from the stem"
            )
        target = config.target(layer, scale, d)
        if target is not None and target not in onward:
            raise RouteError(
                f"{name}: path {format_path(path)} ends in a dangling cell: cell (layer "
                f"{target[0]}, 1/{config.stride(target[1])}) has no open way to the decoder"
            )
