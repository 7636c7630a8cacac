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
    categories made from the distinct ``(layer, scale)`` pairs, in forward order."""
    value = gates["gate_alpha"] if "gate_alpha" in gates else gates["alpha"]
    layer = gates["layer"].to_numpy(np.int64)
    scale = gates["scale"].to_numpy(np.int64)
    code = layer * 1024 + scale  # layer-major order
    present = np.zeros(int(code.max(initial=0)) + 1, dtype=bool)
    present[code] = True
    cells = np.flatnonzero(present)
    lookup = np.zeros(present.size, dtype=np.int32)
    lookup[cells] = np.arange(cells.size, dtype=np.int32)
    codes = lookup[code]  # O(rows), no sort: 15 M rows
    names = [cell_point(int(c) // 1024, int(c) % 1024) for c in cells]
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
            "point": pd.Categorical.from_codes(codes.reshape(-1), categories=names),
            "option": option,
            "value": value.astype("float32").to_numpy(),
            "ran": gates["active"].astype(bool).to_numpy(),
        }
    )
