"""Route graphs: node and edge counts, attributes, single routes, GraphML and JSON exports."""

from __future__ import annotations

import json

import networkx as nx
import pandas as pd
import pytest

from dynviz.model.config import Direction
from dynviz.model.cost import cost_table
from dynviz.model.graph import (
    DECODER,
    STEM,
    node_name,
    route_graph,
    space_graph,
    to_graphml,
    to_json,
)
from dynviz.model.route import Route
from dynviz.model.zoo import load_space


@pytest.fixture
def tiny_space():
    return load_space("tiny")


def test_space_graph_of_tiny(tiny_space):
    graph = space_graph(tiny_space)
    # 14 cells (1 + 2 + 3 + 4 + 4) plus stem and decoder; 29 paths plus the stem edge
    assert graph.number_of_nodes() == 16 == tiny_space.num_cells + 2
    assert graph.number_of_edges() == 30 == len(tiny_space.paths) + 1
    assert nx.is_directed_acyclic_graph(graph)
    assert graph.in_degree(DECODER) == 4 and graph.out_degree(STEM) == 1
    cell = graph.nodes[(3, 2)]
    assert (cell["layer"], cell["scale"], cell["scale_index"]) == (3, 16, 2)
    assert cell["pos"] == (3.0, -4.0)
    edge = graph.edges[(2, 1), (3, 2)]
    assert edge["direction"] == "down" and edge["scale"] == 8 and edge["layer"] == 2
    assert graph.edges[(1, 1), (2, 0)]["direction"] == "up"
    assert all(
        nx.has_path(graph, STEM, n) and nx.has_path(graph, n, DECODER)
        for n in graph.nodes
        if isinstance(n, tuple)
    )


def test_costs_and_probabilities_on_edges(tiny_space):
    table = cost_table(tiny_space, (64, 64))
    probability = pd.DataFrame(
        {"layer": [2], "scale": [8], "direction": ["down"], "p": [0.25], "mean_alpha": [0.125]}
    )
    graph = space_graph(tiny_space, costs=table, probability=probability, mean_alpha=probability)
    edge = graph.edges[(2, 1), (3, 2)]
    assert edge["macs"] == float(table.path[2, 1, int(Direction.DOWN)]) > 0
    assert edge["probability"] == 0.25 and edge["mean_alpha"] == 0.125
    assert "probability" not in graph.edges[(2, 1), (3, 1)]
    assert graph.nodes[(2, 1)]["op_macs"] == float(table.op[2, 1])
    mapping = space_graph(tiny_space, probability={(2, 1, "down"): 0.5})
    assert mapping.edges[(2, 1), (3, 2)]["probability"] == 0.5


def test_route_graph_from_route_and_from_gate_rows(tiny_space):
    route = Route.from_chains(tiny_space, [[4, 8, 8, 16, 16]])
    graph = route_graph(tiny_space, route)
    assert graph.number_of_edges() == len(route) + 1
    assert graph.number_of_nodes() == len(route.cells) + 2
    assert list(nx.topological_sort(graph))[0] == STEM
    rows = pd.DataFrame(
        {
            "image_id": ["x"] * 3,
            "layer": [0, 1, 1],
            "scale": [4, 8, 8],
            "direction": ["down", "keep", "up"],
            "alpha": [0.7, 0.0, 0.4],
            "active": [True, False, True],
        }
    )
    one = route_graph(tiny_space, rows)
    assert set(one.edges) == {(STEM, (0, 0)), ((0, 0), (1, 1)), ((1, 1), (2, 0))}
    assert one.edges[(0, 0), (1, 1)]["alpha"] == pytest.approx(0.7)
    assert one.nodes[(2, 0)]["kind"] == "cell"  # a target whose own paths were closed
    with pytest.raises(ValueError, match="one image"):
        route_graph(tiny_space, rows.assign(image_id=["x", "y", "x"]))


def test_graphml_round_trip(tiny_space, tmp_path):
    table = cost_table(tiny_space, (64, 64))
    graph = space_graph(tiny_space, costs=table, probability={(0, 0, "keep"): 0.5})
    path = to_graphml(graph, tmp_path / "tiny.graphml")
    back = nx.read_graphml(path)
    assert back.number_of_nodes() == graph.number_of_nodes()
    assert back.number_of_edges() == graph.number_of_edges()
    node = back.nodes[node_name((3, 2))]
    assert node_name((3, 2)) == "L3_s16"
    assert (node["layer"], node["scale"], node["x"], node["y"]) == (3, 16, 3.0, -4.0)
    edge = back.edges["L0_s4", "L1_s4"]
    assert edge["direction"] == "keep" and edge["probability"] == 0.5
    assert edge["macs"] == pytest.approx(float(table.path[0, 0, 0]))


def test_json_export(tiny_space):
    data = to_json(space_graph(tiny_space))
    text = json.dumps(data)
    assert '"L4_s32"' in text
    assert len(data["nodes"]) == 16 and len(data["edges"]) == 30
    back = nx.node_link_graph(data, edges="edges")
    assert back.has_edge("L3_s32", "L4_s16")
