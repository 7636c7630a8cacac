"""Plot builders (matplotlib and plotly) and the ``dynviz analyze`` report."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes

import dynviz
from dynviz.analysis import activation_probability, probability_matrix, routing_vs_scale
from dynviz.cli import main as cli
from dynviz.data import build_dataset
from dynviz.graph import space_graph
from dynviz.model.route import Route
from dynviz.plots import mpl
from dynviz.record import combine_records, read_records, record

go = pytest.importorskip("plotly.graph_objects")
from dynviz.plots import interactive  # noqa: E402


@pytest.fixture(scope="module")
def two_records(tmp_path_factory):
    data = build_dataset("synthetic:count=5,size=64x64,classes=4", split="val")
    model = dynviz.build_model("tiny", num_classes=data.num_classes).eval()
    root = tmp_path_factory.mktemp("plots")
    record(model, data, root / "gated", name="gated")
    route = Route.from_chains(model.config, [[4, 8, 16, 16, 8], [4, 4, 4, 4, 4]], name="fixed")
    record(model, data, root / "fixed", route=route)
    return [read_records(root / "gated"), read_records(root / "fixed")]


@pytest.fixture
def frames(two_records):
    gates, images = combine_records(two_records)
    vs = pd.concat(
        [routing_vs_scale(r.gates, r.images).assign(model=r.label) for r in two_records],
        ignore_index=True,
    )
    return gates, images, vs


def _no_pyplot_figures() -> bool:
    plt = sys.modules.get("matplotlib.pyplot")
    return plt is None or plt.get_fignums() == []


def test_mpl_builders_return_axes(frames, two_records):
    gates, images, vs = frames
    per_path = activation_probability(gates)
    ax = mpl.probability_histogram(per_path, bins=10)
    assert isinstance(ax, Axes) and len(ax.patches) == 20  # 10 bins x 2 models
    assert ax.get_legend() is not None
    matrix = probability_matrix(two_records[0].gates)
    ax = mpl.probability_heatmap(matrix)
    assert ax.images and len(ax.texts) == int(np.isfinite(matrix.to_numpy()).sum())
    assert isinstance(mpl.cost_histogram(images), Axes)
    assert isinstance(mpl.routing_scatter(vs, style="model"), Axes)
    assert isinstance(mpl.routing_box(vs, y="fine_share"), Axes)
    graph = space_graph(two_records[0].config, probability=per_path[per_path["model"] == "gated"])
    ax = mpl.space_diagram(graph)
    assert len(ax.lines) >= graph.number_of_edges()
    own = mpl.new_axes()
    assert mpl.cost_histogram(images, ax=own) is own
    assert _no_pyplot_figures()


def test_plotly_builders(frames, two_records):
    gates, images, vs = frames
    per_path = activation_probability(gates)
    fig = interactive.probability_violin(per_path)
    assert isinstance(fig, go.Figure)
    assert {t.spanmode for t in fig.data} == {"hard"}
    assert len(interactive.probability_histogram(per_path).data) == 2
    assert isinstance(
        interactive.probability_heatmap(probability_matrix(two_records[0].gates)), go.Figure
    )
    assert isinstance(interactive.cost_histogram(images), go.Figure)
    assert isinstance(interactive.routing_scatter(vs), go.Figure)
    graph = space_graph(two_records[0].config, probability=per_path[per_path["model"] == "gated"])
    assert isinstance(interactive.space_figure(graph), go.Figure)


def test_analyze_writes_the_report(two_records, tmp_path, capsys):
    out = tmp_path / "report"
    paths = [str(r.path) for r in two_records]
    assert cli(["analyze", *paths, "--out", str(out)]) == 0
    assert "fixed" in capsys.readouterr().out
    for name in (
        "activation_probability.csv",
        "probability_distribution.csv",
        "cost_statistics.csv",
        "routing_vs_scale.csv",
        "scale_correlations.csv",
        "fig5_probability.png",
        "fig5_probability.pdf",
        "fig5_probability.html",
        "probability_violin.html",
        "heatmap_gated.png",
        "space_fixed.png",
        "routing_vs_scale.png",
        "cost_histogram.png",
        "plotly.min.js",
        "report.md",
        "space_gated.graphml",
        "space_fixed.json",
    ):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "![Fig. 5](fig5_probability.png)" in report and "routing_vs_scale.png" in report
    assert "Counting: paper (" in report  # both records in the default counting
    assert "gated, alpha > 0; fixed, alpha > 0" in report  # the records' active threshold
    for png in out.glob("*.png"):
        assert png.stat().st_size < 200_000, png
    costs = pd.read_csv(out / "cost_statistics.csv")
    assert list(costs["model"]) == ["gated", "fixed"] and (costs["images"] == 5).all()
    per_path = pd.read_csv(out / "activation_probability.csv")
    fixed = per_path[per_path["model"] == "fixed"]
    assert set(fixed["p"]) <= {0.0, 1.0}  # a forced route: every path always or never
    assert cli(["analyze", str(tmp_path / "missing"), "--out", str(out)]) == 3
    empty = tmp_path / "empty"  # a sidecar and no chunk yet: a recording killed early
    empty.mkdir()
    (empty / "records.json").write_text((Path(paths[0]) / "records.json").read_text())
    assert cli(["analyze", str(empty), "--out", str(out)]) == 3
    assert "no image recorded yet" in capsys.readouterr().err
    assert _no_pyplot_figures()
