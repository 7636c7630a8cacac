"""Optional parts without their extra: one line that names the extra, no traceback, nothing
half-written. A package is made missing by putting None in ``sys.modules`` (its import then
fails as if it were not installed)."""

from __future__ import annotations

import sys

import pytest

from dynviz.cli import main as cli
from dynviz.errors import MissingExtraError, require


def _one_line_naming(err: str, extra: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert f"pip install 'dynviz[{extra}]'" in lines[0]
    assert "Traceback" not in err


def test_require_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingExtraError, match=r"ONNX export needs onnx.*dynviz\[export\]"):
        require("onnx", extra="export", purpose="ONNX export")
    assert require("json", extra="none", purpose="x") is sys.modules["json"]


def test_export_without_onnx(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)
    out = tmp_path / "fcn32s.onnx"
    assert cli(["export", "fcn32s", "--out", str(out), "--size", "64", "64"]) == 2
    _one_line_naming(capsys.readouterr().err, "export")
    assert not out.exists()


def test_export_check_without_onnxruntime(monkeypatch, tmp_path, capsys):
    pytest.importorskip("onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    out = tmp_path / "fcn32s.onnx"
    code = cli(["export", "fcn32s", "--out", str(out), "--size", "64", "64", "--check"])
    assert code == 2
    _one_line_naming(capsys.readouterr().err, "export")


def test_train_asking_for_tensorboard_without_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    argv = ["train", "tiny", "--data", "synthetic:count=2,size=32x32", "--out", str(tmp_path)]
    assert cli([*argv, "--iters", "1", "--tensorboard"]) == 2
    _one_line_naming(capsys.readouterr().err, "tensorboard")
    assert not (tmp_path / "metrics.jsonl").exists()


def test_app_without_streamlit(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "streamlit", None)
    assert cli(["app", str(tmp_path), "--dry-run"]) == 2
    _one_line_naming(capsys.readouterr().err, "app")


def test_shipped_folders_are_found_and_a_missing_one_is_named():
    from pathlib import Path

    from dynviz.support.resources import shipped

    root = Path(__file__).resolve().parents[1]
    # an editable install reads the project's folders; a wheel, its own copies
    names = {p.name for p in shipped("models").glob("*.yaml")}
    assert names == {p.name for p in (root / "models").glob("*.yaml")}
    assert (shipped("apps") / "explorer.py").is_file()
    with pytest.raises(FileNotFoundError, match="no nothing/"):
        shipped("nothing")


def test_app_without_the_explorer_files(monkeypatch, tmp_path, capsys):
    import dynviz.commands.app as app

    def missing():
        raise FileNotFoundError("this dynviz installation has no apps/: reinstall dynviz")

    monkeypatch.setattr(app, "explorer_script", missing)
    assert cli(["app", str(tmp_path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reinstall dynviz" in err and "Traceback" not in err
