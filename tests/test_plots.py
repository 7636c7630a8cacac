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
from dynviz.model.graph import space_graph
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
    # the cost histogram counts every image once
    ax = mpl.cost_histogram(images)
    assert sum(p.get_height() for p in ax.patches) == pytest.approx(len(images))
    # the scatter draws each image at its statistic and measure, one collection per group
    ax = mpl.routing_scatter(vs, style="model")
    drawn = np.concatenate([c.get_offsets() for c in ax.collections])
    kept = vs[vs["stat_mean_object_area"] > 0]  # log x: zero areas are left out
    assert len(drawn) == len(kept)
    assert sorted(drawn[:, 1].tolist()) == pytest.approx(sorted(kept["fine_share"].tolist()))
    ax = mpl.routing_box(vs, y="fine_share")
    assert isinstance(ax, Axes) and ax.get_ylabel()
    # the cost-accuracy figure: one labelled point per network, an error bar where an interval is
    points = pd.DataFrame(
        {
            "method": ["dyn", "a", "b"],
            "kind": ["dynamic", "static", "static"],
            "cost": [5.0, 3.0, 6.0],
            "miou": [80.0, 70.0, 82.0],
            "low": [np.nan, 68.0, 79.0],
            "high": [np.nan, 72.0, 85.0],
        }
    )
    ax = mpl.cost_accuracy(points, reference="dyn")
    assert sorted(t.get_text() for t in ax.texts) == ["a", "b", "dyn"]
    assert len(ax.containers) == 2  # two error bars, none on the reference
    bars = sorted(c.lines[2][0].get_segments()[0][:, 1].tolist() for c in ax.containers)
    assert bars == [[68.0, 72.0], [79.0, 85.0]]
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
    matrix = probability_matrix(two_records[0].gates)
    heat = interactive.probability_heatmap(matrix)
    z = np.asarray(heat.data[0].z, dtype=float)  # scales as rows, layers as columns
    np.testing.assert_allclose(z, matrix.to_numpy().T)
    costs = interactive.cost_histogram(images)
    assert sum(len(t.x) for t in costs.data) == len(images)
    scatter = interactive.routing_scatter(vs)
    assert sum(len(t.x) for t in scatter.data) == int((vs["stat_mean_object_area"] > 0).sum())
    assert scatter.layout.yaxis.title.text == "share of active paths at 1/4"
    graph = space_graph(two_records[0].config, probability=per_path[per_path["model"] == "gated"])
    space = interactive.space_figure(graph, highlight=[(0, 4, "keep")], highlight_name="marked")
    edges = [t for t in space.data if t.mode == "lines" and t.x[0] is not None]
    assert len(edges) >= graph.number_of_edges()
    (band,) = [t for t in space.data if t.name == "marked"]
    assert list(band.x).count(None) == 1  # one marked path, one segment


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


def test_training_curves_draw_a_line_per_run_and_a_lone_value_as_a_point():
    data = pd.DataFrame(
        {
            "iter": [2, 4, 6, 2, 4, 6, 6],
            "run": ["a", "a", "a", "b", "b", "b", "c"],
            "loss": [1.0, 0.5, 0.25, 2.0, 1.5, 1.0, 0.7],
        }
    )
    ax = mpl.training_curves(data, y="loss")
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"a", "b", "c"}
    np.testing.assert_array_equal(lines["b"].get_ydata(), [2.0, 1.5, 1.0])
    assert lines["c"].get_marker() == "o" and lines["a"].get_marker() in ("None", None, "")
    assert ax.get_xlabel() == "iteration" and ax.get_ylabel() == "loss"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]
