"""Trainer: optimiser groups, poly schedule, sampling, run directory, exact resume, errors."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import dynviz
from dynviz.cli import main as cli_main
from dynviz.commands import train as train_command
from dynviz.commands.train import add_config_options
from dynviz.model import ConfigError, Route
from dynviz.model.checkpoint import LATEST, load_checkpoint, sha256_file
from dynviz.support.distributed import SampleStream
from dynviz.train import trainer as trainer_module
from dynviz.train.config import setting
from dynviz.train.hooks import HookBase
from dynviz.train.optim import (
    PolySchedule,
    build_optimizer,
    default_warmup_iters,
    is_gate_parameter,
    param_groups,
)
from dynviz.train.trainer import (
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    find_unused_parameters,
    segmentation_loss,
)

DATA = "synthetic:count=8,size=48x48,classes=4"


def _config(tmp_path, name: str = "run", **changes) -> TrainConfig:
    base = {
        "model": "tiny",
        "data": DATA,
        "out": str(tmp_path / name),
        "iters": 4,
        "batch": 2,
        "crop": (32, 32),
        "workers": 0,
        "log_every": 1,
        "checkpoint_every": 2,
        "eval_limit": 2,
        "tensorboard": False,
        "progress": False,
        "deterministic": True,
        "precise_bn": 2,
    }
    base.update(changes)
    return TrainConfig(**base)


# ------------------------------------------------------------------------------ optimiser
def test_param_groups_no_decay_on_batchnorm_and_gate_lr_mult():
    model = dynviz.build_model("tiny")
    optimizer = build_optimizer(model, lr=0.05, weight_decay=1e-4, gate_lr_mult=2.5)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"decay", "no_decay", "gate_decay", "gate_no_decay"}
    norm_ids = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.BatchNorm2d)
        for p in m.parameters(recurse=False)
    }
    for group in optimizer.param_groups:
        for param in group["params"]:
            assert (group["weight_decay"] == 0.0) == (id(param) in norm_ids)
    names = {id(p): n for n, p in model.named_parameters()}
    gate_ids = {id(p) for g in ("gate_decay", "gate_no_decay") for p in groups[g]["params"]}
    assert gate_ids == {id(p) for n, p in model.named_parameters() if ".gate." in n}
    assert all(is_gate_parameter(names[i]) for i in gate_ids)
    # biases keep weight decay: the gate's last conv and the predictor have biases
    decayed = {names[id(p)] for g in ("decay", "gate_decay") for p in groups[g]["params"]}
    assert "decoder.predictor.bias" in decayed
    assert any(n.endswith("gate.conv2.bias") for n in decayed)
    assert groups["gate_decay"]["lr"] == pytest.approx(0.125)
    assert groups["decay"]["lr"] == pytest.approx(0.05)
    covered = sum(len(g["params"]) for g in optimizer.param_groups)
    assert covered == len(list(model.parameters()))
    assert optimizer.defaults["momentum"] == 0.9


def test_param_groups_of_a_static_network_have_no_gate_groups():
    model = dynviz.build_model(
        Route.from_chains(dynviz.build_model("tiny").config, [[4, 8, 8, 16, 16]])
    )
    assert [g["name"] for g in param_groups(model)] == ["decay", "no_decay"]


def test_poly_schedule_values():
    schedule = PolySchedule(0.05, 100, warmup_iters=10, warmup_factor=0.001, power=0.9)
    assert schedule.lr(0) == pytest.approx(0.05 * 0.001)
    assert schedule.lr(5) == pytest.approx(0.05 * (0.001 * 0.5 + 0.5) * 0.95**0.9)
    assert schedule.lr(10) == pytest.approx(0.05 * 0.9**0.9)
    assert schedule.lr(50) == pytest.approx(0.05 * 0.5**0.9)
    assert schedule.lr(100) == 0.0
    assert PolySchedule(0.1, 10).lr(0) == pytest.approx(0.1)  # no warm-up
    assert default_warmup_iters(600) == 30
    assert default_warmup_iters(190_000) == 1000  # the official warm-up
    model = dynviz.build_model("tiny")
    optimizer = build_optimizer(model, lr=0.05, gate_lr_mult=2.0)
    lr = schedule.apply(optimizer, 50)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(lr * group["lr_mult"])


# ------------------------------------------------------------------------------- sampling
def test_sample_stream_is_a_function_of_seed_and_iteration():
    stream = SampleStream(10, 3, seed=7)
    again = SampleStream(10, 3, seed=7)
    assert stream.batch_keys(5) == again.batch_keys(5)
    assert list(stream.batches(2, 4)) == [again.batch_keys(2), again.batch_keys(3)]
    first_epoch = [k for it in range(4) for k in stream.batch_keys(it)][:10]
    assert sorted(i for _, i in first_epoch) == list(range(10))  # a permutation per epoch
    assert {e for e, _ in first_epoch} == {0}
    assert stream.batch_keys(3)[1:] == [
        (1, int(stream.epoch_indices(1)[0])),
        (1, int(stream.epoch_indices(1)[1])),
    ]
    assert SampleStream(10, 3, seed=8).batch_keys(0) != stream.batch_keys(0)


def test_sample_stream_shards_like_distributed_sampler():
    shards = [SampleStream(7, 2, seed=1, rank=r, world_size=2) for r in range(2)]
    for epoch in range(3):
        a, b = (s.epoch_indices(epoch) for s in shards)
        assert len(a) == len(b) == 4  # padded to a multiple of the world size
        assert set(a) | set(b) == set(range(7))


# ---------------------------------------------------------------------------------- loss
def test_segmentation_loss_ignores_255_and_survives_an_all_ignored_batch():
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    labels = torch.tensor([[[0, 255], [255, 255]]])
    assert segmentation_loss(logits, labels).item() == pytest.approx(math.log(3))
    empty = segmentation_loss(logits, torch.full((1, 2, 2), 255))
    assert empty.item() == 0.0
    empty.backward()


def test_unused_parameters_of_static_routes():
    tiny = dynviz.build_model("tiny")
    assert find_unused_parameters(tiny) == []
    shallow = dynviz.build_model(Route.from_chains(tiny.config, [[4, 4, 8, 8, 8]]))
    unused = find_unused_parameters(shallow)
    assert unused
    assert all(n.startswith(("decoder.lateral.2.", "decoder.lateral.3.")) for n in unused)


# ---------------------------------------------------------------------------- the trainer
def test_training_writes_the_run_directory(tmp_path):
    config = _config(tmp_path, budget_lambda=0.5, budget_mu=0.2, eval_every=2, tensorboard=True)
    result = Trainer(config).run()
    run = tmp_path / "run"
    assert result.iteration == 4 and run.joinpath(LATEST).is_file()
    assert run.joinpath("checkpoint_best.pt").is_file()
    saved = load_checkpoint(run / LATEST)
    assert saved["iteration"] == 4
    assert saved["config"]["num_classes"] == 4  # follows the data
    assert saved["train_args"]["budget_lambda"] == 0.5 and saved["train_args"]["budget_mu"] == 0.2
    assert "budget_lambda" not in saved["config"]  # a training setting, not the architecture
    assert saved["train_args"]["warmup_iters"] == 0  # resolved: min(1000, 5% of 4)
    records = [json.loads(line) for line in run.joinpath("metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["iter"] for r in train] == [1, 2, 3, 4]
    for key in ("loss", "ce_loss", "budget_loss", "expected_cost_ratio", "lr", "images_per_s"):
        assert all(key in r for r in train)
    assert 0 < train[0]["expected_cost_ratio"] <= 1
    assert [r["iter"] for r in evals] == [2, 4]
    assert all(0 <= r["val_miou"] <= 1 and r["real_gmacs"] > 0 for r in evals)
    assert train[0]["budget_loss"] == 0.0  # before 40%
    assert train[3]["budget_loss"] > 0.0  # 3/4 of the way, fully ramped
    doc = yaml.safe_load(run.joinpath("config.yaml").read_text())
    assert doc["model"]["name"] == "tiny" and doc["route"] is None
    assert doc["train"]["data"] == DATA and doc["data"]["val"] == DATA
    assert list(run.glob("events.out.tfevents.*"))  # tensorboard is a dev dependency


def test_resume_is_exact(tmp_path):
    straight = Trainer(_config(tmp_path, "straight", iters=6, checkpoint_every=3))
    straight.run()
    # the first half loads with worker processes: augmentation does not depend on who loads
    first = Trainer(_config(tmp_path, "split", iters=6, checkpoint_every=3, workers=2))
    first.run(until=3)
    assert load_checkpoint(tmp_path / "split" / LATEST)["iteration"] == 3
    second = Trainer(_config(tmp_path, "split", iters=6, checkpoint_every=3), resume=True)
    assert second.iteration == 3
    second.run()
    a, b = straight.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (
        straight.optimizer.state_dict()["state"].keys()
        == second.optimizer.state_dict()["state"].keys()
    )
    records = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    iters = [json.loads(r)["iter"] for r in records if json.loads(r)["kind"] == "train"]
    assert iters == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_changed_training_arguments(tmp_path):
    Trainer(_config(tmp_path, iters=4)).run(until=2)
    with pytest.raises(ConfigError, match="lr"):
        Trainer(_config(tmp_path, iters=4, lr=0.1), resume=True)
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(_config(tmp_path, iters=4))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = _config(tmp_path, iters=6, checkpoint_every=2)
    trainer = Trainer(config)
    real = segmentation_loss
    calls = {"n": 0}

    def poisoned(logits, labels):
        calls["n"] += 1
        loss = real(logits, labels)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(trainer_module, "segmentation_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="iteration 3"):
        trainer.run()
    latest = tmp_path / "run" / LATEST
    before = sha256_file(latest)
    assert load_checkpoint(latest)["iteration"] == 2
    assert torch.isfinite(torch.cat([p.flatten() for p in trainer.model.parameters()])).all()
    assert sha256_file(latest) == before


def test_static_route_spec_trains_with_the_same_command(tmp_path, capsys):
    route = Route.from_chains(
        dynviz.build_model("tiny").config, [[4, 8, 8, 16, 16]], name="tiny-chain"
    )
    spec = tmp_path / "tiny-chain.yaml"
    route.to_yaml(spec)
    code = cli_main(
        [
            "train",
            str(spec),
            "--data",
            DATA,
            "--out",
            str(tmp_path / "static"),
            "--iters",
            "2",
            "--batch",
            "2",
            "--crop",
            "32",
            "32",
            "--workers",
            "0",
            "--eval-limit",
            "2",
            "--log-every",
            "1",
            "--no-tensorboard",
            "--budget-lambda",
            "1.0",
            "--budget-mu",
            "0.2",
            "--progress",
        ]
    )
    assert code == 0
    assert "trained 2 iterations" in capsys.readouterr().out
    saved = load_checkpoint(tmp_path / "static" / LATEST)
    assert saved["route"] is not None and len(saved["route"]["paths"]) == len(route)
    records = [
        json.loads(line)
        for line in (tmp_path / "static" / "metrics.jsonl").read_text().splitlines()
    ]
    assert all(r["budget_loss"] == 0.0 for r in records if r["kind"] == "train")


def test_cli_resume_and_user_errors(tmp_path, capsys):
    out = str(tmp_path / "cli")
    args = [
        "train",
        "tiny",
        "--data",
        DATA,
        "--out",
        out,
        "--iters",
        "2",
        "--batch",
        "2",
        "--crop",
        "32",
        "32",
        "--workers",
        "0",
        "--eval-limit",
        "1",
        "--no-tensorboard",
    ]
    assert cli_main(args) == 0
    assert cli_main(["train", "--out", out, "--resume", "--lr", "0.3"]) == 2
    assert "lr" in capsys.readouterr().err
    assert cli_main(["train", "--out", out, "--resume", "--workers", "0"]) == 0  # nothing left
    assert (
        cli_main(["train", "tiny", "--data", "synthetic:count=0", "--out", str(tmp_path / "bad")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "count" in err
    assert cli_main(["train", "nope", "--data", DATA, "--out", str(tmp_path / "bad")]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert cli_main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 3
    assert "nothing to resume" in capsys.readouterr().err


def test_unwritable_run_directory_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = cli_main(
        [
            "train",
            "tiny",
            "--data",
            DATA,
            "--out",
            str(blocker / "run"),
            "--iters",
            "1",
            "--batch",
            "2",
            "--crop",
            "32",
            "32",
            "--workers",
            "0",
        ]
    )
    assert code == 1
    assert str(blocker / "run") in capsys.readouterr().err


def test_latency_weighted_budget_measures_once_and_resumes_with_the_same_table(tmp_path):
    config = _config(
        tmp_path,
        "latency",
        budget_cost="latency",
        budget_lambda=1.0,
        budget_mu=0.3,
        budget_start=0.0,
        budget_ramp=0.01,
        iters=4,
    )
    first = Trainer(config)
    table = first.budget.table
    # normalised: every alpha 1 is the whole all-open backbone time
    assert table.backbone_all_open() == pytest.approx(1.0)
    assert table.unit == "share of the all-open backbone time"  # seconds, not MACs
    assert (table.op[1:][table.op[1:] != 0] > 0).all()
    first.run(until=2)
    saved = json.loads((Path(config.out) / "latency.json").read_text())
    assert saved["size"] == list(config.crop)
    again = Trainer(config, resume=True)
    torch.testing.assert_close(again.budget.table.op, table.op)
    torch.testing.assert_close(again.budget.table.path, table.path)
    again.run()
    records = [json.loads(line) for line in (Path(config.out) / "metrics.jsonl").open()]
    assert any(r.get("budget_loss") for r in records if r.get("kind") == "train")


def test_budget_defaults_come_from_the_preset_training_section(tmp_path):
    """`dynviz train dynamic-a` trains with lambda 0.8, mu 0.1 unless told otherwise."""
    from dynviz.model.zoo import training_defaults

    assert training_defaults("dynamic-a") == {"budget_lambda": 0.8, "budget_mu": 0.1}
    spec = tmp_path / "budgeted.yaml"
    spec.write_text(
        "name: budgeted\nnum_layers: 4\nbase_channels: 8\nnum_classes: 4\n"
        "training:\n  budget_lambda: 0.8\n  budget_mu: 0.1\n"
    )
    trainer = Trainer(_config(tmp_path, "a", model=str(spec)))
    assert (trainer.config.budget_lambda, trainer.config.budget_mu) == (0.8, 0.1)
    assert (trainer.budget.lam, trainer.budget.mu) == (0.8, 0.1)
    given = Trainer(_config(tmp_path, "b", model=str(spec), budget_mu=0.3))
    assert (given.config.budget_lambda, given.config.budget_mu) == (0.8, 0.3)
    plain = Trainer(_config(tmp_path, "c"))
    assert (plain.config.budget_lambda, plain.config.budget_mu) == (0.0, 0.0)


def test_gate_warmup_trains_all_open_with_idle_gates_then_routes(tmp_path):
    """During the gate warm-up every path is open (alpha 1), the gates neither learn nor feel
    the budget; afterwards the gates route and the budget applies."""
    config = _config(
        tmp_path,
        "warm",
        iters=4,
        gate_warmup=0.5,
        budget_lambda=1.0,
        budget_mu=0.1,
        budget_start=0.0,
        budget_ramp=0.01,
    )
    trainer = Trainer(config)
    assert [trainer.gates_idle(i) for i in range(4)] == [True, True, False, False]
    gates = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if ".gate." in n}
    seen = []
    original = trainer.ddp.forward

    def spy(images, **kwargs):
        out = original(images, **kwargs)
        seen.append(out.gates.detach())
        return out

    trainer.ddp.forward = spy
    trainer.run(until=2)
    # warm-up: the all-open route was forced, so every existing path has alpha exactly 1
    mask = trainer.model.route_mask
    for alphas in seen:
        assert bool((alphas[:, mask] == 1).all())
    for name, value in gates.items():
        torch.testing.assert_close(dict(trainer.model.named_parameters())[name], value)
    records = [json.loads(line) for line in (Path(config.out) / "metrics.jsonl").open()]
    train = [r for r in records if r.get("kind") == "train"]
    assert [r["budget_loss"] for r in train] == [0.0, 0.0]
    seen.clear()
    trainer.run()
    # routing: the two steps use the gates' own alphas, the gates learn, the budget applies
    assert len(seen) >= 2 and all(bool((a[:, mask] < 1).any()) for a in seen[:2])
    assert any(
        not torch.equal(dict(trainer.model.named_parameters())[name], value)
        for name, value in gates.items()
    )
    records = [json.loads(line) for line in (Path(config.out) / "metrics.jsonl").open()]
    train = [r for r in records if r.get("kind") == "train"]
    assert all(r["budget_loss"] > 0 for r in train[2:])


@pytest.mark.parametrize("bn_samples", ["batch", "routed"])
def test_the_trainer_and_precise_bn_run_the_forward_that_bn_samples_names(tmp_path, bn_samples):
    config = _config(tmp_path, "bn", iters=3, bn_samples=bn_samples)
    trainer = Trainer(config)
    skips = []
    original = trainer.ddp.forward

    def spy(images, **kwargs):
        skips.append((trainer.model.training, kwargs.get("skip")))
        return original(images, **kwargs)

    trainer.ddp.forward = spy
    trainer.run()
    routed = bn_samples == "routed"
    assert skips[:5] == [(True, routed)] * 5  # three training steps, two PreciseBN batches
    saved = (Path(config.out) / "config.yaml").read_text()
    assert f"bn_samples: {bn_samples}" in saved
    records = [json.loads(line) for line in (Path(config.out) / "metrics.jsonl").open()]
    assert [r["iter"] for r in records if r.get("kind") == "train"] == [1, 2, 3]


def test_close_below_closes_weak_paths_after_training_only(tmp_path):
    """close_below: training and PreciseBN run at the space's threshold (0); afterwards the
    network, its checkpoint and every later forward pass skip the paths whose alpha is at most
    the value."""
    from dataclasses import replace

    from dynviz.model.checkpoint import model_from_checkpoint
    from dynviz.model.cost import cost_table

    config = _config(tmp_path, "close", iters=3, close_below=0.9, precise_bn=2)
    trainer = Trainer(config)
    thresholds = []
    original = trainer.ddp.forward

    def spy(images, **kwargs):
        thresholds.append(trainer.model.config.active_threshold)
        return original(images, **kwargs)

    trainer.ddp.forward = spy
    trainer.run()
    assert thresholds[:5] == [0.0] * 5  # the three training steps and two PreciseBN batches
    assert len(thresholds) > 5 and set(thresholds[5:]) == {0.9}  # the final evaluation
    saved = load_checkpoint(Path(config.out) / LATEST)
    assert saved["config"]["active_threshold"] == 0.9
    assert "alpha <= 0.9 closed after training" in saved["config"]["description"]
    records = [json.loads(line) for line in (Path(config.out) / "metrics.jsonl").open()]
    assert [r for r in records if r.get("kind") == "close"] == [
        {"kind": "close", "iter": 3, "active_threshold": 0.9}
    ]

    closed = model_from_checkpoint(saved).eval()
    opened = model_from_checkpoint(saved).eval()
    opened.config = replace(opened.config, active_threshold=0.0)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out_closed, out_open = closed(x), opened(x)
    weak = (out_open.gates > 0) & (out_open.gates <= 0.9)
    assert bool(weak.any())  # the gates (bias 1.5) leave some paths at or below 0.9 open
    assert not bool(((out_closed.gates > 0) & (out_closed.gates <= 0.9)).any())
    assert torch.equal(out_closed.active, out_closed.gates > 0.9)
    table = cost_table(closed.config, (32, 32))
    assert bool((table.real(out_closed.active) < table.real(out_open.active)).all())
    # the closed network still says how close each closed path was to opening
    own = out_closed.gate_alpha
    assert bool(((own > 0) & (own <= 0.9) & (out_closed.gates == 0)).any())
    assert torch.equal(own[out_closed.active], out_closed.gates[out_closed.active])
    # config.yaml keeps the network as trained and says what the checkpoint uses
    doc = yaml.safe_load((Path(config.out) / "config.yaml").read_text())
    assert doc["model"]["active_threshold"] == 0.0
    assert doc["checkpoint"]["active_threshold"] == 0.9
    from dynviz.train.runconfig import read_run_config

    assert read_run_config(Path(config.out) / "config.yaml").model["active_threshold"] == 0.0


def test_close_below_leaves_static_networks_and_zero_alone(tmp_path):
    route = Route.from_chains(dynviz.build_model("tiny").config, [[4, 8, 8, 16, 16]], name="c")
    spec = tmp_path / "chain.yaml"
    route.to_yaml(spec)
    static = Trainer(_config(tmp_path, "s", iters=1, model=str(spec), close_below=0.5))
    assert static.model.is_static
    static.run()
    assert static.model.config.active_threshold == 0.0
    plain = Trainer(_config(tmp_path, "p", iters=1))
    plain.run()
    assert plain.model.config.active_threshold == 0.0
    with pytest.raises(ConfigError, match="close_below: 1.0"):
        _config(tmp_path, close_below=1.0)


def test_out_of_range_setting_given_as_an_option_is_named_once(tmp_path, capsys):
    argv = ["train", "tiny", "--data", DATA, "--out", str(tmp_path / "r"), "--close-below", "1.5"]
    assert cli_main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "error: close_below: 1.5 must be in [0, 1) (given on the command line)"
    )
    assert not (tmp_path / "r").exists()


def test_gate_warmup_out_of_range_is_named(tmp_path):
    with pytest.raises(ConfigError, match="gate_warmup: 1.0"):
        _config(tmp_path, gate_warmup=1.0)
    with pytest.raises(ConfigError, match="gate_warmup: -0.1"):
        _config(tmp_path, gate_warmup=-0.1)


# -------------------------------------------------------------------------------- hooks
class _Spy(HookBase):
    """Records each call with the iteration it sees, and what the loop had done by then."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.losses: dict[int, float] = {}
        self.saved_before: dict[int, int] = {}

    def before_train(self) -> None:
        self.calls.append(("before_train", self.trainer.iteration))

    def before_step(self) -> None:
        self.calls.append(("before_step", self.trainer.iteration))

    def after_step(self) -> None:
        trainer = self.trainer
        self.calls.append(("after_step", trainer.iteration))
        self.losses[trainer.iteration] = trainer.step.values["loss"]
        # the default hooks ran first: this iteration's checkpoint is already written
        self.saved_before[trainer.iteration] = trainer.saved_at

    def after_train(self) -> None:
        trainer = self.trainer
        self.calls.append(("after_train", trainer.iteration))
        # the default hooks ran first: the checkpoint (and at the end the evaluation) are done
        saved = load_checkpoint(Path(trainer.config.out) / LATEST)["iteration"]
        assert saved == trainer.iteration
        assert (trainer.last_eval is not None) == trainer.finished


def test_a_user_hook_runs_after_the_default_hooks_with_the_step_counts(tmp_path):
    spy = _Spy()
    trainer = Trainer(_config(tmp_path, iters=4, checkpoint_every=2), hooks=[spy])
    assert [type(h).__name__ for h in trainer.hooks] == [
        "MetricsHook",
        "PreciseBNHook",
        "ClosePathsHook",
        "EvalHook",
        "CheckpointHook",
        "_Spy",
    ]
    assert spy.trainer is trainer
    result = trainer.run()
    assert spy.calls == [
        ("before_train", 0),
        ("before_step", 0),
        ("after_step", 1),
        ("before_step", 1),
        ("after_step", 2),
        ("before_step", 2),
        ("after_step", 3),
        ("before_step", 3),
        ("after_step", 4),
        ("after_train", 4),
    ]
    assert spy.saved_before == {1: 0, 2: 2, 3: 2, 4: 2}  # checkpoint_every=2, final at the end
    records = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    train = [json.loads(r) for r in records if json.loads(r)["kind"] == "train"]
    assert {r["iter"]: r["loss"] for r in train} == spy.losses  # log_every=1
    assert result.last_loss == spy.losses[4]


def test_hooks_of_a_resumed_run_count_from_the_checkpoint(tmp_path):
    first = _Spy()
    Trainer(_config(tmp_path, iters=4), hooks=[first]).run(until=2)
    assert first.calls[0] == ("before_train", 0)
    assert first.calls[-2:] == [("after_step", 2), ("after_train", 2)]  # stopped by until
    trainer = Trainer(_config(tmp_path, iters=4), resume=True)
    second = _Spy()
    trainer.register_hooks([second])
    trainer.run()
    assert second.calls == [
        ("before_train", 2),
        ("before_step", 2),
        ("after_step", 3),
        ("before_step", 3),
        ("after_step", 4),
        ("after_train", 4),
    ]
    with pytest.raises(TypeError, match="HookBase"):
        trainer.register_hooks([lambda: None])


def test_a_run_stopped_by_until_ends_its_hooks_without_the_final_steps(tmp_path):
    class Ends(HookBase):
        def __init__(self) -> None:
            self.finished: list[bool] = []

        def after_train(self) -> None:
            self.finished.append(self.trainer.finished)

    hook = Ends()
    trainer = Trainer(_config(tmp_path, iters=4), hooks=[hook])
    trainer.run(until=2)
    assert hook.finished == [False]
    kinds = [json.loads(r)["kind"] for r in (tmp_path / "run" / "metrics.jsonl").open()]
    assert kinds == ["train", "train"]  # no PreciseBN, no final evaluation before the end
    assert load_checkpoint(tmp_path / "run" / LATEST)["iteration"] == 2


# ------------------------------------------------------------------ options from the fields
def _train_parser(**kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_config_options(parser, **kwargs)
    return parser


def test_every_training_setting_is_an_option_with_its_help():
    parser = _train_parser()
    options = {a.dest: a for a in parser._actions if a.option_strings}
    for field in dataclasses.fields(TrainConfig):
        if field.name == "model":  # the positional MODEL
            assert field.name not in options
            continue
        action = options[field.name]
        assert action.option_strings[0] == "--" + field.name.replace("_", "-")
        assert action.help.startswith(field.metadata["help"].replace("%", "%%"))
        assert action.default is None  # explicit values are told apart on --resume
    assert options["crop"].nargs == 2 and options["crop"].type is int
    assert options["budget_cost"].choices == ("macs", "latency")
    assert options["iters"].help == "iterations (default: 1000)"
    assert options["crop"].help == "training crop (default: 768 768)"
    args = parser.parse_args(["--warmup-factor", "0.01", "--no-amp", "--scale", "1", "2"])
    assert (args.warmup_factor, args.amp, args.scale) == (0.01, False, [1.0, 2.0])


def test_a_new_setting_is_an_option_with_its_help_and_checked_choices():
    @dataclasses.dataclass(frozen=True)
    class Extended(TrainConfig):
        label_smoothing: float = setting(0.0, help="smoothing of the targets", metavar="EPS")
        sampler: str = setting("uniform", help="how to sample", choices=("uniform", "rare"))

    parser = _train_parser(config_class=Extended)
    options = {a.dest: a for a in parser._actions if a.option_strings}
    assert options["label_smoothing"].help == "smoothing of the targets (default: 0.0)"
    assert options["label_smoothing"].type is float
    assert options["label_smoothing"].metavar == "EPS"
    assert options["sampler"].choices == ("uniform", "rare")
    args = parser.parse_args(["--label-smoothing", "0.1", "--sampler", "rare"])
    assert (args.label_smoothing, args.sampler) == (0.1, "rare")
    with pytest.raises(ConfigError, match="sampler: 'other' must be uniform or rare"):
        Extended(model="tiny", data=DATA, out="x", sampler="other")


def test_the_train_command_keeps_its_option_spellings():
    parser = argparse.ArgumentParser()
    train_command.configure_parser(parser)
    flags = {s for a in parser._actions for s in a.option_strings}
    for flag in (
        "--data", "--out", "--val-data", "--init", "--iters", "--batch", "--crop", "--scale",
        "--lr", "--momentum", "--weight-decay", "--gate-lr-mult", "--gate-warmup",
        "--close-below", "--warmup-iters", "--grad-clip", "--precise-bn", "--seed",
        "--budget-lambda", "--budget-mu", "--budget-start", "--budget-ramp", "--budget-cost",
        "--budget-normaliser", "--budget-flops-size", "--num-classes", "--eval-every",
        "--eval-limit", "--checkpoint-every", "--log-every", "--workers", "--device",
        "--threads", "--amp", "--no-amp", "--deterministic", "--no-deterministic", "--progress",
        "--no-progress", "--json", "--tensorboard", "--no-tensorboard", "--config",
        "--cfg-options", "--resume", "--recipe", "--print-config",
    ):  # fmt: skip
        assert flag in flags, flag
