"""Route graphs: the routing space (Fig. 2) and single routes as networkx digraphs.

Nodes are ``"stem"``, the cells ``(layer, scale_index)`` and ``"decoder"``. Node attributes:
``kind`` (stem, cell, decoder), ``layer``, ``scale`` (the stride 4/8/16/32; 0 for stem and
decoder), ``scale_index`` and ``pos`` = ``(x, y)`` with ``x = layer`` (stem at -1, decoder at
L + 1, both on the 1/4 row) and ``y = -log2(stride)``: the paper's grid, a fixed layout that
needs no graph drawing algorithm. Cells also carry ``op_macs`` and ``gate_macs`` when a cost
table is given.

Edges are the paths, named by their source cell as in :mod:`dynviz.model.config`: attributes
``layer``, ``scale`` (stride of the source), ``scale_index``, ``direction`` (keep/up/down) and,
when given, ``macs`` (the transform's cost), ``probability`` (share of images where the path
was active) and ``mean_alpha``. Last-layer keeps end in ``"decoder"``; ``"stem"`` feeds the
initial cell (direction ``"stem"``).

Exports: :func:`to_graphml` (plain attribute types: tuples and enums become strings, ``pos``
becomes ``x`` and ``y``) and :func:`to_json` (node-link data with string node ids).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import networkx as nx
import pandas as pd

from dynviz.model.config import Direction, PathKey, RoutingSpaceConfig
from dynviz.model.cost import CostTable
from dynviz.model.route import Route
from dynviz.model.topology import reach

__all__ = [
    "DECODER",
    "STEM",
    "node_name",
    "route_graph",
    "space_graph",
    "to_graphml",
    "to_json",
]

logger = logging.getLogger(__name__)

STEM = "stem"
DECODER = "decoder"

PathValues = Mapping[PathKey, float] | pd.DataFrame


def node_name(node: Any) -> str:
    """A string id for a node: ``"stem"``, ``"decoder"`` or ``"L{layer}_s{stride}"``."""
    if isinstance(node, tuple):
        layer, scale = node
        return f"L{layer}_s{RoutingSpaceConfig.stride(int(scale))}"
    return str(node)


def _path_values(values: PathValues | None, column: str) -> dict[PathKey, float]:
    """Normalise a mapping keyed by path, or a frame with layer, scale (stride) and direction
    columns, to ``{(layer, scale_index, Direction): value}``."""
    if values is None:
        return {}
    if isinstance(values, pd.DataFrame):
        if column not in values.columns:
            raise ValueError(
                f"the frame has no column {column!r} (columns: "
                f"{', '.join(map(str, values.columns))})"
            )
        frame = values
        if "scale_index" in frame.columns:
            index = frame["scale_index"].astype(int)
        else:
            index = frame["scale"].astype(int).map(lambda s: int(round(math.log2(s / 4))))
        out = {}
        for layer, scale, d, v in zip(
            frame["layer"].astype(int), index, frame["direction"], frame[column], strict=True
        ):
            out[(int(layer), int(scale), Direction.parse(str(d)))] = float(v)
        return out
    return {(int(k[0]), int(k[1]), Direction.parse(k[2])): float(v) for k, v in values.items()}


def _add_nodes(
    graph: nx.DiGraph, config: RoutingSpaceConfig, cells: Any, costs: CostTable | None
) -> None:
    graph.add_node(
        STEM,
        kind="stem",
        layer=-1,
        scale=0,
        scale_index=-1,
        pos=(-1.0, -2.0),
        **({"macs": float(costs.stem)} if costs is not None else {}),
    )
    for layer, scale in cells:
        attrs: dict[str, Any] = {
            "kind": "cell",
            "layer": layer,
            "scale": config.stride(scale),
            "scale_index": scale,
            "pos": (float(layer), -math.log2(config.stride(scale))),
        }
        if costs is not None:
            attrs["op_macs"] = float(costs.op[layer, scale])
            attrs["gate_macs"] = float(costs.gate[layer, scale])
        graph.add_node((layer, scale), **attrs)
    last = config.num_layers + 1
    graph.add_node(
        DECODER,
        kind="decoder",
        layer=last,
        scale=0,
        scale_index=-1,
        pos=(float(last), -2.0),
        **({"macs": float(costs.decoder)} if costs is not None else {}),
    )


def _add_path(graph: nx.DiGraph, config: RoutingSpaceConfig, path: PathKey, **attrs: Any) -> None:
    layer, scale, d = path
    target = config.target(layer, scale, d)
    graph.add_edge(
        (layer, scale),
        DECODER if target is None else target,
        layer=layer,
        scale=config.stride(scale),
        scale_index=scale,
        direction=d.label,
        **attrs,
    )


def space_graph(
    config: RoutingSpaceConfig,
    *,
    costs: CostTable | None = None,
    probability: PathValues | None = None,
    mean_alpha: PathValues | None = None,
    route: Route | None = None,
) -> nx.DiGraph:
    """The routing space (or the static network of ``route``) as a digraph.

    Args:
        config: the routing space.
        costs: a cost table (``dynviz.model.cost.cost_table``) for ``macs`` attributes.
        probability: per-path activation probability: a mapping ``{(layer, scale_index,
            direction): p}`` or a frame from ``activation_probability`` (column ``p``).
        mean_alpha: per-path mean alpha, a mapping or a frame (column ``mean_alpha``).
        route: keep only this route's paths and cells.

    Returns:
        A ``networkx.DiGraph`` (see the module docstring for attributes).
    """
    p = _path_values(probability, "p")
    a = _path_values(mean_alpha, "mean_alpha")
    paths = config.paths if route is None else tuple(route.sorted_paths())
    cells = config.cells if route is None else sorted(route.cells)
    graph = nx.DiGraph(
        name=route.name if route is not None else config.name,
        num_layers=config.num_layers,
        num_scales=config.num_scales,
    )
    _add_nodes(graph, config, cells, costs)
    graph.add_edge(
        STEM,
        (0, 0),
        layer=-1,
        scale=4,
        scale_index=0,
        direction="stem",
        **({"macs": float(costs.stem)} if costs is not None else {}),
    )
    for path in paths:
        attrs: dict[str, Any] = {}
        if costs is not None:
            attrs["macs"] = float(costs.path[path[0], path[1], int(path[2])])
        if path in p:
            attrs["probability"] = p[path]
        if path in a:
            attrs["mean_alpha"] = a[path]
        _add_path(graph, config, path, **attrs)
    return graph


def route_graph(
    config: RoutingSpaceConfig, source: Route | pd.DataFrame, *, costs: CostTable | None = None
) -> nx.DiGraph:
    """The route one image took, or a route spec, as a digraph of its active paths.

    Args:
        config: the routing space.
        source: a :class:`Route`, or the gate rows of one image (a ``gates`` frame filtered to one
            ``image_id``; edges get its ``alpha``).
        costs: a cost table for ``macs`` attributes.

    Returns:
        A digraph with the stem, the decoder, and the cells and paths of the route.

    Raises:
        ValueError: the frame holds rows of several images.
    """
    if isinstance(source, Route):
        return space_graph(config, costs=costs, route=source)
    frame = source
    if "image_id" in frame.columns and frame["image_id"].nunique() > 1:
        raise ValueError("route_graph takes the gate rows of one image; filter by image_id")
    alpha = _path_values(frame, "alpha")
    active = _path_values(frame.assign(active=frame["active"].astype(float)), "active")
    ran = reach(config, [k for k, v in active.items() if v > 0])  # dynviz.model.topology
    paths = [k for k in config.paths if k in ran.paths]
    cells = sorted(ran.ran)
    graph = nx.DiGraph(
        name=str(frame["image_id"].iloc[0]) if len(frame) else "route",
        num_layers=config.num_layers,
        num_scales=config.num_scales,
    )
    _add_nodes(graph, config, cells, costs)
    graph.add_edge(STEM, (0, 0), layer=-1, scale=4, scale_index=0, direction="stem")
    for path in paths:
        attrs: dict[str, Any] = {"alpha": alpha.get(path, 1.0)}
        if costs is not None:
            attrs["macs"] = float(costs.path[path[0], path[1], int(path[2])])
        _add_path(graph, config, path, **attrs)
    # Targets of active paths whose own paths were all closed (X passed through their keep
    # output: ``ran.passed``) still appear as nodes so every edge has both ends.
    for node in list(graph.nodes):
        if isinstance(node, tuple) and "kind" not in graph.nodes[node]:
            layer, scale = node
            graph.nodes[node].update(
                kind="cell",
                layer=layer,
                scale=config.stride(scale),
                scale_index=scale,
                pos=(float(layer), -math.log2(config.stride(scale))),
            )
    return graph


# ------------------------------------------------------------------------------- exports
def _plain(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Direction):
        return value.label
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def _plain_graph(graph: nx.DiGraph) -> nx.DiGraph:
    """A copy with string node ids and GraphML-safe attribute values (``pos`` -> x, y)."""
    out = nx.DiGraph()
    out.graph.update({k: _plain(v) for k, v in graph.graph.items() if v is not None})
    for node, attrs in graph.nodes(data=True):
        plain: dict[str, Any] = {}
        for key, value in attrs.items():
            if value is None:
                continue
            if key == "pos":
                plain["x"], plain["y"] = float(value[0]), float(value[1])
            else:
                plain[key] = _plain(value)
        out.add_node(node_name(node), **plain)
    for u, v, attrs in graph.edges(data=True):
        out.add_edge(
            node_name(u),
            node_name(v),
            **{k: _plain(val) for k, val in attrs.items() if val is not None},
        )
    return out


def to_graphml(graph: nx.DiGraph, path: str | os.PathLike[str]) -> Path:
    """Write ``graph`` as GraphML (node ids as :func:`node_name`; tuples and enums as strings).

    Returns:
        The file path.
    """
    path = Path(path)
    nx.write_graphml(_plain_graph(graph), path)
    return path


def to_json(graph: nx.DiGraph) -> dict[str, Any]:
    """Node-link data of ``graph`` with string node ids, ready for ``json.dumps``."""
    data = nx.node_link_data(_plain_graph(graph), edges="edges")
    json.dumps(data)  # fail here, not in the caller, if something is not JSON
    return data
