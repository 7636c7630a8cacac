"""Which cells and paths of a routing space a set of open paths reaches.

The one place that answers reachability, with one walk over the space's edges
(:func:`propagate`, batched over images): the cost model charges what it finds
(:mod:`dynviz.model.cost`), and :func:`reach`, its one-image form, serves route validation
(:mod:`dynviz.model.route`), common network pruning (:func:`dynviz.analysis.common.prune_dangling`)
and the route graphs (:mod:`dynviz.model.graph`).

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
from typing import Any

import numpy as np
import torch

from dynviz.model.config import Direction, PathKey, RoutingSpaceConfig

__all__ = [
    "Edge",
    "Reach",
    "cell_edges",
    "dangling",
    "edges",
    "fed_and_onward",
    "live",
    "propagate",
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


def propagate(
    config: RoutingSpaceConfig, active: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which nodes received input, ran their operation, and how many inputs they summed.

    The one walk over the space's edges (:func:`cell_edges`, forward order), batched over
    images: the initial cell is fed by the stem, a fed cell with an open path runs, a fed cell
    without one passes its input through its keep output. :func:`reach` is its one-image form
    and the cost model (:mod:`dynviz.model.cost`) charges what it finds.

    Args:
        active: ``(B, L + 1, S, 3)`` bool of computed paths.
    Returns:
        has_input ``(B, L + 1, S)``, on ``(B, L + 1, S)``, inputs ``(B, L + 1, S)``.
    """
    if active.device.type == "cpu":  # the same walk on numpy arrays: 5x faster (small ops)
        has, on, count = _walk(config, active.numpy(force=True), np)
        return torch.from_numpy(has), torch.from_numpy(on), torch.from_numpy(count)
    return _walk(config, active, torch)


def _walk(config: RoutingSpaceConfig, active: Any, xp: Any) -> tuple[Any, Any, Any]:
    """:func:`propagate` on arrays of the module ``xp`` (numpy or torch), which index alike."""
    shape = (active.shape[0], config.num_layers + 1, config.num_scales)
    if xp is np:
        has, on, count = np.zeros(shape, bool), np.zeros(shape, bool), np.zeros(shape, np.int64)
    else:
        has = torch.zeros(shape, dtype=torch.bool, device=active.device)
        on = torch.zeros_like(has)
        count = torch.zeros(shape, dtype=torch.int64, device=active.device)
    has[:, 0, 0] = True
    count[:, 0, 0] = 1
    for (layer, scale), out in cell_edges(config):
        fed = has[:, layer, scale]
        on[:, layer, scale] = active[:, layer, scale, [int(e.direction) for e in out]].any(-1) & fed
        passthrough = fed & ~on[:, layer, scale]
        for edge in out:
            if edge.target is None:  # a last-layer keep: the decoder
                continue
            arrived = active[:, layer, scale, int(edge.direction)] & fed
            if edge.direction is Direction.KEEP:
                arrived = arrived | passthrough
            has[:, edge.target[0], edge.target[1]] |= arrived
            count[:, edge.target[0], edge.target[1]] += arrived
    return has, on, count


def reach(config: RoutingSpaceConfig, open_paths: Iterable[PathKey]) -> Reach:
    """The forward pass of the module docstring: which cells are fed, run or passed through,
    and which open paths carry data (:func:`propagate` of one image)."""
    opened = _keys(open_paths)
    mask = torch.zeros((1, config.num_layers + 1, config.num_scales, len(Direction)), dtype=bool)
    for edge in edges(config):
        if edge.key in opened:
            mask[0, edge.layer, edge.scale, int(edge.direction)] = True
    has, on, count = (t[0].tolist() for t in propagate(config, mask))
    inputs = {
        (layer, scale): int(count[layer][scale])
        for layer in range(config.num_layers + 1)
        for scale in range(config.num_scales)
        if has[layer][scale]
    }
    fed = frozenset(inputs)
    ran = frozenset(cell for cell in fed if on[cell[0]][cell[1]])
    last = config.num_layers
    return Reach(
        fed=fed,
        ran=ran,
        passed=fed - ran,
        paths=frozenset(e.key for e in edges(config) if e.key in opened and e.source in fed),
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
