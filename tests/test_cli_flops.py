from __future__ import annotations

import json

import pytest

from dynviz.cli import main
from dynviz.model.config import ConfigError
from dynviz.model.cost import cost_table
from dynviz.model.zoo import load_space


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "name, params, gmacs",
    [
        ("layer16", 17_784_968, 119.49),
        ("layer16-fix", 15_261_843, 102.62),
        ("dynamic-a", 17_784_968, 103.68),
    ],
)
def test_flops_json_matches_the_paper(capsys, name, params, gmacs):
    code, out, _ = run(capsys, "flops", name, "--size", "1024", "2048", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["params"] == params
    assert data["gmacs"] == pytest.approx(gmacs, rel=0.005)
    assert sum(data["breakdown_gmacs"].values()) == pytest.approx(data["gmacs"])
    assert sum(v for k, v in data["params_breakdown"].items() if k != "total") == params


def test_flops_layer33_params(capsys):
    _, out, _ = run(capsys, "flops", "layer33", "--json")
    assert json.loads(out)["params"] == 38_871_666


def test_flops_table_and_yaml_path(capsys, tmp_path):
    spec = tmp_path / "mine.yaml"
    spec.write_text("name: mine\nspace: tiny\nchains:\n  - [4, 8, 16, 8, 4]\n")
    code, out, _ = run(capsys, "flops", str(spec), "--size", "64", "64")
    assert code == 0 and "mine (static)" in out and "total" in out


def test_special_cases_table_is_within_1_percent_of_params(capsys):
    """The README's claim: every special case's parameter count within 1% of Table 1."""
    code, out, _ = run(capsys, "flops", "--special-cases", "--json")
    rows = {r["model"]: r for r in json.loads(out)}
    assert set(rows) == {"fcn32s", "deeplabv3", "unet", "hrnetv2", "autodeeplab"}
    for row in rows.values():
        paper = row["paper"]["params_m"]
        assert abs(row["params"] / 1e6 - paper) <= 0.01 * paper, row["model"]
    code, out, _ = run(capsys, "flops", "--special-cases")
    assert "hrnetv2" in out and "paper" in out


def test_bad_model_is_a_clear_error(capsys, tmp_path):
    code, _, err = run(capsys, "flops", "layer99")
    assert code == 2 and "layer99" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nspace: tiny\npaths:\n  - [2, 8, up]\n")
    code, _, err = run(capsys, "flops", str(bad))
    assert code == 2 and "bad.yaml" in err and "(layer 2, 1/8, up)" in err


def test_a_bad_size_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:  # argparse's usage error
        main(["flops", "layer16", "--size", "0", "10"])
    assert exit_.value.code == 2 and "--size: 0 must be >= 1" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"\(512, -4\)"):
        cost_table(load_space("tiny"), (512, -4))


@pytest.mark.parametrize(
    ("counting", "counted", "gmacs"),
    [
        ("official", "counted at 200x400 (the size given, unpadded", 3.789),
        ("paper", "counted at 224x416 (the input padded as the network runs it)", 4.599),
        ("complete", "counted at 224x416 (the input padded as the network runs it)", None),
    ],
)
def test_flops_names_the_size_it_counted_at(capsys, counting, counted, gmacs):
    code, out, _ = run(capsys, "flops", "dynamic-a", "--counting", counting, "--size", "200", "400")
    assert code == 0
    assert out.splitlines()[0].startswith(f"dynamic-a (dynamic) at 200x400, {counted}")
    code, out, _ = run(
        capsys, "flops", "dynamic-a", "--counting", counting, "--size", "200", "400", "--json"
    )
    data = json.loads(out)
    assert data["size"] == [200, 400]
    assert data["counted_size"] == ([200, 400] if counting == "official" else [224, 416])
    if gmacs is not None:
        assert data["gmacs"] == pytest.approx(gmacs, abs=5e-4)
