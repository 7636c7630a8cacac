"""``dynviz record``, ``analyze`` and ``extract`` on any gated network (issue 27): a network
built by an entry point (``_gated_models:build``, no dynviz code in its forward), its
checkpoints, the gate report, the plan and the static network, and the errors.

The network (tests/_gated_models.py) decides by hand: ``router`` runs ``expert0`` on the images
whose mean is above 0 and ``expert1`` on the others (``expert2`` never), ``blocks.0`` always
runs and ``blocks.1`` never does. Costs: base 1000 MACs, experts 100/200/400, blocks 50."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dynviz.cli import main as cli
from dynviz.errors import EXIT_BAD_FILE, EXIT_USAGE
from dynviz.gates.entry import (
    load_entry,
    read_gated_checkpoint,
    save_gated_checkpoint,
)
from dynviz.model import ConfigError
from dynviz.model.checkpoint import CheckpointError, sha256_file
from dynviz.record import read_records

SPEC = "synthetic:count=8,size=64x64,classes=4"
ENTRY = "_gated_models:build"


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def positive(dataset) -> dict[str, bool]:
    """Per image id: whether the image's mean is above 0 (the router's rule: expert0)."""
    return {
        str(dataset[i]["image_id"]): float(dataset[i]["image"].mean()) > 0
        for i in range(len(dataset))
    }


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """The entry point recorded over the 8 images."""
    out = tmp_path_factory.mktemp("gated") / "rec"
    code = cli(["record", ENTRY, "--data", SPEC, "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def _usage(records) -> dict[tuple[str, str], float]:
    d = records.decisions
    ran = d.groupby(["point", "option"], observed=True)["ran"].mean()
    return {(str(p), str(o)): float(v) for (p, o), v in ran.items()}


# ------------------------------------------------------------------------------ record
def test_record_an_entry_point(recorded, positive):
    records = read_records(recorded)
    assert records.kind == "gate-graph" and records.graph.name == "tiny-gated"
    assert records.sidecar.builder == ENTRY and records.sidecar.checkpoint is None
    share = sum(positive.values()) / len(positive)
    assert share == 5 / 8  # the data set's images: 5 of 8 brighter than 0
    usage = _usage(records)
    assert usage[("router", "expert0")] == share and usage[("router", "expert1")] == 1 - share
    assert usage[("router", "expert2")] == 0.0
    assert usage[("blocks.0.gate", "run")] == 1.0 and usage[("blocks.1.gate", "run")] == 0.0
    # real cost: 1000 + expert0 (100) or expert1 (200) + block 0 (50)
    images = records.images.set_index("image_id")
    for image_id, bright in positive.items():
        expected = (1000 + (100 if bright else 200) + 50) / 1e9
        assert images.loc[image_id, "real_gmacs"] == pytest.approx(expected)


def test_record_a_checkpoint_with_its_builder_loads_its_weights(tmp_path, capsys):
    model = load_entry(ENTRY)
    with torch.no_grad():
        model.blocks[1].gate.fc.bias.fill_(5.0)  # block 1 now always runs
    ckpt = save_gated_checkpoint(model, tmp_path / "g.pt", builder=ENTRY, kwargs={"classes": 4})
    assert read_gated_checkpoint(ckpt).kwargs == {"classes": 4}
    out = tmp_path / "rec"
    argv = ["record", str(ckpt), "--data", SPEC, "--out", str(out), "--limit", "3", "--json"]
    assert cli([*argv, "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["recorded"] == 3 and summary["builder"] == ENTRY
    records = read_records(out)
    assert records.sidecar.checkpoint.sha256 == sha256_file(ckpt)
    assert _usage(records)[("blocks.1.gate", "run")] == 1.0  # the file's weights, not the builder's


def test_record_a_bare_state_dict_with_builder_and_a_file_entry_point(tmp_path, capsys):
    model = load_entry(ENTRY)
    with torch.no_grad():
        model.blocks[0].gate.fc.bias.fill_(-5.0)  # block 0 now never runs
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    out = tmp_path / "rec"
    base = ["--data", SPEC, "--limit", "2", "--no-progress"]
    assert (
        cli(["record", str(tmp_path / "bare.pt"), "--builder", ENTRY, "--out", str(out), *base])
        == 0
    )
    assert _usage(read_records(out))[("blocks.0.gate", "run")] == 0.0
    # the same weights through --checkpoint and a file.py:function entry point
    nets = tmp_path / "nets.py"
    nets.write_text(
        "from _gated_models import build as make\n\n\ndef build():\n    return make()\n"
    )
    out2 = tmp_path / "rec2"
    argv = [
        "record",
        f"{nets}:build",
        "--checkpoint",
        str(tmp_path / "bare.pt"),
        "--out",
        str(out2),
    ]
    assert cli([*argv, *base]) == 0
    records = read_records(out2)
    assert records.sidecar.builder == f"{nets.resolve()}:build"  # absolute: rebuilt from anywhere
    assert _usage(records)[("blocks.0.gate", "run")] == 0.0
    # a bare state_dict alone: the routing reader says what to add
    assert cli(["record", str(tmp_path / "bare.pt"), "--out", str(tmp_path / "x"), *base]) == 3
    assert "--builder MODULE:FUNCTION" in _one_error(capsys)


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("no_such_module_here:build", "no module named 'no_such_module_here'"),
        ("_gated_models:biuld", "did you mean build"),
        ("_gated_models:build_plain", "dynviz.gates.watch"),
        ("_gated_models:build_number", "returned int, not a torch nn.Module"),
        ("_gated_models:NOT_CALLABLE", "not a function that builds the model"),
        ("missing_file.py:build", "no such file"),
    ],
)
def test_a_bad_entry_point_is_one_line_naming_it(tmp_path, capsys, entry, words):
    code = cli(["record", entry, "--data", SPEC, "--out", str(tmp_path / "x")])
    assert code == EXIT_USAGE
    line = _one_error(capsys)
    assert line.startswith(f"error: {entry}") and words in line, line
    assert not (tmp_path / "x").exists()


def test_weights_that_do_not_fit_name_the_keys(tmp_path, capsys):
    wide = load_entry(ENTRY, kwargs={"width": 8})
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    argv = ["record", ENTRY, "--checkpoint", str(tmp_path / "wide.pt"), "--data", SPEC]
    assert cli([*argv, "--out", str(tmp_path / "x")]) == EXIT_BAD_FILE
    line = _one_error(capsys)
    assert "wide.pt: the weights do not fit _gated_models:build" in line
    assert "shape of stem.weight (8, 3, 3, 3) in the file, (4, 3, 3, 3) in the model" in line


@pytest.mark.parametrize(
    "extra", [["--route", "fcn32s"], ["--aug", "flip"], ["--counting", "official"]]
)
def test_routing_options_are_refused_for_a_gated_network(tmp_path, capsys, extra):
    argv = ["record", ENTRY, "--data", SPEC, "--out", str(tmp_path / "x"), *extra]
    assert cli(argv) == EXIT_USAGE
    line = _one_error(capsys)
    assert f"{extra[0]}" in line and "applies to routing networks" in line


def test_load_entry_refuses_what_names_no_builder(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "bare.pt")
    with pytest.raises(ConfigError, match="bare.pt: a bare state_dict names no builder"):
        load_entry(None, checkpoint=tmp_path / "bare.pt")
    with pytest.raises(ConfigError, match="is not an entry point"):
        load_entry("tiny")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list.pt: neither a state_dict"):
        read_gated_checkpoint(tmp_path / "list.pt")


# ------------------------------------------------------------------------------ analyze
def test_analyze_writes_the_gate_report(recorded, positive, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["analyze", str(recorded), "--out", str(out), "--formats", "png", "--json"]
    assert cli(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "gate-graph"
    names = ["usage.csv", "distribution.csv", "common.yaml", "cost.csv", "statistics.csv"]
    names += ["report.md", "value_distribution.png", "option_usage.png", "cost_histogram.png"]
    assert all((out / n).is_file() for n in names), sorted(p.name for p in out.iterdir())
    assert not list(out.glob(".report-*"))  # the hidden folder is gone
    usage = pd.read_csv(out / "usage.csv").set_index(["point", "option"])["usage"]
    assert usage[("router", "expert0")] == 5 / 8 and usage[("router", "expert2")] == 0.0
    assert usage[("blocks.0.gate", "run")] == 1.0 and usage[("blocks.1.gate", "skip")] == 1.0
    dist = pd.read_csv(out / "distribution.csv").set_index(["point", "option", "bin"])["share"]
    assert dist[("blocks.0.gate", "run", 9)] == 1.0  # sigmoid(5) = 0.993 in the top bin
    assert dist[("router", "expert0", 9)] == 5 / 8 and dist[("router", "expert0", 0)] == 3 / 8
    common = yaml.safe_load((out / "common.yaml").read_text())
    assert common["always"] == {"router": [], "blocks.0.gate": ["run"], "blocks.1.gate": ["skip"]}
    assert common["never"]["router"] == ["expert2"]
    cost = pd.read_csv(out / "cost.csv").set_index("image_id")["real_gmacs"]
    assert sorted(cost.round(12).unique() * 1e9) == pytest.approx([1150.0, 1250.0])
    assert summary["summary"]["cost"]["min"] == pytest.approx(1.15e-6)
    assert summary["summary"]["cost"]["spread"] == pytest.approx(1250 / 1150)
    assert summary["summary"]["always"] == 2 and summary["summary"]["never"] == 3
    report = (out / "report.md").read_text()
    assert "| router | router | expert0 | 62.5% |" in report
    assert "| blocks.1.gate | skip | - | run |" in report  # always, sometimes, never
    assert "| 1.15 KMACs | 1.15 KMACs | 1.188 KMACs | 1.25 KMACs | 1.09x | 1.8 KMACs |" in report
    assert f"| builder | `{ENTRY}` |" in report
    assert report.isascii()


def test_analyze_refuses_routing_options_and_several_gate_folders(recorded, tmp_path, capsys):
    out = str(tmp_path / "report")
    assert cli(["analyze", str(recorded), "--out", out, "--html"]) == EXIT_USAGE
    assert "--html applies to routing-space records" in _one_error(capsys)
    assert cli(["analyze", str(recorded), str(recorded), "--out", out]) == EXIT_USAGE
    assert "one gate-graph records folder at a time" in _one_error(capsys)


# ------------------------------------------------------------------------------ extract
def test_extract_writes_the_plan_and_the_static_network(recorded, tmp_path, capsys):
    plan_file, static_file = tmp_path / "plan.yaml", tmp_path / "static.pt"
    argv = ["extract", str(recorded), "--out", str(plan_file), "--static-out", str(static_file)]
    assert cli(argv) == 0
    printed = capsys.readouterr().out
    text = plan_file.read_text()
    assert text.startswith(f"# Common plan extracted by `dynviz extract` from {recorded}")
    assert "threshold 0.95" in text.splitlines()[2]
    plan = yaml.safe_load(text)
    assert plan["network"] == "tiny-gated" and plan["builder"] == ENTRY
    assert plan["threshold"] == 0.95 and plan["lossless"] is False and plan["inputs"] == 8
    assert plan["keep"] == {"router": [], "blocks.0.gate": ["run"], "blocks.1.gate": ["skip"]}
    assert plan["never"] == {
        "router": ["expert2"],
        "blocks.0.gate": ["skip"],
        "blocks.1.gate": ["run"],
    }
    assert plan["usage"]["router"] == {"expert0": 0.625, "expert1": 0.375, "expert2": 0.0}
    # the static network: stem, block 0's body, head (no expert), loadable without code
    static = load_entry(None, checkpoint=static_file)
    assert len(static.experts) == 0 and len(static.bodies) == 1
    params = sum(p.numel() for p in static.parameters())
    assert params == (4 * 27 + 4) + (4 * 36 + 4) + (4 * 4 + 4)
    assert f"static network, {params:,} parameters" in printed
    # static cost: 1000 + block 0 (50) = 1050 MACs; dynamic mean (5 x 1150 + 3 x 1250) / 8
    assert "static 1.05 KMACs; dynamic mean real 1.188 KMACs" in printed
    dynamic = load_entry(ENTRY)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(static(x), dynamic.static(plan["keep"])(x))


def test_extract_lossless_keeps_every_used_option(recorded, tmp_path, capsys):
    out = tmp_path / "plan.yaml"
    assert cli(["extract", str(recorded), "--out", str(out), "--lossless", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    keep = yaml.safe_load(out.read_text())["keep"]
    assert keep["router"] == ["expert0", "expert1"] and summary["kept"] == 4
    # 1000 + 100 + 200 + 50 MACs
    assert summary["costs"]["static_gmacs"] == pytest.approx(1350 / 1e9)
    assert summary["static"] is None  # no --static-out


def test_extract_of_a_network_without_static_writes_only_the_plan(tmp_path, capsys):
    rec = tmp_path / "rec"
    argv = ["record", "_gated_models:build_no_static", "--data", SPEC, "--limit", "2"]
    assert cli([*argv, "--out", str(rec), "--no-progress"]) == 0
    capsys.readouterr()
    static = tmp_path / "static.pt"
    argv = ["extract", str(rec), "--out", str(tmp_path / "p.yaml"), "--static-out", str(static)]
    assert cli(argv) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "note:" in line]
    assert notes == ["  note: NoStatic has no static(keep) method: only the plan was written"]
    assert (tmp_path / "p.yaml").is_file() and not static.exists()


def test_extract_refuses_options_of_the_other_kind(recorded, tmp_path, capsys):
    out = str(tmp_path / "p.yaml")
    assert cli(["extract", str(recorded), "--out", out, "--size", "8", "8"]) == EXIT_USAGE
    assert "--size applies to routing-space records" in _one_error(capsys)
    routing = tmp_path / "routing"
    argv = ["record", "tiny", "--data", SPEC, "--out", str(routing), "--limit", "1"]
    assert cli([*argv, "--no-progress"]) == 0
    capsys.readouterr()
    assert cli(["extract", str(routing), "--out", out, "--lossless"]) == EXIT_USAGE
    assert "--lossless applies to gate-graph records" in _one_error(capsys)


# ------------------------------------------------------------------------------ figures
def _distribution() -> pd.DataFrame:
    rows = []
    for point, options, shares in (
        ("b1", ["skip", "run"], [[0.25, 0.75], [0.75, 0.25]]),
        ("moe", ["e0", "e1"], [[1.0, 0.0], [0.5, 0.5]]),
    ):
        for option, share in zip(options, shares, strict=True):
            for b, s in enumerate(share):
                rows.append((point, option, b, b / 2, (b + 1) / 2, s))
    return pd.DataFrame(rows, columns=["point", "option", "bin", "low", "high", "share"])


def test_plot_functions_draw_into_the_given_axes():
    from matplotlib.figure import Figure

    from dynviz.plots.gates import plot_option_usage, plot_value_distribution

    ax = Figure().subplots()
    assert plot_value_distribution(data=_distribution(), ax=ax) is ax
    bars = ax.patches
    assert len(bars) == 8  # 2 points x 2 options x 2 bins
    # b1 is the top row (baseline 1): skip's first bin holds 25% of its inputs
    first = bars[0]
    assert first.get_y() == 1 and first.get_height() == pytest.approx(0.85 * 0.25)
    assert first.get_width() == pytest.approx(0.25)  # half a bin: two options side by side
    assert [t.get_text() for t in ax.get_yticklabels()] == ["moe", "b1"]
    usage = pd.DataFrame(
        {"point": ["b1", "b1", "moe"], "option": ["skip", "run", "e0"], "usage": [0.5, 0.5, 1.0]}
    )
    ax = plot_option_usage(data=usage, threshold=0.9)
    assert [round(b.get_width(), 6) for b in ax.patches] == [0.5, 0.5, 1.0]


def test_gate_report_leaves_no_hidden_folder_and_reports_unknown_costs(recorded, tmp_path):
    from dynviz.analysis.gates_report import cost_summary, gate_report

    out = tmp_path / "report"
    out.mkdir()
    (out / ".report-old.tmp").mkdir()  # left by a killed run
    report = gate_report(read_records(recorded), out, threshold=0.5, bins=4, formats=("png",))
    assert not list(out.glob(".report-*")) and report.out == out
    assert report.summary["kept"]["router"] == ["expert0"]  # 62.5% > 50%
    assert cost_summary(pd.DataFrame({"real_gmacs": [np.nan, np.nan]})) is None
    with pytest.raises(ValueError, match="threshold"):
        gate_report(read_records(recorded), out, threshold=1.0)
