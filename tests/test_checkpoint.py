"""Checkpoints: weights-only format, safe loading, model rebuild, atomic writes, RNG states."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import dynviz
from dynviz.model import Route
from dynviz.model.checkpoint import (
    BEST,
    LATEST,
    CheckpointError,
    atomic_write,
    capture_rng,
    load_checkpoint,
    load_model,
    make_checkpoint,
    restore_rng,
    save_checkpoint,
    sha256_file,
)


def _touch(path: str) -> None:
    Path(path).write_text("executed")


class Payload:
    """Unpickling this runs ``_touch``: a stand-in for a malicious checkpoint."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


@pytest.fixture
def model():
    net = dynviz.build_model("tiny", num_classes=3)
    net.eval()
    return net


def test_checkpoint_is_plain_and_loads_with_weights_only(tmp_path, model):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).logits.sum().backward()
    optimizer.step()
    data = make_checkpoint(
        model,
        optimizer=optimizer,
        iteration=7,
        best_metric=0.5,
        train_args={"lr": 0.1, "crop": [32, 32]},
    )
    path = save_checkpoint(tmp_path / "c.pt", data)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "dynviz-checkpoint" and raw["format_version"] == 1
    assert raw["dynviz_version"] == dynviz.__version__
    assert raw["iteration"] == 7 and raw["best_metric"] == 0.5 and raw["num_classes"] == 3
    assert raw["route"] is None and raw["config"]["name"] == "tiny"
    assert raw["optimizer"]["state"]  # momentum buffers
    assert isinstance(raw["rng"]["python"]["state"], list)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file is gone


def test_load_model_rebuilds_the_same_network(tmp_path, model):
    save_checkpoint(tmp_path / LATEST, make_checkpoint(model))
    rebuilt, meta = load_model(tmp_path / LATEST)
    assert not rebuilt.training
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(images).logits, rebuilt(images).logits)
    assert meta["sha256"] == sha256_file(tmp_path / LATEST)
    assert meta["path"] == str(tmp_path / LATEST) and "model" not in meta


def test_run_directory_prefers_the_best_checkpoint(tmp_path, model):
    save_checkpoint(tmp_path / LATEST, make_checkpoint(model, iteration=10))
    assert load_model(tmp_path)[1]["iteration"] == 10
    save_checkpoint(tmp_path / BEST, make_checkpoint(model, iteration=4))
    assert load_model(tmp_path)[1]["iteration"] == 4
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint_best.pt"):
        load_model(empty)


def test_static_network_round_trip(tmp_path):
    space = dynviz.build_model("tiny").config
    route = Route.from_chains(space, [[4, 8, 16, 32, 32]], name="chain")
    static = dynviz.build_model(route, num_classes=5)
    save_checkpoint(tmp_path / "s.pt", make_checkpoint(static))
    rebuilt, meta = load_model(tmp_path / "s.pt")
    assert rebuilt.is_static and rebuilt.route.paths == route.paths
    assert rebuilt.config.num_classes == 5 and meta["route"]["name"] == "chain"


def test_pickled_payload_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save(
        {"format": "dynviz-checkpoint", "format_version": 1, "x": Payload(str(marker))}, evil
    )
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_model(evil)
    assert not marker.exists()
    torch.save(Payload(str(marker)), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="bare.pt"):
        load_checkpoint(tmp_path / "bare.pt")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "bad.pt: an empty file, not a torch checkpoint"),
        (b"certainly not a zip file" * 10, "bad.pt"),
    ],
)
def test_garbage_files_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_foreign_torch_files_are_refused(tmp_path, model):
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="weights.pt: not a dynviz checkpoint"):
        load_model(tmp_path / "weights.pt")
    data = make_checkpoint(model)
    data["format_version"] = 99
    save_checkpoint(tmp_path / "future.pt", data)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="no such"):
        load_model(tmp_path / "missing.pt")


def test_mismatched_weights_are_a_checkpoint_error(tmp_path, model):
    data = make_checkpoint(model)
    data["config"]["base_channels"] = 16
    save_checkpoint(tmp_path / "mixed.pt", data)
    with pytest.raises(CheckpointError, match="mixed.pt: cannot rebuild"):
        load_model(tmp_path / "mixed.pt")


def test_sha256_file(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"dynviz" * 1000)
    assert sha256_file(path) == hashlib.sha256(b"dynviz" * 1000).hexdigest()


def test_rng_states_round_trip():
    state = capture_rng()
    first = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    restore_rng(state)
    second = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1]) and first[2] == second[2]


def test_atomic_write_failures_name_the_path_and_leave_no_temp(tmp_path, monkeypatch):
    with pytest.raises(OSError, match="missing"):
        atomic_write(tmp_path / "missing" / "c.pt", lambda handle: handle.write(b"x"))
    target = tmp_path / "c.pt"
    target.write_bytes(b"old")

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match=r"cannot write .*c\.pt: No space left"):
        atomic_write(target, lambda handle: handle.write(b"new"))
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
