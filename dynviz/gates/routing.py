"""The routing space as one kind of gate graph.

Each cell of a routing space is a ``PATHS`` point named ``L{layer}/s{stride}`` (``L3/s8``: the
cell of layer 3 at stride 8) whose options are the directions its paths take (``up``, ``keep``,
``down``, those the space has), in the paper's order. A routing-space recording's ``gates``
table reads as decisions of that graph: the value of an option is the gate's own alpha
(``gate_alpha``) and it ran where the path was active. The records on disk stay as they are;
:func:`routing_decisions` is the reading.

Option costs are not given: a cell's operation runs when any of its paths does, so the cost of a
path is not the cost of its option alone. The per-image real cost of a routing-space recording
is its ``real_gmacs`` column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dynviz.gates.graph import GateGraph, GatePoint, Option, PointKind
from dynviz.model import Direction, RoutingSpaceConfig
from dynviz.model.topology import cell_edges

__all__ = ["cell_point", "routing_decisions", "routing_graph"]

_ORDER = (Direction.UP, Direction.KEEP, Direction.DOWN)


def cell_point(layer: int, stride: int) -> str:
    """The gate point name of the cell of ``layer`` at ``stride`` (``L3/s8``)."""
    return f"L{layer}/s{stride}"


def routing_graph(config: RoutingSpaceConfig, *, name: str | None = None) -> GateGraph:
    """The gate graph of a routing space: one ``PATHS`` point per cell that has gated paths, in
    forward order."""
    points = []
    for (layer, scale), out in cell_edges(config):
        directions = {e.direction for e in out}
        options = tuple(Option(d.label) for d in _ORDER if d in directions)
        points.append(GatePoint(cell_point(layer, config.stride(scale)), PointKind.PATHS, options))
    return GateGraph(tuple(points), name=name or "routing space", meta={"kind": "routing-space"})


def routing_decisions(gates: pd.DataFrame) -> pd.DataFrame:
    """A routing-space ``gates`` table as gate-graph decisions (``image_id``, ``point``,
    ``option``, ``value``, ``ran``; :data:`dynviz.record.format.DECISION_COLUMNS`).

    Vectorised over the rows (records of 100,000 images hold 15 M of them): the points are
    categories made from the distinct ``(layer, scale)`` pairs, in forward order. Every array
    of 15 M rows costs its page faults (0.2 s each on two cores), so the cell code is made in
    the narrowest integer that holds it and the frame takes its columns without copying them."""
    value = gates["gate_alpha"] if "gate_alpha" in gates else gates["alpha"]
    codes, cells = _cell_codes(gates["layer"].to_numpy(), gates["scale"].to_numpy())
    names = [cell_point(layer, stride) for layer, stride in cells]
    direction = gates["direction"]
    if not isinstance(direction.dtype, pd.CategoricalDtype):
        direction = direction.astype(str).astype("category")
    option = pd.Categorical.from_codes(
        direction.cat.codes.to_numpy(), categories=[str(c) for c in direction.cat.categories]
    )
    return pd.DataFrame(
        {
            "image_id": gates["image_id"]
            if isinstance(gates["image_id"].dtype, pd.StringDtype)
            else gates["image_id"].astype("string"),
            "point": pd.Categorical.from_codes(codes, categories=names),
            "option": option,
            "value": value.to_numpy(np.float32),
            "ran": gates["active"].to_numpy(bool),
        },
        copy=False,  # fresh or read-only (copy-on-write) columns: a copy is 0.15 s of 15 M rows
    )


def _cell_codes(layer: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Per row, the index of its ``(layer, scale)`` cell among the distinct cells in layer-major
    order, and those cells. O(rows), no sort: the cell's offset in the table of every
    ``(layer, scale)`` between the smallest and largest ones is looked up."""
    if not len(layer):
        return np.zeros(0, dtype=np.int8), []
    low_l, low_s = int(layer.min()), int(scale.min())
    width = int(scale.max()) - low_s + 1
    size = (int(layer.max()) - low_l + 1) * width
    kind = np.int16 if size <= np.iinfo(np.int16).max else np.int64
    code = layer.astype(kind)  # (layer - low_l) * width + (scale - low_s), in place
    if low_l:
        code -= low_l
    code *= width
    code += scale.astype(kind, copy=False)
    if low_s:
        code -= low_s
    present = np.zeros(size, dtype=bool)
    present[code] = True
    found = np.flatnonzero(present)
    lookup = np.zeros(size, dtype=np.int8 if found.size <= 127 else np.int32)
    lookup[found] = np.arange(found.size)
    cells = [(int(c) // width + low_l, int(c) % width + low_s) for c in found]
    return lookup[code], cells
