"""The whole chain (dynviz.demo.chain, behind `dynviz demo` and analysis/run_chain.py)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

import dynviz
from dynviz.data import DataError
from dynviz.demo.chain import QUICK, fcn_like, run_chain, unet_like
from dynviz.model.route import Route
from dynviz.model.zoo import load_space


def test_special_case_routes_are_valid():
    for name in ("tiny", "small", "layer16"):
        config = load_space(name)
        unet = Route.from_chains(config, unet_like(config))
        fcn = Route.from_chains(config, fcn_like(config))
        assert len(fcn) == config.num_layers + 1 and len(unet) > len(fcn)
        assert any(s == 0 for layer, s, _ in unet.paths if layer == config.num_layers)
    assert unet_like(load_space("tiny")) == [[4, 8, 16, 8, 4], [4, 4, 4, 4, 4], [4, 8, 8, 8, 4]]


@pytest.mark.slow
def test_chain_end_to_end_and_rerun_reuses_steps(tmp_path):
    settings = dataclasses.replace(QUICK, iters=30, static_iters=10, train_count=32, val_count=12)
    out = tmp_path / "chain"
    result = run_chain(out, settings, progress=False)
    table = pd.read_csv(out / "compare" / "table1.csv")
    methods = ["Dynamic-Raw", "Dynamic-Budget"]
    if result.common is not None:
        methods.append("Common-Budget")
    assert list(table["method"]) == [*methods, "U-Net-like", "FCN-like"]
    assert {"dynamic", "special case"} <= set(table["kind"])
    report = result.report.read_text()
    assert "Table 1 on synthetic data" in report and "dynviz app" in report
    assert "static networks trained for 10 iterations and the dynamic ones for 30" in report
    assert all(path.is_file() for path in result.figures.values())
    checkpoints = sorted(out.glob("runs/*/checkpoint_latest.pt"))
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    table_stamp = (out / "compare" / "table1.md").stat().st_mtime_ns
    assert result.made_seconds == pytest.approx(result.seconds)
    assert f"Made in {result.seconds / 60:.1f} minutes" in report
    log = (out / "demo.log").read_text()
    assert "[step 1 of 10 done]" in log and "finished in" in log and "left" in log
    again = run_chain(out, settings, progress=False)
    assert [p.stat().st_mtime_ns for p in checkpoints] == stamps  # nothing retrained
    assert (out / "compare" / "table1.md").stat().st_mtime_ns == table_stamp
    assert again.seconds < result.seconds
    # a re-run that reuses every step keeps the time it took to make them
    assert again.made_seconds == pytest.approx(result.made_seconds)
    assert f"Made in {result.seconds / 60:.1f} minutes" in again.report.read_text()
    assert "reused 10 of 10 steps" in again.report.read_text()


def _analysis_script(name: str):
    """``analysis/NAME.py`` loaded as a module (the scripts are not part of the package)."""
    path = Path(__file__).resolve().parents[1] / "analysis" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"dynviz_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_run_chain_script_refreshes_docs(tmp_path):
    module = _analysis_script("run_chain")
    out, docs = tmp_path / "chain", tmp_path / "docs"
    assert module.main(["--out", str(out), "--docs", str(docs), "--iters", "10"]) == 0
    for name in ("fig5.png", "routing_vs_scale.png", "table1.md"):
        assert (docs / name).is_file()


def test_closing_thresholds_script_closes_more_paths_at_a_higher_threshold(tmp_path):
    from dynviz.demo.settings import DEMO

    module = _analysis_script("closing_thresholds")
    settings = dataclasses.replace(DEMO, iters=10)
    rows = module.run_seed(0, tmp_path, 96, (0.0, 0.9), settings)
    assert [r["threshold"] for r in rows] == [0.0, 0.9]
    assert rows[1]["mmacs"] < rows[0]["mmacs"]  # alpha <= 0.9 closes paths that alpha > 0 ran
    assert all(r["spread_96"] >= 1.0 and 0.0 <= r["miou"] <= 1.0 for r in rows)
    assert all(r["max_min_96"] >= r["spread_96"] for r in rows)  # the extremes, not tenths
    assert rows[0]["gate_bias"] == DEMO.gate_bias_init  # the trained space's, as --gate-bias set it
    assert rows[0]["gate_warmup"] == DEMO.gate_warmup  # the training config's
    assert rows[0]["lambda"] == DEMO.budget_lambda  # the training config's, as --lambda set it
    records = sorted(p.name for p in (tmp_path / "seed0" / "records").iterdir())
    assert records == ["t0", "t0.9"]
    # each regime's mean cost weighs the images' costs to the mean of them all
    regimes = [rows[1][f"mmacs_{regime}"] for regime in ("tiny", "mixed", "huge")]
    assert min(regimes) <= rows[1]["mmacs"] <= max(regimes)
    # the trained run and the records are reused: the same figures again
    again = module.run_seed(0, tmp_path, 96, (0.0, 0.9), settings)
    assert json.dumps(again) == json.dumps(rows)  # NaN (a constant cost's rho) equal too
    # a bad variant of the scenes is refused before anything trains
    with pytest.raises(SystemExit, match="2"):
        module.main(["--scenes", "tiny=0", "--out", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()


def test_path_value_script_finds_a_silent_path_idle_and_the_trunk_dear(tiny, capsys):
    import torch

    from dynviz.model import Direction, RoutingNetwork
    from dynviz.model.cost import cost_table

    module = _analysis_script("path_value")
    torch.manual_seed(0)
    model = RoutingNetwork(tiny).eval()
    # the up path of (layer 2, 1/8) delivers zeros into (layer 3, 1/4), which the keep path of
    # (layer 2, 1/4) also feeds: closing it changes no output and saves exactly its own cost
    silent = model.cell(2, 1).up.bn
    torch.nn.init.zeros_(silent.weight)
    torch.nn.init.zeros_(silent.bias)
    images, labels = torch.randn(3, 3, 64, 64), torch.randint(0, 4, (3, 64, 64))
    values = module.path_values(model, images, labels)
    open_paths = int(model(images, skip=False).active.sum())
    assert len(values) == open_paths  # one row per (image, open path), every path open here
    table = cost_table(tiny, (64, 64))
    up = values[(values.layer == 2) & (values.scale == 8) & (values.direction == "up")]
    assert len(up) == 3 and (up.loss_change == 0.0).all()
    assert (up.macs_saved == float(table.path[2, 1, Direction.UP])).all()
    # the initial cell's keep path alone feeds layer 1's 1/4 cell: closing it cuts what follows
    trunk = values[(values.layer == 0) & (values.scale == 4) & (values.direction == "keep")]
    assert len(trunk) == 3 and (trunk.loss_change.abs() > 1e-4).all()
    assert (trunk.macs_saved > float(table.path[0, 0, Direction.KEEP] + table.op[1, 0])).all()
    regimes = pd.Series(["tiny", "huge", "tiny"])
    values["regime"] = regimes.to_numpy()[values["image"]]
    per_regime, by_alpha = module.summary(values, regimes, 0.002)
    assert per_regime.loc["tiny", "images"] == 2
    assert per_regime.loc["tiny", "open_per_image"] == (values.image != 1).sum() / 2
    assert by_alpha["size"].sum() == len(values)
    # a folder without a trained run is refused by name
    with pytest.raises(SystemExit, match="2"):
        module.main([str(Path("nowhere")), "--seed", "0"])
    assert "nowhere/runs/budget holds no trained run" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):  # a bad variant of the scenes, before anything
        module.main([str(Path("nowhere")), "--seed", "0", "--scenes", "large=ramp"])
    assert "--scenes: scene option large='ramp'" in capsys.readouterr().err


def test_idle_estimate_schedules_steps_on_lanes_by_hand():
    from dynviz.demo.chain import idle_estimate

    steps = {
        "a": (10.0, ()),
        "b": (8.0, ()),
        "c": (3.0, ("b",)),  # b's lane frees at 8
        "d": (5.0, ("a", "c")),  # waits for a (10) and c (11)
    }
    assert idle_estimate(steps, 2) == 16.0
    assert idle_estimate(steps, 1) == 26.0  # one lane: the sum
    with pytest.raises(ValueError, match="wait on each other"):
        idle_estimate({"x": (1.0, ("y",)), "y": (1.0, ("x",))}, 2)


def _double(x: int) -> int:
    return 2 * x


def test_workers_do_not_run_the_parents_main_again(tmp_path, monkeypatch):
    """A Streamlit page or an unguarded script as ``__main__`` must not run in the workers."""
    import types

    from dynviz.support.processes import spawn_pool

    script = tmp_path / "page.py"
    script.write_text("raise SystemExit('the parent main ran again')\n", encoding="utf-8")
    fake = types.ModuleType("__main__")
    fake.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", fake)
    with spawn_pool(1) as pool:
        assert not hasattr(fake, "__file__")  # hidden while the workers start
        assert pool.submit(_double, 21).result(timeout=120) == 42
    assert fake.__file__ == str(script)  # restored


def test_a_run_trained_with_other_arguments_is_not_the_chains(tmp_path):
    """A re-run with another seed (or budget, or length) into the same folder trains again: its
    runs are told apart by their checkpoints' training arguments, not by their iterations."""
    from dynviz.demo.settings import DEMO
    from dynviz.demo.steps import _other_training, _recorded_data
    from dynviz.demo.workspace import _train_config
    from dynviz.model.checkpoint import LATEST, make_checkpoint, save_checkpoint

    def config(settings, out):
        return _train_config(settings, "small", out, 100, budget=True, dynamic=True, progress=False)

    run = tmp_path / "runs" / "budget"
    run.mkdir(parents=True)
    assert _other_training(run, config(DEMO, run)) == []  # nothing trained yet
    model = dynviz.build_model("tiny")
    save_checkpoint(
        run / LATEST, make_checkpoint(model, iteration=100, train_args=config(DEMO, run))
    )
    moved = tmp_path / "elsewhere"
    assert _other_training(run, {**config(DEMO, moved), "progress": True}) == []
    seed_1 = dataclasses.replace(DEMO, seed=1)
    assert _other_training(run, config(seed_1, run)) == ["data", "seed", "val_data"]
    # Dynamic-Budget with other gates trains its own model file, named apart
    small = tmp_path / "models" / "small-budget.yaml"
    assert _other_training(run, {**config(DEMO, run), "model": str(small)}) == ["model"]
    sparse = dataclasses.replace(DEMO, scenes="tiny=3-8")  # a variant of the scenes
    assert _other_training(run, config(sparse, run)) == ["data", "val_data"]
    assert sparse.val_data == DEMO.val_data + ",tiny=3-8"
    with pytest.raises(DataError, match="unknown option 'tinny'"):
        dataclasses.replace(DEMO, scenes="tinny=3-8")
    assert _other_training(run, config(dataclasses.replace(DEMO, budget_mu=0.3), run)) == [
        "budget_mu"
    ]
    records = tmp_path / "records"
    assert _recorded_data(records) is None
    records.mkdir()
    (records / "records.json").write_text('{"data": "synthetic:count=4"}')
    assert _recorded_data(records) == "synthetic:count=4"


def test_budget_gate_gives_dynamic_budget_its_own_gates_and_dynamic_raw_the_spaces(tmp_path):
    """As in the paper: the budgeted networks gate on the input resized by 0.25 (small gates),
    Dynamic-Raw on the full input."""
    from dynviz.demo.settings import DEMO
    from dynviz.demo.workspace import prepare
    from dynviz.model.config import GateKind

    settings = dataclasses.replace(DEMO, budget_gate="small", train_count=4, val_count=4)
    (tmp_path / "models").mkdir()
    chain = prepare(tmp_path, settings, progress=False)
    raw, budget = (load_space(str(chain.models[name])) for name in ("raw", "budget"))
    assert (raw.gate, budget.gate) == (GateKind.FULL, GateKind.SMALL)
    assert dataclasses.replace(budget, gate=raw.gate, name=raw.name, description="") == (
        dataclasses.replace(raw, description="")
    )
    assert chain.configs["budget"]["model"] == str(tmp_path / "models" / "small-budget.yaml")
    assert budget.description.endswith("; small gates instead of full, for Dynamic-Budget")
    # the space's own gate kind needs no second model file
    same = prepare(tmp_path, dataclasses.replace(settings, budget_gate="full"), progress=False)
    assert same.models["budget"] == same.models["raw"]
    with pytest.raises(ValueError, match="budget_gate 'smal' must be one of full, small, none"):
        dataclasses.replace(DEMO, budget_gate="smal")


def test_the_report_describes_the_scenes_it_ran_on():
    from dynviz.demo.report import _adaptivity_section, _intro
    from dynviz.demo.settings import DEMO

    demo = "\n".join(_adaptivity_section({}, DEMO))
    assert "drawn at half the brightness of the first" in demo
    lighter = dataclasses.replace(DEMO, scenes="dark=0.7,tiny=3-8")
    assert "drawn at 0.7 times the brightness" in "\n".join(_adaptivity_section({}, lighter))
    assert "fine texture (plain or checkered)" in demo and "centre to its rim" not in demo
    radial = dataclasses.replace(DEMO, scenes="large=radial,small=hue")
    text = "\n".join(_adaptivity_section({}, radial))
    assert "by its hue" in text and "a bright rim for the second" in text
    assert "brightness of the first" not in text and "checkered" not in text
    intro = "\n".join(_intro(lighter, load_space("small"), Path("no-table.md")))
    # beside the aims, the paper's range (Table 1: 48.2/43.5, 63.5/56.8, 71.6/64.3) and the run's
    figures = {"images": 96, "cheapest_tenth_gmacs": 0.003, "dearest_tenth_gmacs": 0.0054}
    figures |= {"cost_spread": 1.8, "cost_range": 1.95, "regime_difference": 0.22}
    figures |= {"classifier_accuracy": 0.6, "chance": 0.34}
    text = "\n".join(_adaptivity_section({"Dynamic-Budget": figures}, DEMO))
    assert "cost spread of at least 1.5x: met; regime means at least 20% apart: met" in text
    assert "cost 1.11-1.12x from their dearest" in text
    assert "here Dynamic-Budget's dearest image costs 1.95x its cheapest." in text
    older = {k: v for k, v in figures.items() if k != "cost_range"}  # a state from before
    text = "\n".join(_adaptivity_section({"Dynamic-Budget": older}, DEMO))
    assert "(its Table 1)." in text and "here Dynamic-Budget" not in text
    assert "a variant of the scenes: dark=0.7,tiny=3-8" in intro
    assert "small gates (Dynamic-Raw: full" in intro


def test_routed_batchnorm_reaches_the_dynamic_trainings_and_the_report(tmp_path):
    from dynviz.demo.report import _intro
    from dynviz.demo.settings import DEMO
    from dynviz.demo.workspace import prepare

    routed = dataclasses.replace(DEMO, bn_samples="routed")
    (tmp_path / "models").mkdir()
    chain = prepare(tmp_path, routed, progress=False)
    assert chain.configs["budget"]["bn_samples"] == chain.configs["raw"]["bn_samples"] == "routed"
    assert {c["bn_samples"] for k, c in chain.configs.items() if k not in ("raw", "budget")} == {
        "batch"
    }  # a static network's nodes see every sample: nothing to route
    text = "\n".join(_intro(routed, load_space("small"), Path("no-table.md")))
    assert "over the samples routed through each node" in text
    assert "routed through" not in "\n".join(_intro(DEMO, load_space("small"), Path("t.md")))
