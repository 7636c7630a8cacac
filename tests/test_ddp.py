"""``dynviz train`` / ``dynviz eval`` under torchrun: 2 CPU processes, gloo backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import dynviz
from dynviz.data import build_dataset
from dynviz.inference.evaluate import evaluate
from dynviz.model import Route
from dynviz.model.checkpoint import LATEST, load_checkpoint, load_model

DATA = "synthetic:count=8,size=48x48,classes=4"


def _torchrun(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "dynviz.cli",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def _train_args(model: str, out) -> list[str]:
    return [
        "train",
        model,
        "--data",
        DATA,
        "--out",
        str(out),
        "--iters",
        "3",
        "--batch",
        "4",
        "--crop",
        "32",
        "32",
        "--workers",
        "0",
        "--log-every",
        "1",
        "--eval-limit",
        "3",
        "--checkpoint-every",
        "2",
        "--precise-bn",
        "2",
        "--no-tensorboard",
        "--no-progress",
    ]


def test_two_process_training_writes_a_checkpoint_and_evaluates(tmp_path):
    run = tmp_path / "ddp"
    done = _torchrun(*_train_args("tiny", run))
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = load_checkpoint(run / LATEST)
    assert checkpoint["iteration"] == 3
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if r["kind"] == "train"] == [1, 2, 3]  # rank 0 only
    assert [r["val_images"] for r in records if r["kind"] == "eval"] == [3]  # both shards
    assert [r["batches"] for r in records if r["kind"] == "precise_bn"] == [2]
    assert done.stdout.count("trained 3 iterations") == 1
    # sharded evaluation agrees with a single process
    sharded = _torchrun("eval", str(run), "--json")
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    model, _ = load_model(run)
    single = evaluate(model, build_dataset(DATA, split="val")).to_dict()
    sharded = json.loads(sharded.stdout)
    assert sharded["num_images"] == single["num_images"] == 8
    assert sharded["miou"] == pytest.approx(single["miou"], abs=1e-9)
    assert sharded["real_gmacs"] == pytest.approx(single["real_gmacs"])
    assert sharded["expected_gmacs"] == pytest.approx(single["expected_gmacs"])


def test_two_process_static_net_with_unused_decoder_laterals(tmp_path):
    route = Route.from_chains(dynviz.build_model("tiny").config, [[4, 4, 8, 8, 8]], name="low")
    spec = tmp_path / "low.yaml"
    route.to_yaml(spec)
    done = _torchrun(*_train_args(str(spec), tmp_path / "static"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DDP will look for unused parameters" in done.stderr  # decoder laterals 2 and 3
    assert load_checkpoint(tmp_path / "static" / LATEST)["route"]["name"] == "low"


def test_two_process_gate_warmup_then_routing(tmp_path):
    """The gates take no part while they are idle: DDP must not wait for their gradients."""
    run = tmp_path / "warm"
    done = _torchrun(*_train_args("tiny", run), "--gate-warmup", "0.5")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DDP will look for unused parameters" in done.stderr
    checkpoint = load_checkpoint(run / LATEST)
    assert checkpoint["iteration"] == 3
    assert "gate_warmup: 0.5" in (run / "config.yaml").read_text()


def test_two_process_routed_bn(tmp_path):
    """Routed BatchNorm skips the nodes a rank's samples do not reach: DDP must not wait for
    their gradients."""
    space = tmp_path / "closing.yaml"  # gates that start closed on some paths of some samples
    space.write_text(
        "name: closing\nnum_layers: 4\nnum_scales: 4\nbase_channels: 8\nnum_classes: 4\n"
        "gate: full\ngate_bias_init: 0.0\n"
    )
    run = tmp_path / "routed"
    done = _torchrun(*_train_args(str(space), run), "--bn-samples", "routed")
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_checkpoint(run / LATEST)["iteration"] == 3
    assert "bn_samples: routed" in (run / "config.yaml").read_text()
