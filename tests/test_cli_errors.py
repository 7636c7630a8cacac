"""One exit status per kind of failure (issue 23): usage and bad values exit 2, a file or folder
that is missing, unreadable or not what it should be exits 3, each with one line that names it;
"did you mean" for model names; the words of the CLI's messages; warnings for short runs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

import dynviz
from dynviz.cli import main as cli
from dynviz.errors import EXIT_BAD_FILE, EXIT_USAGE, suggest
from dynviz.model.checkpoint import make_checkpoint, save_checkpoint
from dynviz.train import TrainConfig
from dynviz.train.trainer import short_run_warnings

DATA = "synthetic:count=3,size=64x64,classes=4"


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _image(path, size) -> str:
    pixels = np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = dynviz.build_model("tiny", num_classes=4)
    path = tmp_path / "c.pt"
    save_checkpoint(path, make_checkpoint(model, iteration=1, train_args={"data": DATA}))
    return path


def test_exit_statuses_are_distinct():
    assert (EXIT_USAGE, EXIT_BAD_FILE) == (2, 3)


def test_a_missing_or_bad_file_exits_3_naming_it(tmp_path, capsys, checkpoint):
    missing = tmp_path / "missing.png"
    assert cli(["attribute", "tiny", str(missing), "--out", str(tmp_path / "a")]) == 3
    line = _one_error(capsys)
    assert "missing.png" in line and "no such file" in line and "Errno" not in line
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert cli(["attribute", "tiny", str(bad), "--out", str(tmp_path / "a")]) == 3
    line = _one_error(capsys)
    assert "bad.png" in line and "dynviz reads" in line and "app" not in line
    assert cli(["extract", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c.yaml")]) == 3
    assert "nowhere: no such records folder" in _one_error(capsys)
    (tmp_path / "empty").mkdir()
    assert cli(["extract", str(tmp_path / "empty"), "--out", str(tmp_path / "c.yaml")]) == 3
    assert "empty: not a records folder" in _one_error(capsys)
    assert cli(["eval", str(tmp_path / "none.pt"), "--data", DATA]) == 3
    assert "none.pt" in _one_error(capsys)
    assert cli(["eval", str(checkpoint), "--data", f"folder:{tmp_path / 'nodata'}"]) == 3
    assert "nodata" in _one_error(capsys)
    assert cli(["flops", str(tmp_path / "net.yaml")]) == 3
    assert "net.yaml: no such file" in _one_error(capsys)
    assert cli(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")]) == 3
    assert "c.yaml: no such config file" in _one_error(capsys)


def test_bad_values_exit_2(tmp_path, capsys, checkpoint):
    assert cli(["eval", str(checkpoint), "--data", "synthetic:count=0"]) == 2
    assert "count" in _one_error(capsys)
    assert cli(["flops", "smal"]) == 2
    assert "did you mean small?" in _one_error(capsys)
    assert cli(["train", "smal", "--data", DATA, "--out", str(tmp_path / "r")]) == 2
    assert "did you mean small?" in _one_error(capsys)
    # a bad variant of the demo's scenes is refused, named, before anything is made
    out = tmp_path / "demo"
    assert cli(["demo", "--scenes", "tiny=8-3", "--out", str(out)]) == 2
    assert "--scenes: scene option tiny=(8.0, 3.0) must be a range" in _one_error(capsys)
    assert cli(["demo", "--scenes", "tinny=3", "--out", str(out)]) == 2
    assert "unknown option 'tinny'" in _one_error(capsys)
    assert not out.exists()


def test_a_tiny_image_is_refused_not_segmented(tmp_path, capsys, checkpoint):
    one = _image(tmp_path / "one.png", (1, 1))
    assert cli(["attribute", "tiny", one, "--out", str(tmp_path / "a")]) == 3
    assert "one.png: 1x1 (WxH) is too small to segment" in _one_error(capsys)
    assert cli(["flops", "tiny", "--check", "--image", one]) == 3
    assert "too small" in _one_error(capsys)
    # predict: every file refused is an error, not "0 GMACs per image"
    out = tmp_path / "out"
    assert cli(["predict", str(checkpoint), one, "--out", str(out)]) == 3
    said = capsys.readouterr()
    assert "GMACs" not in said.out and "MMACs" not in said.out
    assert "no image could be segmented" in said.err and "too small" in said.err
    # the least size is accepted
    ok = _image(tmp_path / "ok.png", (8, 8))
    assert cli(["predict", str(checkpoint), ok, "--out", str(out)]) == 0
    assert "segmented 1 image(s)" in capsys.readouterr().out


def test_train_settings_name_their_source(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"model: tiny\ndata: '{DATA}'\niters: 2\nbudget_mu: 0.5\n")
    out = str(tmp_path / "r")
    # a bad value typed on the command line is not blamed on the file
    assert cli(["train", "--config", str(config), "budget_mu=1.5", "--out", out]) == 2
    line = _one_error(capsys)
    assert "budget_mu: 1.5 must be in [0, 1] (given on the command line)" in line
    assert "c.yaml" not in line
    # the same value in the file is
    config.write_text(f"model: tiny\ndata: '{DATA}'\niters: 2\nbudget_mu: 1.5\n")
    assert cli(["train", "--config", str(config), "--out", out]) == 2
    assert f"{config}: budget_mu: 1.5" in _one_error(capsys)
    # a setting without its value is named as such, not as an unknown model
    assert cli(["train", "--config", str(config), "lr", "--out", out]) == 2
    line = _one_error(capsys)
    assert "'lr' is a setting without a value: give lr=VALUE" in line and "model" not in line


def test_suggest():
    assert suggest("smal", ["tiny", "small", "layer16"]) == " (did you mean small?)"
    assert suggest("zzz", ["b", "a"]) == "; known: a, b"


def test_short_runs_warn_when_warm_up_or_precise_bn_takes_most_of_them(tmp_path, caplog):
    base = TrainConfig(model="tiny", data=DATA, out=str(tmp_path), iters=10)
    assert short_run_warnings(base.replace(warmup_iters=1, precise_bn=3)) == []
    (said,) = short_run_warnings(base.replace(warmup_iters=10, precise_bn=0))
    assert "never reaches its base value" in said
    (said,) = short_run_warnings(base.replace(warmup_iters=6, precise_bn=0))
    assert "most of the run" in said
    (said,) = short_run_warnings(base.replace(warmup_iters=0, precise_bn=15))
    assert "precise_bn 15 batches" in said and "precise_bn=0" in said
    # and the trainer logs them
    with caplog.at_level(logging.WARNING, logger="dynviz"):
        dynviz.train.train(
            base.replace(
                iters=2,
                warmup_iters=5,
                precise_bn=0,
                batch=2,
                crop=(64, 64),
                workers=0,
                tensorboard=False,
                progress=False,
                eval_limit=1,
            )
        )
    assert any("never reaches its base value" in r.message for r in caplog.records)
