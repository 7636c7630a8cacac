"""Which cells and paths of a routing space a set of open paths reaches (pure Python).

The one place that answers reachability; route validation (:mod:`dynviz.model.route`), common
network pruning (:func:`dynviz.analysis.common.prune_dangling`), the cost model's per-image
propagation (:func:`dynviz.model.cost.propagate`, vectorised over images along :func:`edges`) and
the route graphs (:mod:`dynviz.model.graph`) use it.

Two questions, two semantics:

* :func:`reach`: what a forward pass computes when only ``open_paths`` are open (Eqs. 5-6): the
  initial cell is fed by the stem; a cell that receives input and has an open path runs its
  operation; a cell that receives input but whose paths are all closed is skipped and its input
  X passes through to the same scale of the next layer (as through its keep output).
* :func:`live`: the paths that lie on a complete route of a *static* network: fed from the stem
  (through open paths only) and leading on to the decoder. A path that is open but not live
  leaves a dangling cell (:func:`dangling`); a valid route spec has none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from dynviz.model.config import Direction, PathKey, RoutingSpaceConfig

__all__ = [
    "Edge",
    "Reach",
    "cell_edges",
    "dangling",
    "edges",
    "fed_and_onward",
    "live",
    "reach",
]

Cell = tuple[int, int]


@dataclass(frozen=True)
class Edge:
    """A path of the space: from cell ``(layer, scale)`` in ``direction`` to ``target``
    (``None`` for a last-layer keep, which feeds the decoder)."""

    layer: int
    scale: int
    direction: Direction
    target: Cell | None

    @property
    def key(self) -> PathKey:
        return (self.layer, self.scale, self.direction)

    @property
    def source(self) -> Cell:
        return (self.layer, self.scale)


@cache
def edges(config: RoutingSpaceConfig) -> tuple[Edge, ...]:
    """Every path of the space with its target, in forward order (by layer, then scale, then
    keep/up/down): a single pass over them sees each cell's inputs before its outputs."""
    return tuple(
        Edge(layer, scale, d, config.target(layer, scale, d)) for layer, scale, d in config.paths
    )


@cache
def cell_edges(config: RoutingSpaceConfig) -> tuple[tuple[Cell, tuple[Edge, ...]], ...]:
    """:func:`edges` grouped by source cell: ``((cell, its paths), ...)`` in forward order."""
    grouped: dict[Cell, list[Edge]] = {}
    for edge in edges(config):
        grouped.setdefault(edge.source, []).append(edge)
    return tuple((cell, tuple(out)) for cell, out in grouped.items())


@dataclass(frozen=True)
class Reach:
    """What a forward pass with some paths open computes (:func:`reach`).

    Attributes:
        fed: cells that receive input (the initial cell always does).
        ran: cells that run their operation (fed, with an open path).
        passed: cells that are fed but skipped: their input passes through to the next layer.
        paths: open paths that carry data (their source cell ran).
        inputs: how many inputs each fed cell sums (a passed-through X counts as one).
        decoder: scales whose last-layer cell is fed (the decoder's inputs).
    """

    fed: frozenset[Cell]
    ran: frozenset[Cell]
    passed: frozenset[Cell]
    paths: frozenset[PathKey]
    inputs: dict[Cell, int]
    decoder: frozenset[int]


def _keys(open_paths: Iterable[PathKey]) -> frozenset[PathKey]:
    return frozenset((int(a), int(b), Direction.parse(d)) for a, b, d in open_paths)


def reach(config: RoutingSpaceConfig, open_paths: Iterable[PathKey]) -> Reach:
    """The forward pass of the module docstring: which cells are fed, run or passed through,
    and which open paths carry data."""
    opened = _keys(open_paths)
    inputs: dict[Cell, int] = {(0, 0): 1}
    ran: set[Cell] = set()
    carried: set[PathKey] = set()
    for cell, out in cell_edges(config):  # forward order
        if cell not in inputs:
            continue
        open_out = [e for e in out if e.key in opened]
        if open_out:
            ran.add(cell)
            carried.update(e.key for e in open_out)
            targets = [e.target for e in open_out]
        elif cell[0] < config.num_layers:  # skipped: X passes through the keep output
            targets = [(cell[0] + 1, cell[1])]
        else:
            targets = [None]
        for target in targets:
            if target is not None:
                inputs[target] = inputs.get(target, 0) + 1
    fed = frozenset(inputs)
    last = config.num_layers
    return Reach(
        fed=fed,
        ran=frozenset(ran),
        passed=fed - ran,
        paths=frozenset(carried),
        inputs=inputs,
        decoder=frozenset(scale for layer, scale in fed if layer == last),
    )


def fed_and_onward(
    config: RoutingSpaceConfig, open_paths: Iterable[PathKey]
) -> tuple[frozenset[Cell], frozenset[Cell]]:
    """``(fed, onward)``: the cells fed from the stem through open paths (no pass-through), and
    the cells with an open way on to the decoder."""
    opened = _keys(open_paths)
    fed: set[Cell] = {(0, 0)}
    for edge in edges(config):
        if edge.key in opened and edge.source in fed and edge.target is not None:
            fed.add(edge.target)
    onward: set[Cell] = set()
    for edge in reversed(edges(config)):
        if edge.key in opened and (edge.target is None or edge.target in onward):
            onward.add(edge.source)
    return frozenset(fed), frozenset(onward)


def live(config: RoutingSpaceConfig, open_paths: Iterable[PathKey]) -> frozenset[PathKey]:
    """The open paths on a complete route: their source cell is fed from the stem through open
    paths (no pass-through) and their target leads on, through open paths, to the decoder.

    This is the largest subset of ``open_paths`` without a dangling cell (repeatedly removing
    dangling paths ends here), possibly empty.
    """
    opened = _keys(open_paths)
    fed, onward = fed_and_onward(config, opened)
    return frozenset(
        edge.key
        for edge in edges(config)
        if edge.key in opened
        and edge.source in fed
        and (edge.target is None or edge.target in onward)
    )


def dangling(config: RoutingSpaceConfig, open_paths: Iterable[PathKey]) -> frozenset[PathKey]:
    """The open paths that are not :func:`live` (each leaves a dangling cell)."""
    opened = _keys(open_paths)
    return opened - live(config, opened)
