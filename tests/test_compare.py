"""``dynviz compare``: the Table-1-style table of runs."""

from __future__ import annotations

import pandas as pd
import pytest

import dynviz
import dynviz.model.zoo
from dynviz.analysis.compare import CompareRow, describe_model, markdown
from dynviz.cli import main as cli
from dynviz.model.checkpoint import make_checkpoint, save_checkpoint
from dynviz.model.route import Route

SPEC = "synthetic:count=3,size=64x64,classes=4"


def _run(path, model, train_args=None):
    path.mkdir(parents=True)
    checkpoint = make_checkpoint(model, iteration=1, rng=False, train_args=train_args)
    save_checkpoint(path / "checkpoint_latest.pt", checkpoint)
    return path


def test_compare_runs(tmp_path, capsys):
    dynamic = dynviz.build_model("tiny", num_classes=4)
    space = dynamic.config
    common = Route.from_chains(
        space,
        [[4, 4, 8, 8, 8]],
        name="common-95",
        description="common network of raw: paths active in more than 95% of 3 images",
    )
    special = Route.from_chains(
        space,
        [[4, 8, 16, 32, 32]],
        name="fcn-like",
        description="FCN-32s-like single path",
        meta={"paper": {"params_m": 2.9}},
    )
    runs = [
        _run(tmp_path / "raw", dynamic, {"budget_lambda": 0.5, "budget_mu": 0.3}),
        _run(tmp_path / "common", dynviz.build_model(common)),
        _run(tmp_path / "fcn", dynviz.build_model(special)),
    ]
    out = tmp_path / "table"
    code = cli(["compare", *map(str, runs), "--data", SPEC, "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| Method | Kind | Dynamic |" in printed
    table = pd.read_csv(out / "table1.csv")
    assert list(table["method"]) == ["raw", "common", "fcn"]
    assert list(table["kind"]) == ["dynamic", "common", "special case"]
    assert list(table["dynamic"]) == [True, False, False]
    assert (table["images"] == 3).all()
    assert (table["gmacs_min"] <= table["gmacs_avg"]).all()
    assert (table["gmacs_avg"] <= table["gmacs_max"] + 1e-12).all()
    assert table.loc[1, "gmacs_max"] < table.loc[0, "gmacs_max"]  # one path is cheaper
    text = (out / "table1.md").read_text()
    assert "MMACs avg" in text and "FCN-32s-like single path" in text
    assert text.index("| raw |") < text.index("| common |") < text.index("| fcn |")
    assert "budget lambda=0.5" in text


def test_describe_model_kinds():
    assert describe_model(dynviz.build_model("layer16-fix"))[0] == "fix"
    assert describe_model(dynviz.build_model("fcn32s"))[0] == "special case"
    kind, text = describe_model(dynviz.build_model("tiny"))
    assert kind == "dynamic" and "no budget" in text


def test_markdown_units():
    row = CompareRow(
        "m", "dynamic", True, "gates", 0.5, 120.0, 130.0, 100.0, 119.0, 17_784_968, 10, "x.pt", 5
    )
    text = markdown([row])
    assert "GMACs avg" in text and "| 50.00 | 120.000 | 130.000 | 100.000 | 17.785 |" in text


def test_compare_errors(tmp_path):
    assert cli(["compare", str(tmp_path / "nothing"), "--data", SPEC, "--out", str(tmp_path)]) == 3
    with pytest.raises(SystemExit):
        cli(["compare", "--out", str(tmp_path)])


def _row(method: str, kind: str, miou: float, gmacs: float) -> CompareRow:
    return CompareRow(
        method, kind, kind == "dynamic", "", miou, gmacs, gmacs, gmacs, gmacs, 1, 8, "", None
    )


def test_against_special_cases_by_hand(tmp_path):
    from dynviz.analysis.compare import against_special_cases, read_table, write_table

    rows = [
        _row("Dyn", "dynamic", 0.60, 4.0),
        _row("FCN", "special case", 0.30, 2.0),
        _row("UNet", "special case", 0.90, 6.0),
        _row("Mid", "special case", 0.50, 4.0),  # equal cost counts as "no more"
        _row("Common", "common", 0.99, 1.0),  # not a special case
    ]
    verdict = against_special_cases(rows, "Dyn")
    assert [c[0] for c in verdict.cheaper] == ["FCN", "Mid"]
    assert [c[0] for c in verdict.dearer] == ["UNet"]
    assert verdict.beats_cheaper and not verdict.beats_dearer
    # the line from Mid (4.0, 0.5) to UNet (6.0, 0.9) at 4.0 GMACs
    assert verdict.line_miou == pytest.approx(0.5)
    text = " ".join(verdict.sentences())
    assert "UNet (90.0% at 6 GMACs, 30.0 points above it)" in text
    assert "10.0 points below Dyn" in text
    # the CSV round trip keeps what the verdict reads
    write_table(rows, tmp_path, data="synthetic")
    assert against_special_cases(read_table(tmp_path / "table1.csv"), "Dyn") == verdict
    rows[1] = _row("FCN", "special case", 0.70, 2.0)
    assert not against_special_cases(rows, "Dyn").beats_cheaper
    assert against_special_cases(rows[:1], "Dyn") is None
    assert against_special_cases(rows, "missing") is None


def test_against_the_static_networks_counts_the_common_network():
    from dynviz.analysis.compare import against_special_cases

    rows = [
        _row("Dyn", "dynamic", 0.80, 5.0),
        _row("FCN", "special case", 0.30, 3.0),
        _row("UNet", "special case", 0.85, 6.0),
        _row("Common", "common", 0.86, 4.4),  # cheaper and better than Dyn
    ]
    special = against_special_cases(rows, "Dyn")
    assert special.beats_cheaper and [c[0] for c in special.cheaper] == ["FCN"]
    static = against_special_cases(rows, "Dyn", kinds=("special case", "common"))
    assert [c[0] for c in static.cheaper] == ["FCN", "Common"]
    assert not static.beats_cheaper and not static.beats_dearer
    text = " ".join(static.sentences())
    assert "Static networks that cost no more: FCN" in text
    assert "Common (86.0% at 4.4 GMACs, 6.0 points above it)" in text
    rows[3] = _row("Common", "common", 0.70, 4.4)
    assert against_special_cases(rows, "Dyn", kinds=("special case", "common")).beats_cheaper
