"""Latency per node beside MACs: the measurement's layout, the CostTable view, and the CLI.

No timing is asserted: only that every component is measured, laid out like the MACs table,
and consistent with it.
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from dynviz.cli import main as cli
from dynviz.inference.latency import (
    LatencyTable,
    cpu_wait,
    format_latency,
    latency_cost_table,
    latency_rows,
    measure_calls,
    measure_node_latency,
    route_times,
    time_calls,
)
from dynviz.model.cost import CostTable, cost_table
from dynviz.model.route import Route

SIZE = (64, 64)


@pytest.fixture(scope="module")
def latency():
    from dynviz.model.config import RoutingSpaceConfig

    tiny = RoutingSpaceConfig(name="tiny-test", num_layers=4, base_channels=8, num_classes=4)
    return measure_node_latency(tiny, SIZE, repeats=1, min_time=0.0, threads=1)


def test_every_component_is_measured_where_it_exists(latency):
    per = latency.per_scale
    scales = latency.config.num_scales
    assert per["up"][0] is None and per["down"][scales - 1] is None
    for name in ("op", "gate", "add", "lateral", "keep"):
        assert all(v is not None and v > 0 for v in per[name]), name
    assert all(v > 0 for v in per["up"][1:]) and all(v > 0 for v in per["down"][:-1])
    assert latency.stem > 0 and latency.decoder_fixed > 0
    assert latency.channels_last  # the layout the network uses for CPU inference
    assert [r["stride"] for r in latency.scale_rows()] == [4, 8, 16, 32]
    json.dumps(latency.to_json())


def test_latency_table_has_the_cost_table_layout(latency):
    config = latency.config
    table = latency_cost_table(config, SIZE, latency=latency)
    macs = cost_table(config, SIZE)
    assert isinstance(table, CostTable) and isinstance(table, LatencyTable)
    assert table.unit == "s"
    for name in ("op", "gate", "path"):
        t, m = getattr(table, name), getattr(macs, name)
        assert t.shape == m.shape and t.dtype == torch.float64
        assert torch.equal(t > 0, m > 0), name  # timed exactly where MACs are charged
    assert table.op[2, 1] == latency.per_scale["op"][1]
    assert table.path[1, 1, 2] == latency.per_scale["down"][1]


def test_latency_table_gives_time_per_image(latency):
    config = latency.config
    table = latency_cost_table(config, SIZE, latency=latency)
    everything = Route.all_open(config).mask().unsqueeze(0)
    real = float(table.real(everything)[0])
    assert real > table.backbone_all_open() > 0
    assert table.expected(everything.double())[0].item() == pytest.approx(real)
    chain = Route.from_chains(config, [[4, 4, 4, 4, 4]]).mask().unsqueeze(0)
    assert 0 < float(table.real(chain, gates_ran=False)[0]) < real
    # a budget in time: expected share of the all-open backbone time, differentiable
    gates = everything.double().requires_grad_(True)
    share = table.backbone_expected(gates) / table.backbone_all_open()
    share.sum().backward()
    assert share.item() == pytest.approx(1.0) and gates.grad.abs().sum() > 0
    by = table.by_component()
    assert set(by) >= {"stem", "cell", "gate", "transform", "decoder"}
    assert sum(by.values()) == pytest.approx(table.total(), rel=1e-6)


def test_normalised_latency_table(latency):
    table = latency_cost_table(latency.config, SIZE, latency=latency, normalise=True)
    assert table.backbone_all_open() == pytest.approx(1.0)
    assert "share" in table.unit


def test_latency_rows_pair_time_with_macs(latency):
    rows = latency_rows(latency)
    components = {(r.stride, r.component) for r in rows}
    assert (4, "op") in components and (32, "op") in components
    assert (4, "up") not in components and (32, "down") not in components
    assert all(r.macs > 0 and r.seconds > 0 and r.gmacs_per_s > 0 for r in rows)
    text = format_latency(latency)
    assert "GMAC/s" in text and "1/32" in text


def test_route_times_are_sums_of_the_node_table(latency):
    config = latency.config
    chain = Route.from_chains(config, [[4, 4, 8, 8, 8]], name="chain")
    rows = route_times(latency, {"chain": chain})
    assert [r["route"] for r in rows] == ["every path open, no gates", "chain"]
    everything, mine = rows
    assert everything["gmacs_ratio"] == everything["time_ratio"] == 1.0
    assert mine["gmacs"] == pytest.approx(cost_table(config, SIZE, route=chain).total() / 1e9)
    seconds = latency_cost_table(config, SIZE, route=chain, latency=latency).total()
    assert mine["ms"] == pytest.approx(seconds * 1e3)
    assert mine["time_ratio"] == pytest.approx(mine["ms"] / everything["ms"])
    assert mine["time_per_macs"] == pytest.approx(mine["time_ratio"] / mine["gmacs_ratio"])
    assert 0 < mine["gmacs_ratio"] < 1 and 0 < mine["time_ratio"] < 1


def test_a_measurement_survives_its_state(latency):
    again = type(latency).from_state(latency.config, json.loads(json.dumps(latency.state())))
    assert again.per_scale == latency.per_scale and again.size == latency.size
    table = latency_cost_table(latency.config, SIZE, latency=latency)
    assert latency_cost_table(latency.config, SIZE, latency=again).total() == table.total()


def test_time_calls_interleaves_and_takes_medians():
    order: list[str] = []

    def call(k: str) -> None:
        order.append(k)
        if k == "c":
            time.sleep(0.02)  # c takes 20 ms more than the others, every time

    calls = {k: (lambda k=k: call(k)) for k in "abc"}
    times = time_calls(calls, repeats=3, warmup=1)
    assert set(times) == {"a", "b", "c"}
    assert times["c"] >= 0.02 and times["c"] - max(times["a"], times["b"]) > 0.015
    assert order[:3] == ["a", "b", "c"]  # warm-up round
    rounds = [order[3 + 3 * i : 6 + 3 * i] for i in range(3)]
    assert rounds[0] == ["a", "b", "c"] and rounds[1] == ["b", "c", "a"]


def test_flops_time_option(capsys):
    code = cli(["flops", "tiny", "--time", "--size", "64", "64", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    rows = data["latency"]["rows"]
    assert {r["component"] for r in rows} >= {"op", "gate", "up", "down", "lateral"}
    assert all(r["ms"] > 0 and r["mmacs"] > 0 for r in rows)
    assert cli(["flops", "tiny", "--time", "--size", "64", "64"]) == 0
    assert "time per node" in capsys.readouterr().out


def test_measure_calls_reports_cpu_wait_and_retakes_contended_samples():
    calls = {"a": lambda: sum(range(1000)), "b": lambda: sum(range(2000))}
    timings = measure_calls(calls, repeats=2, warmup=0)
    assert timings.count == 4 and timings.retaken == 0 and timings.contended == 0
    if cpu_wait() is None:
        pytest.skip("no /proc/self/task/*/schedstat on this system")
    assert all(w is not None and w >= 0 for ws in timings.waits.values() for w in ws)
    # a negative allowance counts every sample as contended: each is taken 1 + 3 times
    forced = measure_calls(calls, repeats=2, warmup=0, max_wait=-1.0, retakes=3)
    assert forced.retaken == 4 * 3 and forced.contended == 4
    assert set(forced.median) == {"a", "b"}


def test_measure_calls_keeps_what_each_kept_sample_returned_when_asked():
    counter = iter(range(100))
    timings = measure_calls({"a": lambda: next(counter)}, repeats=3, warmup=1, keep_results=True)
    assert timings.results["a"] == [1, 2, 3]  # the warm-up's 0 is not kept
    # by default nothing is kept: a kept output would make the next call allocate fresh memory
    dropped = measure_calls({"a": lambda: next(counter)}, repeats=3, warmup=1)
    assert dropped.results["a"] == [] and len(dropped.samples["a"]) == 3
    # a retaken sample keeps the result of the call it kept (here: the first of each round)
    counter = iter(range(100))
    forced = measure_calls(
        {"a": lambda: next(counter)}, repeats=2, warmup=0, max_wait=-1.0, keep_results=True
    )
    if cpu_wait() is not None:
        assert forced.results["a"][0] in range(4) and forced.results["a"][1] in range(4, 8)


def test_node_rows_carry_the_spread_of_their_repeats():
    from dynviz.inference.latency import latency_rows, measure_node_latency
    from dynviz.model.zoo import load_space

    latency = measure_node_latency(load_space("tiny"), (32, 32), repeats=4, threads=1)
    assert latency.device == "cpu" and latency.repeats == 4
    rows = latency_rows(latency)
    assert rows and all(r.low is not None and r.low <= r.seconds <= r.high for r in rows)
    assert all(r.gmacs_per_s > 0 for r in rows)
    data = rows[0].to_json()
    assert data["ms_q1"] <= data["ms"] <= data["ms_q3"]


def test_measure_calls_brackets_every_sample_with_sync():
    from dynviz.inference.latency import measure_calls

    synced = []
    timings = measure_calls(
        {"a": lambda: None, "b": lambda: None},
        repeats=3,
        warmup=1,
        sync=lambda: synced.append(1),
    )
    assert len(synced) == 2 * 2 * (3 + 1)  # before and after each sample and warm-up call
    assert timings.ratios("a", "b") and len(timings.ratios("a", "b")) == 3
    low, mid, high = timings.quartiles["a"]
    assert low <= mid <= high


def test_the_measurement_times_the_networks_own_nodes(monkeypatch):
    """One forward graph: latency runs the functions the network's forward runs, on a
    network's modules, not copies of them."""
    from dynviz.model.cell import RoutingCell
    from dynviz.model.config import RoutingSpaceConfig
    from dynviz.model.network import Decoder

    calls: dict[str, int] = {"hidden": 0, "transform": 0, "top_down": 0, "head": 0}

    def counted(name, original):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        return wrapper

    for cls, name in (
        (RoutingCell, "hidden"),
        (RoutingCell, "transform"),
        (Decoder, "top_down"),
        (Decoder, "head"),
    ):
        monkeypatch.setattr(cls, name, counted(name, getattr(cls, name)))
    config = RoutingSpaceConfig(name="t", num_layers=3, num_scales=3, base_channels=4)
    measure_node_latency(config, (64, 64), repeats=1, min_time=1e-5)
    assert all(count > 0 for count in calls.values()), calls
