"""The command line as a well-kept CLI and the field's conventions (issue 21, items 4 and 5):
global ``-q``/``-v`` anywhere, ``--version``, log lines around progress bars, progress lines in
a batch log, ``--json`` summaries, ``--cfg-options``, a torch-free ``dynviz --help``, ``dynviz
models`` and ``dynviz.list_models``/``create_model``/``load_model``."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomllib
import torch
import yaml
from PIL import Image

import dynviz
from dynviz.cli import log_level
from dynviz.cli import main as cli_main
from dynviz.model.checkpoint import CheckpointError, make_checkpoint, save_checkpoint
from dynviz.model.zoo import load_spec, model_cost
from dynviz.support.progress import Progress, format_seconds

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:count=3,size=64x64,classes=4"
RECORD_DATA = "synthetic:count=6,size=64x64,classes=4"  # analyze needs a few images
TRAIN = [
    "--batch",
    "2",
    "--crop",
    "64",
    "64",
    "--precise-bn",
    "0",
    "--workers",
    "0",
    "--no-tensorboard",
]


def _json(capsys, argv: list[str], code: int = 0) -> dict:
    assert cli_main(argv) == code
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out  # one JSON object, nothing else on stdout
    return json.loads(out)


def _checkpoint(path: Path, *, seed: int = 1, classes: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = dynviz.build_model("tiny", num_classes=classes)
    save_checkpoint(path, make_checkpoint(model, iteration=1, train_args={"data": DATA}))
    return {k: v.clone() for k, v in model.state_dict().items()}


def _subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",  # tiny networks; spinning threads are slow on a busy machine
    }
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


# ------------------------------------------------------------------------ lazy imports
def test_dynviz_help_imports_no_torch():
    done = _subprocess("-X", "importtime", "-m", "dynviz", "--help")
    assert done.returncode == 0, done.stderr
    assert "models" in done.stdout and "--version" in done.stdout
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert {"dynviz", "dynviz.cli", "argparse"} <= imported  # the scan sees the imports
    assert not {m for m in imported if m.split(".")[0] in ("torch", "numpy", "pandas")}


def test_import_dynviz_loads_torch_only_when_a_name_needs_it():
    code = (
        "import sys, dynviz; print('torch' in sys.modules); "
        "dynviz.RoutingNetwork; print('torch' in sys.modules)"
    )
    done = _subprocess("-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


def test_every_public_name_resolves():
    for name in dynviz.__all__:
        assert getattr(dynviz, name) is not None
    assert dynviz.build_model is dynviz.model.build_model
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = dynviz.nope


# ------------------------------------------------------------------------ global options
def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--version"])
    assert exit_info.value.code == 0
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert capsys.readouterr().out == f"dynviz {project['version']}\n"
    assert dynviz.__version__ == project["version"]


def test_log_level_counts_v_and_q():
    assert log_level(0, 0) == logging.INFO
    assert log_level(1, 0) == logging.DEBUG
    assert log_level(0, 1) == logging.WARNING
    assert log_level(0, 2) == logging.ERROR
    assert log_level(0, 5) == logging.ERROR and log_level(3, 0) == logging.DEBUG


def _records_argv(tmp_path: Path, name: str) -> list[str]:
    return ["record", "tiny", "--data", DATA, "--out", str(tmp_path / name), "--chunk", "1"]


def test_quiet_silences_info_and_verbose_after_the_command_enables_debug(tmp_path, caplog):
    caplog.set_level(logging.NOTSET)
    assert cli_main(_records_argv(tmp_path, "plain")) == 0
    levels = {r.levelno for r in caplog.records if r.name.startswith("dynviz")}
    assert logging.INFO in levels and logging.DEBUG not in levels  # progress lines, no debug
    caplog.clear()
    assert cli_main([*_records_argv(tmp_path, "verbose"), "-v"]) == 0
    assert any(
        r.levelno == logging.DEBUG and "wrote part-" in r.getMessage() for r in caplog.records
    )
    caplog.clear()
    for argv in (["-q", *_records_argv(tmp_path, "q1")], [*_records_argv(tmp_path, "q2"), "-q"]):
        assert cli_main(argv) == 0
        assert [r for r in caplog.records if r.levelno < logging.WARNING] == []
    assert logging.getLogger("dynviz").level == logging.NOTSET  # restored after the command


def test_quiet_training_keeps_its_log_file_but_prints_no_info(tmp_path):
    argv = [
        "-m",
        "dynviz",
        "train",
        "tiny",
        "--data",
        DATA,
        *TRAIN,
        "--iters",
        "2",
        "--threads",
        "1",
    ]
    loud = _subprocess(*argv, "--out", str(tmp_path / "loud"), "--eval-limit", "1")
    assert loud.returncode == 0, loud.stderr
    assert "INFO dynviz.train.trainer: iter 2/2" in loud.stderr
    quiet = _subprocess(*argv, "--out", str(tmp_path / "quiet"), "--eval-limit", "1", "-q")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "" and quiet.stdout.startswith("trained 2 iterations")
    assert "iter 2/2" in (tmp_path / "quiet" / "log.txt").read_text(encoding="utf-8")


def test_log_lines_are_written_around_the_progress_bar(tmp_path, capsys):
    handler = logging.StreamHandler(sys.stderr)  # the console handler the real CLI has
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        argv = ["train", "tiny", "--data", DATA, "--out", str(tmp_path / "run"), *TRAIN]
        code = cli_main([*argv, "--iters", "2", "--eval-limit", "1", "--progress"])
    finally:
        root.removeHandler(handler)
    assert code == 0
    err = capsys.readouterr().err
    assert "it/s]" in err or "s/it]" in err  # the bar was drawn
    starts = [m.start() for m in re.finditer(r"INFO dynviz", err)]
    assert starts  # the trainer logged while its bar was open
    assert all(i == 0 or err[i - 1] in "\r\n" for i in starts), err


# ------------------------------------------------------------------------ progress lines
def test_progress_lines_without_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="dynviz.support.progress")
    bar = Progress(total=4, desc="eval", every=0)  # show=None; stderr is not a terminal here
    for _ in range(3):
        bar.update()
    bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("eval: 1/4 img (25%), ") and lines[0].endswith(" left")
    assert [line.split(" ")[1] for line in lines] == ["1/4", "2/4", "3/4", "3/4"]
    assert "; stopped after " in lines[-1]  # closed early: not "done"
    caplog.clear()
    with Progress(total=2, desc="x", every=3600) as bar:
        bar.update(2)
    assert [r.getMessage().split(";")[1].split()[0] for r in caplog.records] == ["done"]
    caplog.clear()
    Progress(total=2, desc="x", show=False, every=0).update(2)
    assert caplog.records == []
    assert format_seconds(42) == "42s" and format_seconds(185) == "3m05s"
    assert format_seconds(3720) == "1h02m"


def test_eval_prints_progress_lines_in_a_batch_log(tmp_path, monkeypatch, caplog):
    import dynviz.support.progress

    _checkpoint(tmp_path / "c.pt")
    monkeypatch.setattr(dynviz.support.progress, "LOG_EVERY_S", 0.0)
    caplog.set_level(logging.INFO)
    assert cli_main(["eval", str(tmp_path / "c.pt"), "--json"]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "dynviz.support.progress"]
    assert [line.split(" ")[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert "; done in " in lines[-1]


# ------------------------------------------------------------------------ --json summaries
@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A tiny run trained, recorded, analysed and extracted through the CLI with --json, each
    summary kept: ``{"train": ..., "record": ..., "analyze": ..., "extract": ...}``."""
    tmp = tmp_path_factory.mktemp("chain")
    steps = {
        "train": [
            "train", "tiny", "--data", DATA, "--out", str(tmp / "run"), *TRAIN,
            "--iters", "50", "--eval-limit", "2", "--cfg-options", "iters=2", "--json",
        ],
        "record": [
            "record", str(tmp / "run"), "--out", str(tmp / "records"), "--json",
            "--data", RECORD_DATA, "--cfg-options", "limit=5",
        ],
        "analyze": [
            "analyze", str(tmp / "records"), "--out", str(tmp / "report"), "--no-html",
            "--formats", "png", "--json",
        ],
        "extract": [
            "extract", str(tmp / "records"), "--threshold", "0.5",
            "--out", str(tmp / "common.yaml"), "--json",
        ],
    }  # fmt: skip
    out = {"tmp": tmp}
    for name, argv in steps.items():
        buffer = io.StringIO()
        with redirect_stdout(buffer):
            assert cli_main(argv) == 0, name
        assert buffer.getvalue().count("\n") == 1, buffer.getvalue()
        out[name] = json.loads(buffer.getvalue())
    return out


def test_train_json(chain):
    summary = chain["train"]
    assert summary["iterations"] == 2  # --cfg-options iters=2 over --iters 50
    assert Path(summary["run_dir"]) == chain["tmp"] / "run"
    saved = yaml.safe_load((chain["tmp"] / "run" / "config.yaml").read_text())
    assert saved["train"]["iters"] == 2
    assert 0.0 <= summary["best_miou"] <= 1.0
    assert summary["last_eval"]["miou"] == pytest.approx(summary["best_miou"])
    assert summary["last_eval"]["num_images"] == 2
    assert 0.0 < summary["expected_cost_ratio"] <= 1.0


def test_record_json(chain):
    from dynviz.record import read_records

    summary = chain["record"]
    records = read_records(summary["records"])
    assert summary["recorded"] == len(records.images) == 5  # --cfg-options limit=5
    assert summary["skipped"] == 0 and summary["parts"] >= 1
    assert summary["data"] == RECORD_DATA and summary["split"] == "val"
    assert summary["checkpoint"]["sha256"] == records.sidecar.checkpoint.sha256


def test_analyze_json(chain):
    summary = chain["analyze"]
    report = Path(summary["report"])
    assert report.is_file() and report.parent == chain["tmp"] / "report"
    (label,) = summary["models"]
    kept, total = summary["common_paths"][label]["kept"], summary["common_paths"][label]["total"]
    assert 0 <= kept <= total and total > 0
    assert all((report.parent / name).is_file() for name in summary["tables"].values())
    assert summary["html"] == {}


def test_extract_json(chain):
    summary = chain["extract"]
    route = load_spec(summary["out"])
    assert summary["paths"] == len(route) and summary["cells"] == len(route.cells)
    cost = model_cost(route, size=(64, 64))
    assert summary["size"] == [64, 64]  # the records' size
    assert summary["params"] == cost.params and summary["gmacs"] == pytest.approx(cost.gmacs)
    assert summary["dynamic_gmacs"] >= summary["gmacs"]


def test_compare_json(chain, capsys):
    out = chain["tmp"] / "compare"
    argv = ["compare", str(chain["tmp"] / "run"), "--data", DATA, "--out", str(out)]
    summary = _json(capsys, [*argv, "--limit", "2", "--json"])
    (row,) = summary["rows"]
    assert row["images"] == 2 and row["dynamic"] is True
    with open(summary["csv"], newline="", encoding="utf-8") as handle:
        (saved,) = list(csv.DictReader(handle))
    assert float(saved["miou"]) == pytest.approx(row["miou"], rel=1e-5)
    assert float(saved["gmacs_avg"]) == pytest.approx(row["gmacs_avg"], rel=1e-5)


def test_predict_json(chain, tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    argv = ["predict", str(chain["tmp"] / "run"), str(tmp_path), "--out", str(tmp_path / "out")]
    summary = _json(capsys, [*argv, "--json"], code=3)  # 3: a file was skipped
    assert summary["images"] == 2 and summary["forwards"] == 2
    assert [Path(f["path"]).name for f in summary["failed"]] == ["bad.png"]
    with open(summary["csv"], newline="", encoding="utf-8") as handle:
        gmacs = [float(row["real_gmacs"]) for row in csv.DictReader(handle)]
    assert summary["real_gmacs"]["mean"] == pytest.approx(np.mean(gmacs), rel=1e-5)
    assert summary["real_gmacs"]["max"] == pytest.approx(max(gmacs), rel=1e-5)


def test_cfg_options_for_eval_and_an_unknown_key(tmp_path, capsys):
    _checkpoint(tmp_path / "c.pt")
    summary = _json(capsys, ["eval", str(tmp_path / "c.pt"), "--json", "--cfg-options", "limit=1"])
    assert summary["num_images"] == 1
    assert cli_main(["eval", str(tmp_path / "c.pt"), "--cfg-options", "limt=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'limt'" in err and "limit" in err


# ------------------------------------------------------------------------ models
def test_models_json_holds_the_figures(capsys):
    summary = _json(capsys, ["models", "--json"])
    rows = {row["model"]: row for row in summary["models"]}
    assert list(rows) == dynviz.list_models()
    assert summary["size"] == [1024, 2048]
    assert rows["layer16"]["params"] == 17_784_968 and rows["layer16"]["kind"] == "dynamic"
    assert rows["layer16"]["gmacs"] == pytest.approx(119.49, abs=0.01)
    assert rows["layer16-fix"]["kind"] == "fix" and rows["fcn32s"]["kind"] == "static"
    small = _json(capsys, ["models", "tin*", "--size", "64", "64", "--json"])
    (tiny,) = small["models"]
    cost = model_cost(load_spec("tiny"), size=(64, 64))
    assert tiny["macs"] == cost.macs and tiny["params"] == cost.params


def test_models_table_and_a_pattern_matching_nothing(capsys):
    assert cli_main(["models", "layer*"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines()[1:] if line.strip()][:3]
    assert names == ["layer16", "layer16-fix", "layer33"]
    assert "119.492" in out  # layer16 at 1024x2048 (the paper: 119.5)
    assert cli_main(["models", "nothing*"]) == 2
    assert "no model name matches 'nothing*'" in capsys.readouterr().err


# ------------------------------------------------------------------------ the Python API
def test_list_models():
    names = dynviz.list_models()
    assert names == sorted(names) and {"layer16", "tiny", "fcn32s", "dynamic-a"} <= set(names)
    assert dynviz.list_models("dynamic-*") == ["dynamic-a", "dynamic-b", "dynamic-c"]


def test_create_model_without_and_with_a_checkpoint(tmp_path):
    fresh = dynviz.create_model("tiny", num_classes=7)
    assert fresh.config.num_classes == 7 and fresh.training
    static = dynviz.create_model("fcn32s")
    assert not static.is_dynamic
    saved = _checkpoint(tmp_path / "c.pt", seed=3)
    model = dynviz.create_model("tiny", checkpoint=tmp_path / "c.pt")
    assert not model.training and model.config.num_classes == 4
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    assert not all(
        torch.equal(fresh.state_dict()[k], v) for k, v in saved.items() if "num" not in k
    )
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "c.pt").rename(run / "checkpoint_latest.pt")
    again = dynviz.create_model("tiny", num_classes=4, checkpoint=run)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in saved.items())


def test_create_model_refuses_weights_that_do_not_fit(tmp_path):
    _checkpoint(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"c\.pt: its weights do not fit small: tensors"):
        dynviz.create_model("small", checkpoint=tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"c\.pt: predicts 4 classes, not num_classes=6"):
        dynviz.create_model("tiny", num_classes=6, checkpoint=tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        dynviz.create_model("tiny", checkpoint=tmp_path / "missing.pt")
    with pytest.raises(dynviz.ConfigError):
        dynviz.create_model("no-such-model")


def test_load_model_rebuilds_the_checkpoints_network(tmp_path):
    saved = _checkpoint(tmp_path / "s.pt", seed=5, classes=6)
    model = dynviz.load_model(tmp_path / "s.pt")
    assert isinstance(model, dynviz.RoutingNetwork) and not model.training
    assert model.config.name == "tiny" and model.config.num_classes == 6  # the checkpoint's
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    with pytest.raises(CheckpointError, match="no such checkpoint file or run directory"):
        dynviz.load_model(tmp_path / "missing")


def test_attribute_json(tmp_path, capsys):
    image = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 72, 3), np.uint8)).save(image)
    out = tmp_path / "attr"
    summary = _json(capsys, ["attribute", "tiny", str(image), "--out", str(out), "--json"])
    assert summary["size"] == [40, 72] and Path(summary["out"]) == out
    table = pd.read_parquet(out / "attribution.parquet")  # one row per path of each gate
    assert summary["gates"] == len(table.groupby(["layer", "scale"])) > 0
    assert summary["relative_error"] < 1e-5 and summary["max_abs_logit"] > 0
