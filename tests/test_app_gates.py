"""The explorer on gate-graph records (issue 27, item 3): a plain gated network with no dynviz
import, watched with :func:`dynviz.gates.watch` and recorded, shown by the pages Gates, Common
paths and Cost and statistics (values checked against usage worked out by hand); the pages of
the layer x scale routing space say why they do not apply instead of failing; the gate pages
work on routing-space records too. Under ``AppTest``, plus one test in Debian's chromium."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

pytest.importorskip("streamlit")
pytest.importorskip("plotly")

import streamlit as st  # noqa: E402
from _gated_models import Block  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402
from test_app import _markdown_tables  # noqa: E402

from dynviz.analysis.runs import find_folders  # noqa: E402
from dynviz.explorer import APP_DIR_ENV  # noqa: E402
from dynviz.gates import Sigmoid, TopK, watch  # noqa: E402
from dynviz.record import record  # noqa: E402

SPEC = "synthetic:count=6,size=64x64,classes=4,seed=0"
APP = Path(__file__).resolve().parents[1] / "apps" / "explorer.py"
TIMEOUT = 60

POINTS = ("picky.gate", "blocks.0.gate", "blocks.1.gate", "router.fc")
BASE, PICKY, BLOCK0, BLOCK1, EXPERTS = 5e6, 2e6, 1e6, 5e5, (1e5, 2e5, 3e5)  # MACs

GATE_PAGES = {
    "views/gate_points.py": "Gates",
    "views/gate_common.py": "Common paths",
    "views/gate_costs.py": "Cost and statistics",
}
ROUTING_ONLY = {
    "views/route_explorer.py": "Route explorer",
    "views/distributions.py": "Distributions",
    "views/common_networks.py": "Common networks",
    "views/special_cases.py": "Special cases",
    "views/routing_vs_scale.py": "Routing vs scale",
    "views/latency.py": "Latency",
}


# ------------------------------------------------------------- a model with no dynviz import
class Bright(nn.Module):
    """Run probability from the raw image: above 0.5 where its mean (normalised) is positive."""

    def forward(self, x):
        return torch.sigmoid(x.mean((1, 2, 3)))


class Router(nn.Module):
    """Scores of three experts that ignore the input: expert0 always wins a top-1 choice."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, 3)
        nn.init.zeros_(self.fc.weight)
        with torch.no_grad():
            self.fc.bias.copy_(torch.tensor([2.0, 0.0, -2.0]))

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


class SkipNet(nn.Module):
    """``picky`` runs on bright images, block 0 always, block 1 never; the router always picks
    expert0."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.picky = Block(3, Bright())
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(Block(8, 5.0), Block(8, -5.0))
        self.router = Router(8)
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        h = self.blocks(torch.relu(self.stem(self.picky(x))))
        self.router(h)
        return self.head(h)


def _record(dataset, out: Path, *, costs: bool = True) -> Path:
    torch.manual_seed(0)
    model = SkipNet(dataset.num_classes).eval()
    macs = (lambda v: v) if costs else (lambda v: None)
    watch(
        model,
        {
            "picky.gate": Sigmoid(macs=macs(PICKY)),
            "blocks.0.gate": Sigmoid(macs=macs(BLOCK0)),
            "blocks.1.gate": Sigmoid(macs=macs(BLOCK1)),
            "router.fc": TopK(k=1, macs=list(EXPERTS) if costs else None),
        },
        name="skipnet",
        base_macs=BASE if costs else None,
    )
    record(model, dataset, out, data_spec=SPEC, split="val", name=out.name, progress=False)
    return out


@pytest.fixture(scope="module")
def bright(dataset) -> list[bool]:
    """Which images the picky block runs on, by hand: those with a positive mean."""
    ran = [float(dataset[i]["image"].mean()) > 0 for i in range(len(dataset))]
    assert 0 < sum(ran) < len(ran)  # some, not all: a "sometimes" option
    return ran


@pytest.fixture(scope="module")
def expected(bright) -> dict[tuple[str, str], float]:
    """Share of inputs that ran each option, by hand."""
    p = sum(bright) / len(bright)
    return {
        ("picky.gate", "skip"): 1 - p,
        ("picky.gate", "run"): p,
        ("blocks.0.gate", "skip"): 0.0,
        ("blocks.0.gate", "run"): 1.0,
        ("blocks.1.gate", "skip"): 1.0,
        ("blocks.1.gate", "run"): 0.0,
        ("router.fc", "expert0"): 1.0,
        ("router.fc", "expert1"): 0.0,
        ("router.fc", "expert2"): 0.0,
    }


@pytest.fixture(scope="module")
def gate_root(tmp_path_factory, dataset) -> Path:
    root = tmp_path_factory.mktemp("gate-graph")
    _record(dataset, root / "records" / "skipnet")
    return root


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Streamlit's caches outlive AppTest instances in one process: start each test empty."""
    st.cache_data.clear()
    st.cache_resource.clear()
    yield


def _app(root: Path, monkeypatch) -> AppTest:  # noqa: ANN001
    monkeypatch.setenv(APP_DIR_ENV, str(root))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def app(gate_root, monkeypatch) -> AppTest:
    return _app(gate_root, monkeypatch)


def _open(at: AppTest, page: str) -> AppTest:
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _charts(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def _array(data) -> np.ndarray:  # noqa: ANN001 - a list or plotly's typed array
    """A figure's array: a list, or plotly's base64 typed array (``dtype``, ``bdata``)."""
    if isinstance(data, dict) and "bdata" in data:
        values = np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"])
        shape = data.get("shape")
        return values.reshape([int(n) for n in str(shape).split(",")]) if shape else values
    return np.asarray(data, dtype=np.float64)


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _macs(text: str) -> float:
    """A metric such as ``6.1 MMACs`` in MACs."""
    value, unit = text.split()
    return float(value) * {"GMACs": 1e9, "MMACs": 1e6, "KMACs": 1e3}[unit]


# ------------------------------------------------------------------------------ discovery
def test_the_sidebar_lists_gate_graph_records(gate_root, app, tmp_path) -> None:
    assert find_folders(gate_root).records == (str(gate_root / "records" / "skipnet"),)
    assert app.sidebar.selectbox[0].options == ["records/skipnet"]
    assert app.sidebar.selectbox[0].value == "records/skipnet"
    # without its sidecar (damaged) the folder is still found by its parts, and named unreadable
    damaged = tmp_path / "damaged"
    shutil.copytree(gate_root / "records" / "skipnet", damaged)
    (damaged / "records.json").unlink()
    assert find_folders(tmp_path).records == (str(damaged),)


# ------------------------------------------------------------------------------ the pages
def test_gates_page_shows_the_usage_worked_out_by_hand(app, expected, bright) -> None:
    at = _open(app, "views/gate_points.py")
    assert [t.value for t in at.title] == ["Gates"]
    metrics = _metrics(at)
    assert metrics["Gate points"] == "4" and metrics["Options"] == "9"
    assert metrics["Inputs"] == "6"
    assert _macs(metrics["Every option running"]) == pytest.approx(
        BASE + PICKY + BLOCK0 + BLOCK1 + sum(EXPERTS)
    )
    table = at.dataframe[0].value
    assert list(dict.fromkeys(table["point"])) == list(POINTS)
    shown = {(r.point, r.option): r.usage / 100 for r in table.itertuples()}
    assert shown == pytest.approx(expected)
    assert table.set_index(["point", "option"]).loc[("picky.gate", "run"), "gmacs"] == 2.0  # MMACs
    heatmap, histogram, values = _charts(at)[:3]
    z = dict(zip(heatmap["data"][0]["y"], _array(heatmap["data"][0]["z"]), strict=True))
    share = sum(bright) / len(bright)
    assert z["picky.gate"][:2] == pytest.approx([100 * (1 - share), 100 * share])
    assert z["router.fc"][2:] == pytest.approx([100.0, 0.0, 0.0])  # columns skip, run, expert0..
    # Fig. 5 for the graph: of 9 options 4 unused (bin 0), 3 used by all (bin 9), the picky
    # block's two in between
    bars = _array(histogram["data"][0]["y"])
    assert bars[0] == pytest.approx(100 * 4 / 9) and bars[-1] == pytest.approx(100 * 3 / 9)
    assert bars[int(10 * share)] + bars[int(10 * (1 - share))] == pytest.approx(100 * 2 / 9)
    # the first point's values: sigmoid of each image's mean, near 0 or near 1
    run = next(t for t in values["data"] if t["name"] == "run")
    assert _array(run["y"])[-1] == pytest.approx(100 * share)
    at.selectbox(key="gates_point").set_value("blocks.1.gate").run()
    skip = next(t for t in _charts(at)[2]["data"] if t["name"] == "skip")
    assert _array(skip["y"])[-1] == pytest.approx(100.0)  # sigmoid(5) = 0.993 for every input


def test_common_paths_page_sorts_the_options_at_the_threshold(app, bright) -> None:
    at = _open(app, "views/gate_common.py")
    assert [t.value for t in at.title] == ["Common paths"]
    assert at.slider(key="gates_common_threshold").value == 0.95
    metrics = _metrics(at)
    assert (metrics["Always used"], metrics["Sometimes"], metrics["Never used"]) == ("3", "2", "4")
    table = at.dataframe[0].value.set_index("point")
    assert table.loc["picky.gate", ["always", "sometimes", "never"]].tolist() == [
        "-",
        "skip, run",
        "-",
    ]
    assert table.loc["router.fc", "always"] == "expert0"
    assert table.loc["router.fc", "never"] == "expert1, expert2"
    assert table.loc["blocks.1.gate", "never"] == "run"
    # the cost of what a static network keeps: base, block 0, block 1 skipped, expert0
    assert _macs(metrics["Common paths"]) == pytest.approx(BASE + BLOCK0 + EXPERTS[0])
    assert _macs(metrics["Without the never-used options"]) == pytest.approx(
        BASE + PICKY + BLOCK0 + EXPERTS[0]
    )
    share = sum(bright) / 6
    assert _macs(metrics["Recorded average"]) == pytest.approx(
        BASE + BLOCK0 + EXPERTS[0] + share * PICKY, rel=1e-3
    )
    plan = yaml.safe_load(at.code[0].value)
    assert plan["graph"] == "skipnet" and plan["threshold"] == 0.95
    assert plan["keep"] == {
        "picky.gate": [],
        "blocks.0.gate": ["run"],
        "blocks.1.gate": ["skip"],
        "router.fc": ["expert0"],
    }
    assert plan["usage"]["picky.gate/run"] == pytest.approx(share, abs=1e-6)
    # below the picky block's usage its run option becomes common
    at.slider(key="gates_common_threshold").set_value(0.5).run()
    metrics = _metrics(at)
    assert (metrics["Always used"], metrics["Sometimes"], metrics["Never used"]) == ("4", "1", "4")
    assert at.dataframe[0].value.set_index("point").loc["picky.gate", "always"] == "run"
    assert _macs(metrics["Common paths"]) == pytest.approx(BASE + PICKY + BLOCK0 + EXPERTS[0])


def test_cost_and_statistics_page_per_input(app, bright, dataset) -> None:
    at = _open(app, "views/gate_costs.py")
    assert [t.value for t in at.title] == ["Cost and statistics"]
    metrics = _metrics(at)
    cost = [BASE + BLOCK0 + EXPERTS[0] + (PICKY if b else 0.0) for b in bright]
    assert float(metrics["Average (MMACs)"]) * 1e6 == pytest.approx(np.mean(cost), rel=1e-3)
    assert float(metrics["Smallest (MMACs)"]) * 1e6 == pytest.approx(min(cost))
    assert float(metrics["Largest (MMACs)"]) * 1e6 == pytest.approx(max(cost))
    everything = BASE + PICKY + BLOCK0 + BLOCK1 + sum(EXPERTS)
    assert metrics["Of every option running"] == f"{100 * np.mean(cost) / everything:.1f}%"
    histogram = _charts(at)[0]
    assert sum(len(_array(t["x"])) for t in histogram["data"]) == len(dataset)
    rho = at.dataframe[0].value
    assert set(rho["point"]) == set(POINTS) and len(rho) == 6 * len(
        dataset[0]["stats"]
    )  # skip points: run only
    assert rho["rho"].abs().dropna().is_monotonic_decreasing
    # one pair drawn: the picky block's run value against the objects, coloured by ran
    at.selectbox(key="gates_stat_point").set_value("picky.gate").run()
    at.selectbox(key="gates_stat_option").set_value("run").run()
    at.selectbox(key="gates_stat_statistic").set_value("object_count").run()
    assert not at.exception, [e.value for e in at.exception]
    scatter = _charts(at)[1]
    counts = {t["name"]: len(_array(t["x"])) for t in scatter["data"]}
    assert counts == {"ran": sum(bright), "did not run": len(bright) - sum(bright)}
    objects = sorted(float(dataset[i]["stats"]["object_count"]) for i in range(len(dataset)))
    assert sorted(x for t in scatter["data"] for x in _array(t["x"])) == objects


def test_gate_graph_without_costs_says_the_cost_is_unknown(dataset, tmp_path, monkeypatch):
    _record(dataset, tmp_path / "records" / "nocost", costs=False)
    at = _app(tmp_path, monkeypatch)
    for page in GATE_PAGES:
        _open(at, page)
    _open(at, "views/gate_common.py")
    assert any("gives no cost" in i.value for i in at.info)
    assert at.dataframe[0].value.set_index("point").loc["router.fc", "always"] == "expert0"
    _open(at, "views/gate_costs.py")
    assert any("no input's real cost is known" in i.value for i in at.info)
    assert len(at.dataframe) == 1  # the statistics table still shows


# -------------------------------------------------------------------- routing-only pages
@pytest.mark.parametrize("page", list(ROUTING_ONLY), ids=[Path(p).stem for p in ROUTING_ONLY])
def test_routing_only_pages_say_why_they_do_not_apply(app, page) -> None:
    at = _open(app, page)
    assert [t.value for t in at.title] == [ROUTING_ONLY[page]]
    assert len(at.info) == 1, [i.value for i in at.info]
    text = at.info[0].value
    assert text.startswith(ROUTING_ONLY[page])
    assert "the gate graph 'skipnet' (3 skip points, 1 router)" in text
    assert "see Gates, Common paths and Cost and statistics" in text


def test_overview_keeps_its_general_parts_on_gate_graph_records(app) -> None:
    at = _open(app, "views/overview.py")
    assert [t.value for t in at.title] == ["Overview"]
    models = _markdown_tables(at)[0]
    assert list(models["model"]) == ["skipnet"] and models["images"].iloc[0] == "6"
    assert not at.info


# ------------------------------------------------------------------ routing-space records
def test_gate_pages_read_routing_space_records_too(tmp_path_factory, monkeypatch) -> None:
    from _records_fixture import shared_explorer_root

    at = _app(shared_explorer_root(tmp_path_factory), monkeypatch)
    for page, title in GATE_PAGES.items():
        _open(at, page)
        assert [t.value for t in at.title] == [title]
    _open(at, "views/gate_points.py")
    assert all(p.startswith("L") and "/s" in p for p in at.dataframe[0].value["point"])
    _open(at, "views/gate_common.py")
    assert any("Common networks extracts" in i.value for i in at.info)  # costs are the cells'
    _open(at, "views/route_explorer.py")  # no guard on routing-space records
    assert not any("not of a routing space" in i.value for i in at.info)
    assert at.title[0].value == "Route explorer"


# ------------------------------------------------------------------------ real browser
@pytest.mark.slow
@pytest.mark.browser
def test_gate_pages_in_a_real_browser(gate_root, tmp_path) -> None:
    from test_browser import _opened, chromium, streamlit_server

    with streamlit_server(gate_root, tmp_path / "server.log") as url, chromium() as browser:
        with _opened(browser, url, "gates", "Gates") as page:
            page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg', timeout=30_000)
            assert page.locator('[data-testid="stPlotlyChart"]').count() >= 3
            ticks = page.locator('[data-testid="stPlotlyChart"]').first.locator(".ytick text")
            assert set(POINTS) <= set(ticks.all_text_contents())
            assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(tmp_path / "gates.png"), full_page=True)
        with _opened(browser, url, "route_explorer", "Route explorer") as page:
            page.get_by_text("not of a routing space", exact=False).first.wait_for(timeout=30_000)
            text = page.locator('[data-testid="stAlert"]').first.inner_text()
            assert "skipnet" in text and "see Gates" in text
            assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(tmp_path / "route_explorer.png"))


def test_a_folder_of_both_kinds(dataset, gate_root, tmp_path_factory, monkeypatch) -> None:
    """Routing-space and gate-graph records side by side: every page renders for either
    selection, and the pages comparing several routing-space records offer only those."""
    from _records_fixture import shared_explorer_root

    root = tmp_path_factory.mktemp("both-kinds")
    shutil.copytree(shared_explorer_root(tmp_path_factory) / "records" / "tiny", root / "tiny")
    shutil.copytree(gate_root / "records" / "skipnet", root / "skipnet")
    at = _app(root, monkeypatch)
    assert at.sidebar.selectbox[0].options == ["skipnet", "tiny"]
    at.sidebar.selectbox[0].set_value("tiny").run()
    for page in [*ROUTING_ONLY, *GATE_PAGES, "views/overview.py"]:
        _open(at, page)
        assert not any("not of a routing space" in i.value for i in at.info), page
        if page in ("views/distributions.py", "views/routing_vs_scale.py"):
            assert at.multiselect[0].options == ["tiny"], page
    at.sidebar.selectbox[0].set_value("skipnet").run()
    for page in ROUTING_ONLY:
        _open(at, page)
        assert "not of a routing space" in at.info[0].value, page
    _open(at, "views/gate_points.py")
    assert list(dict.fromkeys(at.dataframe[0].value["point"])) == list(POINTS)
