"""One unit rule in every display (:mod:`dynviz.units`): tables and axes take the prefix of their
data, so the demo-sized networks read in MMACs (not ``0.000 GMACs``) and the paper-sized ones
still in GMACs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dynviz.cli import main
from dynviz.plots import mpl

CHAIN = "name: mine\nspace: tiny\nchains:\n  - [4, 8, 16, 8, 4]\n"


def _flops(capsys, *argv: str) -> str:
    assert main(["flops", *argv]) == 0
    return capsys.readouterr().out


def _row(out: str, first: str) -> list[str]:
    return next(line.split() for line in out.splitlines() if line.split()[:1] == [first])


def test_a_demo_sized_flops_table_shows_mmacs(capsys, tmp_path):
    spec = tmp_path / "mine.yaml"
    spec.write_text(CHAIN)
    gmacs = json.loads(_flops(capsys, str(spec), "--size", "256", "256", "--json"))["gmacs"]
    assert 1e-3 <= gmacs < 1.0  # an MMACs-sized network
    out = _flops(capsys, str(spec), "--size", "256", "256")
    assert _row(out, "component")[1] == "MMACs"
    total = float(_row(out, "total")[1])
    assert total == pytest.approx(gmacs * 1e3, abs=1e-3)
    assert total > 1.0  # not 0.000 GMACs


def test_a_paper_sized_flops_table_stays_in_gmacs(capsys):
    out = _flops(capsys, "layer16", "--size", "1024", "2048")
    assert _row(out, "component")[1] == "GMACs"
    assert float(_row(out, "total")[1]) == pytest.approx(119.49, rel=0.005)


def test_the_special_cases_table_takes_one_prefix_from_its_column(capsys):
    out = _flops(capsys, "--special-cases", "--size", "1024", "2048")
    header = _row(out, "model")
    assert header.count("GMACs") == 1 and "MMACs" not in header


@pytest.mark.parametrize(
    "gmacs, label, factor",
    [([0.004, 0.006, 0.0051], "MMACs", 1e3), ([98.0, 119.5, 103.7], "GMACs", 1.0)],
)
def test_cost_histogram_axes_name_the_prefix_of_their_data(gmacs, label, factor):
    images = pd.DataFrame({"real_gmacs": gmacs, "model": "m"})
    ax = mpl.cost_histogram(images)
    assert ax.get_xlabel() == f"real cost per image ({label})"
    low, high = ax.get_xlim()
    assert low <= min(gmacs) * factor and max(gmacs) * factor <= high
    mean = [line.get_xdata()[0] for line in ax.get_lines()]
    assert mean == pytest.approx([np.mean(gmacs) * factor])


@pytest.mark.parametrize(
    "gmacs, label, factor",
    [([0.004, 0.006, 0.0051], "MMACs", 1e3), ([98.0, 119.5, 103.7], "GMACs", 1.0)],
)
def test_interactive_cost_histogram_names_the_prefix_of_its_data(gmacs, label, factor):
    pytest.importorskip("plotly.graph_objects")
    from dynviz.plots import interactive

    images = pd.DataFrame({"real_gmacs": gmacs, "model": "m"})
    fig = interactive.cost_histogram(images)
    assert fig.layout.xaxis.title.text == f"real cost per image ({label})"
    assert list(fig.data[0].x) == pytest.approx([g * factor for g in gmacs])
