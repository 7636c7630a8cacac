"""Faults and untrusted input: a killed run loses at most the iterations since its checkpoint,
a killed recording resumes without duplicates, untrusted YAML executes nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dynviz.model.checkpoint import LATEST, load_checkpoint
from dynviz.model.config import ConfigError, RoutingSpaceConfig
from dynviz.model.route import Route, RouteError
from dynviz.record import read_records

DATA = "synthetic:count=16,size=32x32,classes=3"


def _dynviz(*argv: str) -> list[str]:
    return [sys.executable, "-m", "dynviz.cli", *argv]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"process ended before it could be killed: {proc.returncode}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting to kill the process")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _iteration(path: Path) -> int:
    try:
        return int(load_checkpoint(path)["iteration"])
    except Exception:  # not there yet, or being replaced
        return -1


def test_sigkilled_training_resumes_from_its_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    args = [
        "train",
        "tiny",
        "--data",
        DATA,
        "--val-data",
        DATA,
        "--out",
        str(run),
        "--iters",
        "60",
        "--batch",
        "2",
        "--crop",
        "32",
        "32",
        "--checkpoint-every",
        "5",
        "--eval-every",
        "0",
        "--workers",
        "0",
        "--threads",
        "1",
        "--precise-bn",
        "4",
        "--no-progress",
        "--no-tensorboard",
    ]
    proc = subprocess.Popen(
        _dynviz(*args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _kill_when(proc, lambda: _iteration(run / LATEST) >= 10)
    killed_at = _iteration(run / LATEST)
    assert 10 <= killed_at < 60  # the file left behind is whole and loads
    # a kill between mkstemp and os.replace may leave a hidden temporary, never a checkpoint
    assert all(p.name.startswith(".") for p in run.glob("*.tmp"))
    (run / f".{LATEST}.killed.tmp").write_bytes(b"half a checkpoint")  # as a kill leaves it
    done = subprocess.run(
        _dynviz(*args, "--resume"), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert _iteration(run / LATEST) == 60
    assert not list(run.glob(".*.tmp"))  # the resumed run cleared what the killed one left


def test_sigkilled_recording_resumes_without_duplicates(tmp_path):
    out = tmp_path / "records"
    args = [
        "record",
        "tiny",
        "--data",
        "synthetic:count=40,size=32x32,classes=4",
        "--out",
        str(out),
        "--chunk",
        "2",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        _dynviz(*args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _kill_when(
        proc,
        lambda: (
            len(list((out / "images").glob("*.parquet"))) >= 3
            if (out / "images").is_dir()
            else False
        ),
    )
    done = subprocess.run(_dynviz(*args), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    records = read_records(out)
    assert len(records.images) == 40 and records.images["image_id"].is_unique
    per_image = records.gates.groupby("image_id").size()
    assert per_image.nunique() == 1 and len(per_image) == 40  # every image once, whole


@pytest.mark.parametrize("loader", [RoutingSpaceConfig.from_yaml, Route.from_yaml])
def test_yaml_cannot_execute_code(tmp_path, loader):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\nnum_layers: 4\n")
    with pytest.raises((ConfigError, RouteError), match="evil.yaml"):
        loader(path)
    assert not marker.exists()
