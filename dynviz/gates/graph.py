"""A gate graph: the decision points of a dynamic network and their options.

Any dynamic network decides, per input, which of its parts run. dynviz describes those
decisions as a :class:`GateGraph`: an ordered tuple of :class:`GatePoint`, each with its
:class:`Option` s. A point is one of four kinds (:class:`PointKind`):

- ``SKIP``: a block's run/skip gate (SkipNet, ConvNet-AIG); options ``skip`` and ``run``, one
  runs;
- ``ROUTER``: a router that picks ``k`` of its options (a mixture of experts' top-k);
- ``EXIT``: an early exit's stop/continue; options ``continue`` and ``exit``;
- ``PATHS``: one or more options, any subset of which may run (the routing space's cells: a
  cell's paths up, keep and down each have their own gate).

An option may carry its cost for one input (multiply-accumulates, MACs) at the recorded size;
with costs, each input's real cost is ``base_macs + sum of the costs of the options that ran``.

The graph is plain data: :meth:`GateGraph.to_dict` and :meth:`GateGraph.from_dict` are the JSON
form the records sidecar holds (key ``graph``).

Example::

    GateGraph(
        name="skipnet",
        points=(
            GatePoint.skip("block1", macs=2.4e6),
            GatePoint.router("moe", ["e0", "e1", "e2", "e3"], k=2, macs=[1e6] * 4),
        ),
        base_macs=5.0e6,
    )
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dynviz.model import ConfigError

__all__ = ["GateGraph", "GatePoint", "Option", "PointKind"]


class PointKind(enum.Enum):
    """What a gate point decides (see the module docstring)."""

    SKIP = "skip"
    ROUTER = "router"
    EXIT = "exit"
    PATHS = "paths"


SKIP_OPTIONS = ("skip", "run")
EXIT_OPTIONS = ("continue", "exit")


@dataclass(frozen=True)
class Option:
    """One option of a gate point.

    Attributes:
        name: unique within its point.
        macs: the option's cost for one input when it runs (None: unknown). A ``skip`` or
            ``continue`` option usually costs 0.
    """

    name: str
    macs: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"option name must be a non-empty string, not {self.name!r}")
        if self.macs is not None and (
            isinstance(self.macs, bool)
            or not isinstance(self.macs, int | float)
            or not math.isfinite(self.macs)
            or self.macs < 0
        ):
            raise ConfigError(
                f"option {self.name!r}: macs must be a number >= 0, not {self.macs!r}"
            )


@dataclass(frozen=True)
class GatePoint:
    """A named decision point.

    Attributes:
        name: unique within its graph (a module path such as ``layer2.1.gate`` reads well).
        kind: what it decides.
        options: its options, in a fixed order (the order of the value columns a model
            reports).
        k: for a ``ROUTER``, how many options run per input (None: any number).
    """

    name: str
    kind: PointKind
    options: tuple[Option, ...]
    k: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"gate point name must be a non-empty string, not {self.name!r}")
        if not isinstance(self.kind, PointKind):
            raise ConfigError(f"gate point {self.name!r}: kind must be a PointKind")
        object.__setattr__(self, "options", tuple(self.options))
        names = [o.name for o in self.options]
        if len(names) < (1 if self.kind is PointKind.PATHS else 2):
            raise ConfigError(f"gate point {self.name!r}: needs at least two options, has {names}")
        if len(set(names)) != len(names):
            raise ConfigError(f"gate point {self.name!r}: option names repeat: {names}")
        if self.kind is PointKind.SKIP and tuple(names) != SKIP_OPTIONS:
            raise ConfigError(f"gate point {self.name!r}: a skip point's options are skip, run")
        if self.kind is PointKind.EXIT and tuple(names) != EXIT_OPTIONS:
            raise ConfigError(
                f"gate point {self.name!r}: an exit point's options are continue, exit"
            )
        if self.k is not None and not (
            isinstance(self.k, int) and not isinstance(self.k, bool) and 1 <= self.k <= len(names)
        ):
            raise ConfigError(
                f"gate point {self.name!r}: k must be an integer in 1..{len(names)}, not {self.k!r}"
            )

    # ---------------------------------------------------------------------- builders
    @classmethod
    def skip(cls, name: str, *, macs: float | None = None) -> GatePoint:
        """A run/skip gate; ``macs`` is the block's cost when it runs."""
        return cls(name, PointKind.SKIP, (Option("skip", 0.0), Option("run", macs)))

    @classmethod
    def router(
        cls, name: str, options: Sequence[str], *, k: int, macs: Sequence[float] | None = None
    ) -> GatePoint:
        """A top-``k`` router over ``options`` (experts); ``macs`` per option."""
        costs = list(macs) if macs is not None else [None] * len(options)
        if len(costs) != len(options):
            raise ConfigError(f"gate point {name!r}: {len(options)} options, {len(costs)} costs")
        return cls(
            name,
            PointKind.ROUTER,
            tuple(Option(o, c) for o, c in zip(options, costs, strict=True)),
            k=k,
        )

    @classmethod
    def exit(cls, name: str, *, macs: float | None = None) -> GatePoint:
        """An early exit; ``macs`` is the exit head's cost when the input stops here."""
        return cls(name, PointKind.EXIT, (Option("continue", 0.0), Option("exit", macs)))

    # --------------------------------------------------------------------------- reading
    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)

    @property
    def has_costs(self) -> bool:
        return all(o.macs is not None for o in self.options)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind.value,
            "options": [{"name": o.name, "macs": o.macs} for o in self.options],
        }
        if self.k is not None:
            out["k"] = self.k
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "graph") -> GatePoint:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: a gate point must be a mapping, not {data!r}")
        try:
            kind = PointKind(data.get("kind"))
        except ValueError:
            kinds = ", ".join(k.value for k in PointKind)
            raise ConfigError(
                f"{where}: gate point {data.get('name')!r} has kind {data.get('kind')!r}; "
                f"expected one of {kinds}"
            ) from None
        options = data.get("options")
        if not isinstance(options, list):
            raise ConfigError(f"{where}: gate point {data.get('name')!r}: options must be a list")
        parsed = []
        for o in options:
            if isinstance(o, str):
                parsed.append(Option(o))
            elif isinstance(o, Mapping):
                parsed.append(Option(o.get("name"), o.get("macs")))
            else:
                raise ConfigError(f"{where}: option {o!r} is not a name or a mapping")
        return cls(data.get("name"), kind, tuple(parsed), k=data.get("k"))


@dataclass(frozen=True)
class GateGraph:
    """The decision points of a dynamic network, in the order they run.

    Attributes:
        points: the points (names unique).
        name: the network's name.
        base_macs: the cost every input pays whatever the decisions (stem, head...), None
            when unknown; with it and every option's cost, an input's real cost is known.
        meta: free-form JSON-able facts (input size the costs were counted at...).
    """

    points: tuple[GatePoint, ...]
    name: str = "network"
    base_macs: float | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", tuple(self.points))
        if not self.points:
            raise ConfigError(f"gate graph {self.name!r} has no gate points")
        names = [p.name for p in self.points]
        seen: set[str] = set()
        for n in names:
            if n in seen:
                raise ConfigError(f"gate graph {self.name!r}: point {n!r} appears twice")
            seen.add(n)

    def __iter__(self) -> Iterator[GatePoint]:
        return iter(self.points)

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, name: str) -> GatePoint:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(f"gate graph {self.name!r} has no point {name!r}")

    @property
    def point_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.points)

    @property
    def has_costs(self) -> bool:
        """Whether every option's cost and the base cost are known."""
        return self.base_macs is not None and all(p.has_costs for p in self.points)

    @property
    def all_run_macs(self) -> float | None:
        """The cost when every option of every point runs (None without costs)."""
        if not self.has_costs:
            return None
        return float(self.base_macs) + sum(o.macs for p in self.points for o in p.options)

    def option_macs(self) -> dict[tuple[str, str], float]:
        """``{(point, option): macs}`` for the options whose cost is known."""
        return {
            (p.name, o.name): o.macs for p in self.points for o in p.options if o.macs is not None
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base_macs": self.base_macs,
            "points": [p.to_dict() for p in self.points],
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "graph") -> GateGraph:
        """Parse :meth:`to_dict`'s mapping.

        Raises:
            ConfigError: a malformed graph, naming ``where`` and the point.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: a gate graph must be a mapping, not {type(data).__name__}")
        points = data.get("points")
        if not isinstance(points, list):
            raise ConfigError(f"{where}: 'points' must be a list")
        base = data.get("base_macs")
        if base is not None and (isinstance(base, bool) or not isinstance(base, int | float)):
            raise ConfigError(f"{where}: 'base_macs' must be a number, not {base!r}")
        meta = data.get("meta") or {}
        if not isinstance(meta, Mapping):
            raise ConfigError(f"{where}: 'meta' must be a mapping")
        return cls(
            tuple(GatePoint.from_dict(p, where=where) for p in points),
            name=str(data.get("name") or "network"),
            base_macs=None if base is None else float(base),
            meta=dict(meta),
        )
