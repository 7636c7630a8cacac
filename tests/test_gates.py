"""The gate protocol (dynviz.gates): graphs, reports, watch on a model nobody wrote for dynviz,
and gate-graph records (issue 27)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _gated_models import Block
from torch import nn

from dynviz.gates import (
    GateGraph,
    GatePoint,
    PointKind,
    Sigmoid,
    TopK,
    collect,
    gate_graph_of,
    report,
    routing_decisions,
    routing_graph,
    watch,
)
from dynviz.model import ConfigError
from dynviz.record import read_records, record

SPEC = "synthetic:count=6,size=64x64,classes=4,seed=0"


# ------------------------------------------------------------- a model with no dynviz import
class PlainResNet(nn.Module):
    """A plain gated residual network: block 0 always runs, block 1 never does."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(Block(8, 5.0), Block(8, -5.0))
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        return self.head(self.blocks(torch.relu(self.stem(x))))


def _watched(model):
    return watch(
        model,
        {"blocks.0.gate": Sigmoid(threshold=0.5, macs=100.0), "blocks.1.gate": Sigmoid(macs=50.0)},
        name="plain",
        base_macs=1000.0,
    )


# ------------------------------------------------------------------------------ the graph
def test_a_graph_round_trips_through_json_and_checks_its_points():
    graph = GateGraph(
        (
            GatePoint.skip("b1", macs=3.0),
            GatePoint.router("moe", ["e0", "e1", "e2"], k=2, macs=[1.0, 2.0, 4.0]),
            GatePoint.exit("exit1", macs=0.5),
        ),
        name="g",
        base_macs=10.0,
    )
    again = GateGraph.from_dict(json.loads(json.dumps(graph.to_dict())))
    assert again == graph
    assert graph.all_run_macs == 10.0 + 3.0 + 7.0 + 0.5
    assert graph["moe"].kind is PointKind.ROUTER and graph["moe"].k == 2
    with pytest.raises(ConfigError, match="appears twice"):
        GateGraph((GatePoint.skip("a"), GatePoint.skip("a")))
    with pytest.raises(ConfigError, match="k must be"):
        GatePoint.router("r", ["a", "b"], k=3)
    with pytest.raises(ConfigError, match="kind 'bogus'"):
        GateGraph.from_dict({"points": [{"name": "p", "kind": "bogus", "options": ["a", "b"]}]})


def test_report_is_a_no_op_outside_collect_and_expands_two_option_points():
    report("b1", torch.tensor([0.9]), torch.tensor([True]))  # nothing listens: no error
    graph = GateGraph((GatePoint.skip("b1"),))
    with collect(graph) as seen:
        report("b1", torch.tensor([0.9, 0.2]), torch.tensor([True, False]))
    decision = seen.complete()["b1"]
    assert torch.allclose(decision.values, torch.tensor([[0.1, 0.9], [0.8, 0.2]]))
    assert decision.ran.tolist() == [[False, True], [True, False]]


def test_a_point_reached_by_some_inputs_holds_nan_for_the_others():
    graph = GateGraph((GatePoint.exit("exit1"), GatePoint.skip("b2")))
    with collect(graph) as seen:
        report("exit1", torch.tensor([0.9, 0.1, 0.2]), torch.tensor([True, False, False]))
        report(
            "b2", torch.tensor([0.7, 0.3]), torch.tensor([True, False]), index=torch.tensor([1, 2])
        )
    b2 = seen.complete()["b2"]
    assert torch.isnan(b2.values[0]).all() and not b2.ran[0].any()
    assert b2.ran[1].tolist() == [False, True]


def test_collect_refuses_a_point_the_graph_does_not_name():
    graph = GateGraph((GatePoint.skip("b1"),))
    with collect(graph) as seen, pytest.raises(KeyError):
        report("nope", torch.tensor([0.5]), torch.tensor([True]))
    assert seen.decisions == {}


# ------------------------------------------------------------------------------ watch
def test_watch_reports_an_unedited_models_gates_and_comes_off_again():
    model = PlainResNet().eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
    watched = _watched(model)
    assert gate_graph_of(model) is watched.graph
    with collect(watched.graph) as seen, torch.no_grad():
        after = model(x)
    torch.testing.assert_close(before, after)  # the hooks change nothing
    decisions = seen.complete()
    assert decisions["blocks.0.gate"].ran[:, 1].all()  # run
    assert decisions["blocks.1.gate"].ran[:, 0].all()  # skip
    watched.remove()
    assert not hasattr(model, "dynviz_gate_graph")
    with collect() as seen, torch.no_grad():
        model(x)
    assert seen.decisions == {}


def test_watch_names_a_missing_module_and_reads_a_router():
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ConfigError, match="no module 'router'"):
        watch(model, {"router": TopK(k=1)})
    watched = watch(model, {"0": TopK(k=2)})
    assert watched.graph["0"].option_names == ("expert0", "expert1", "expert2")
    with collect(watched.graph) as seen, torch.no_grad():
        scores = model(torch.randn(5, 4))
    decision = seen.complete()["0"]
    torch.testing.assert_close(decision.values, scores.softmax(-1))
    assert decision.ran.sum(1).tolist() == [2] * 5
    smallest = scores.argmin(1)
    assert not decision.ran[torch.arange(5), smallest].any()


# --------------------------------------------------------------------------- the records
def test_an_unedited_model_is_recorded_with_its_decisions_and_costs(dataset, tmp_path):
    torch.manual_seed(0)
    model = PlainResNet(classes=dataset.num_classes).eval()
    _watched(model)
    record(model, dataset, tmp_path / "rec", builder="tests.test_gates:PlainResNet")
    records = read_records(tmp_path / "rec")
    assert records.kind == "gate-graph" and records.graph.name == "plain"
    assert records.sidecar.builder == "tests.test_gates:PlainResNet"
    d = records.decisions
    assert len(d) == len(dataset) * 4  # 2 points x 2 options
    ran = d[d.ran].groupby("point", observed=True)["option"].agg(lambda s: set(s.astype(str)))
    assert ran.to_dict() == {"blocks.0.gate": {"run"}, "blocks.1.gate": {"skip"}}
    # real cost = base + the options that ran: 1000 + 100 (block 0 runs) + 0 (block 1 skipped)
    np.testing.assert_allclose(records.images["real_gmacs"], 1100.0 / 1e9)
    assert records.images["miou"].notna().all()
    # a second run over the same folder records nothing again
    again = record(model, dataset, tmp_path / "rec")
    assert again.recorded == 0 and again.skipped == len(dataset)


def test_routing_records_read_as_decisions_of_the_routing_graph(model, dataset, tmp_path):
    record(model, dataset, tmp_path / "rec", limit=2)
    records = read_records(tmp_path / "rec")
    assert records.kind == "routing-space"
    graph = routing_graph(model.config)
    d = records.decisions
    assert set(d["point"].astype(str)) <= set(graph.point_names)
    assert len(d) == len(records.gates)
    assert (d["ran"].to_numpy() == records.gates["active"].to_numpy()).all()
    first = records.gates.iloc[0]
    assert d["point"].iloc[0] == f"L{first.layer}/s{first.scale}"
    assert routing_decisions(records.gates).equals(d)


# --------------------------------------------------------------------------- analyses
def _hand_decisions():
    """Four inputs, a skip point and a top-1 router of three experts, by hand."""
    import pandas as pd

    rows = []
    runs = [0.9, 0.8, 0.2, 0.7]  # block: runs where > 0.5 -> inputs 0, 1, 3
    expert = ["e0", "e0", "e1", "e0"]  # e2 never
    for i in range(4):
        rows += [(f"im{i}", "block", "skip", 1 - runs[i], runs[i] <= 0.5)]
        rows += [(f"im{i}", "block", "run", runs[i], runs[i] > 0.5)]
        for e in ("e0", "e1", "e2"):
            rows += [(f"im{i}", "moe", e, 0.6 if e == expert[i] else 0.2, e == expert[i])]
    frame = pd.DataFrame(rows, columns=["image_id", "point", "option", "value", "ran"])
    frame["point"] = frame["point"].astype(pd.CategoricalDtype(["block", "moe"], ordered=True))
    frame["option"] = frame["option"].astype("category")
    graph = GateGraph(
        (GatePoint.skip("block", macs=10.0), GatePoint.router("moe", ["e0", "e1", "e2"], k=1)),
    )
    return frame, graph


def test_usage_and_common_plan_by_hand():
    from dynviz.analysis.gates import common_plan, option_usage

    decisions, graph = _hand_decisions()
    usage = option_usage(decisions).set_index(["point", "option"])["usage"]
    assert usage[("block", "run")] == 0.75 and usage[("moe", "e0")] == 0.75
    assert usage[("moe", "e2")] == 0.0
    plan = common_plan(decisions, graph, threshold=0.7)
    assert plan.always == {"block": ("run",), "moe": ("e0",)}
    assert plan.sometimes == {"block": ("skip",), "moe": ("e1",)}
    assert plan.never == {"block": (), "moe": ("e2",)}
    assert plan.keep() == {"block": ("run",), "moe": ("e0",)}
    assert plan.keep(lossless=True) == {"block": ("run", "skip"), "moe": ("e0", "e1")}


def test_value_distribution_and_statistics_by_hand():
    from dynviz.analysis.gates import decisions_vs_statistics, value_distribution

    decisions, _ = _hand_decisions()
    dist = value_distribution(decisions, bins=4).set_index(["point", "option", "bin"])["share"]
    # block/run values 0.9, 0.8, 0.2, 0.7 -> bins 3, 3, 0, 2
    assert dist[("block", "run", 3)] == 0.5 and dist[("block", "run", 0)] == 0.25
    assert dist[("block", "run", 1)] == 0.0
    import pandas as pd

    images = pd.DataFrame({"image_id": [f"im{i}" for i in range(4)]})
    images["stat_size"] = [4.0, 3.0, 1.0, 2.0]  # same order as block/run's value
    rho = decisions_vs_statistics(decisions, images, min_inputs=3)
    top = rho.iloc[0]
    assert {top.option, top.statistic} <= {"run", "skip", "size"} and abs(top.rho) == pytest.approx(
        1.0
    )


def test_a_skip_point_is_correlated_through_its_run_value_only():
    import pandas as pd

    from dynviz.analysis.gates import decisions_vs_statistics

    decisions, graph = _hand_decisions()
    images = pd.DataFrame(
        {"image_id": [f"im{i}" for i in range(4)], "stat_size": [4.0, 3.0, 1.0, 2.0]}
    )
    rho = decisions_vs_statistics(decisions, images, min_inputs=3, graph=graph)
    block = rho[rho.point == "block"]
    assert block["option"].astype(str).tolist() == ["run"] and block.rho.iloc[0] == pytest.approx(
        1.0
    )
    assert len(rho[rho.point == "moe"]) == 3  # a router keeps every option


def test_correlations_equal_a_per_pair_spearman_with_and_without_gaps():
    """The vectorised rho equals ranking each pair's shared rows and correlating them (a point
    an early exit hides from some inputs has gaps)."""
    import pandas as pd

    from dynviz.analysis.gates import decisions_vs_statistics

    rng = np.random.default_rng(0)
    n = 30
    rows = []
    for i in range(n):
        for point, options in (("a", ("x", "y")), ("b", ("u", "v", "w"))):
            for option in options:
                value = rng.random()
                if point == "b" and i % 4 == 0:
                    value = np.nan  # not reached
                rows.append((f"im{i}", point, option, value, value > 0.5))
    decisions = pd.DataFrame(rows, columns=["image_id", "point", "option", "value", "ran"])
    images = pd.DataFrame({"image_id": [f"im{i}" for i in range(n)]})
    images["stat_s1"] = rng.random(n)
    images["stat_s2"] = np.where(np.arange(n) % 5 == 0, np.nan, rng.random(n))
    got = decisions_vs_statistics(decisions, images).set_index(["point", "option", "statistic"])
    for (point, option, stat), row in got.iterrows():
        mine = decisions[(decisions.point == point) & (decisions.option == option)]
        pair = (
            mine.set_index("image_id")["value"]
            .to_frame()
            .join(images.set_index("image_id")["stat_" + stat])
            .dropna()
        )
        expected = pair.rank().corr().iloc[0, 1]
        assert row.inputs == len(pair)
        assert row.rho == pytest.approx(expected, abs=1e-12), (point, option, stat)


def test_option_usage_equals_a_grouped_computation_with_gaps():
    import pandas as pd

    from dynviz.analysis.gates import option_usage

    rng = np.random.default_rng(1)
    rows = []
    for i in range(25):
        for point, options in (("a", ("x", "y")), ("b", ("u", "v", "w"))):
            for option in options:
                value = np.nan if (point == "b" and i % 3 == 0) else rng.random()
                rows.append((f"im{i}", point, option, value, bool(value > 0.5)))
    decisions = pd.DataFrame(rows, columns=["image_id", "point", "option", "value", "ran"])
    got = option_usage(decisions).set_index(["point", "option"])
    grouped = decisions.groupby(["point", "option"])
    expected = pd.DataFrame(
        {
            "inputs": grouped["value"].count(),
            "usage": grouped["ran"].sum() / 25,
            "value_mean": grouped["value"].mean(),
            "value_q25": grouped["value"].quantile(0.25),
            "value_median": grouped["value"].median(),
            "value_q75": grouped["value"].quantile(0.75),
        }
    )
    got.index = got.index.set_levels([lvl.astype(str) for lvl in got.index.levels])
    pd.testing.assert_frame_equal(got.sort_index(), expected.sort_index(), check_dtype=False)


def _regular_decisions(n: int = 40):
    """One block of rows per input, every block the same pairs in an order that is not the
    categories' (b before a, y before x), and an input statistic."""
    import pandas as pd

    rng = np.random.default_rng(2)
    order = [("b", "w"), ("b", "u"), ("a", "y"), ("a", "x"), ("b", "v")]
    rows = []
    for i in range(n):
        for point, option in order:
            value = rng.random()
            rows.append((f"im{i:03d}", point, option, value, bool(value > 0.5)))
    decisions = pd.DataFrame(rows, columns=["image_id", "point", "option", "value", "ran"])
    decisions["point"] = decisions["point"].astype(pd.CategoricalDtype(["a", "b"]))
    decisions["option"] = decisions["option"].astype(pd.CategoricalDtype(["u", "v", "w", "x", "y"]))
    images = pd.DataFrame({"image_id": [f"im{i:03d}" for i in range(n)], "stat_s": rng.random(n)})
    return decisions, images


def test_decisions_in_blocks_read_as_the_same_matrix_as_scattered_rows():
    """The reshaped blocks of a routing-space recording and the same rows in any order give one
    matrix, and every analysis the same figures from either."""
    import pandas as pd

    from dynviz.analysis.gates import (
        decision_matrix,
        decisions_vs_statistics,
        option_usage,
        value_distribution,
    )

    blocks, images = _regular_decisions()
    scattered = blocks.sample(frac=1.0, random_state=0).reset_index(drop=True)
    a, b = decision_matrix(blocks), decision_matrix(scattered)
    assert a.seen is None and b.seen is None  # every input has every pair
    assert list(a.point_column().astype(str)) == ["a", "a", "b", "b", "b"]
    assert list(a.option_column().astype(str)) == ["x", "y", "u", "v", "w"]
    order = b.ids.get_indexer(a.ids)  # the scattered rows meet the inputs in another order
    np.testing.assert_array_equal(a.values, b.values[order])
    np.testing.assert_array_equal(a.ran, b.ran[order])
    for frame in (option_usage, value_distribution):
        pd.testing.assert_frame_equal(frame(blocks), frame(scattered))
    pd.testing.assert_frame_equal(
        decisions_vs_statistics(blocks, images), decisions_vs_statistics(scattered, images)
    )
    # a value read back from the matrix is the row's own
    row = blocks[(blocks.image_id == "im007") & (blocks.point == "b") & (blocks.option == "u")]
    got = a.option_values("b", "u").set_index("image_id").loc["im007"]
    assert got["value"] == row["value"].iloc[0] and got["ran"] == row["ran"].iloc[0]
    assert a.option_values("a", "w").empty  # a pair the decisions do not hold


def test_the_analyses_take_the_matrix_in_place_of_the_decisions():
    import pandas as pd

    from dynviz.analysis.gates import (
        common_plan,
        decision_matrix,
        decisions_vs_statistics,
        option_usage,
        value_distribution,
    )

    decisions, graph = _hand_decisions()
    matrix = decision_matrix(decisions)
    assert decision_matrix(matrix) is matrix
    pd.testing.assert_frame_equal(option_usage(matrix), option_usage(decisions))
    pd.testing.assert_frame_equal(
        value_distribution(matrix, bins=4), value_distribution(decisions, bins=4)
    )
    assert common_plan(matrix, graph, threshold=0.7) == common_plan(decisions, graph, threshold=0.7)
    images = pd.DataFrame({"image_id": [f"im{i}" for i in range(4)], "stat_size": [4.0, 3, 1, 2]})
    pd.testing.assert_frame_equal(
        decisions_vs_statistics(matrix, images, min_inputs=3, graph=graph),
        decisions_vs_statistics(decisions, images, min_inputs=3, graph=graph),
    )


def test_a_random_draw_of_inputs_is_the_matrix_of_their_rows_alone():
    """``max_inputs`` draws inputs; the pairs are those the drawn inputs have rows of (an early
    exit that only undrawn inputs reached is left out), as if the decisions held no others."""
    import pandas as pd

    from dynviz.analysis.gates import decision_matrix

    rows = []
    for i in range(30):
        rows += [(f"im{i}", "a", "x", i / 30, i % 2 == 0), (f"im{i}", "a", "y", 0.5, True)]
        if i == 29:  # only the last input reached the exit
            rows += [(f"im{i}", "ex", "exit", 0.9, True)]
    decisions = pd.DataFrame(rows, columns=["image_id", "point", "option", "value", "ran"])
    full = decision_matrix(decisions)
    assert full.seen is not None and full.seen[:, -1].sum() == 1
    drawn = full.select(max_inputs=10)
    assert len(drawn.ids) == 10 and list(drawn.ids) == sorted(drawn.ids, key=list(full.ids).index)
    alone = decision_matrix(decisions[decisions.image_id.isin(drawn.ids)])
    assert list(drawn.ids) == list(alone.ids)

    def names(m):
        return list(zip(m.point_column().astype(str), m.option_column().astype(str), strict=True))

    assert names(drawn) == names(alone) == [("a", "x"), ("a", "y")]  # no exit
    np.testing.assert_array_equal(drawn.values, alone.values)
    np.testing.assert_array_equal(drawn.ran, alone.ran)
    assert full.select() is full  # nothing to leave out
    dropped = full.select(drop=[full.pair_code("a", "y")])
    assert list(dropped.option_column().astype(str)) == ["x", "exit"]


@pytest.mark.parametrize("last_layer", [3, 2000])  # cell codes in int16, and past it
def test_routing_decisions_name_each_row_by_its_cell_in_forward_order(last_layer):
    import pandas as pd

    layer = np.array([1, last_layer, 0, 1, 0, last_layer], dtype=np.int16)
    scale = np.array([8, 64, 4, 8, 4, 64], dtype=np.int16)
    gates = pd.DataFrame(
        {
            "image_id": ["a", "a", "a", "b", "b", "b"],
            "layer": layer,
            "scale": scale,
            "direction": pd.Categorical(["up", "keep", "down", "keep", "keep", "up"]),
            "gate_alpha": np.linspace(0.1, 0.6, 6, dtype=np.float32),
            "active": [True, False, True, True, False, True],
        }
    )
    d = routing_decisions(gates)
    assert list(d["point"].cat.categories) == ["L0/s4", "L1/s8", f"L{last_layer}/s64"]
    assert list(d["point"].astype(str)) == [f"L{a}/s{b}" for a, b in zip(layer, scale, strict=True)]
    assert list(d["option"].astype(str)) == list(gates["direction"].astype(str))
    assert (d["value"].to_numpy() == gates["gate_alpha"].to_numpy()).all()
    assert (d["ran"].to_numpy() == gates["active"].to_numpy()).all()
