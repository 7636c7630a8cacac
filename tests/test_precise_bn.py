"""Precise BatchNorm statistics: the mean of the batches' statistics, computed by hand."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from torch import nn

from dynviz.model.checkpoint import LATEST, load_checkpoint
from dynviz.train import TrainConfig, train
from dynviz.train.precise_bn import default_precise_bn_batches, update_bn_stats

DATA = "synthetic:count=8,size=48x48,classes=4"


class _TwoBranches(nn.Module):
    """A BN on the input, and a second BN that the forward never reaches."""

    def __init__(self) -> None:
        super().__init__()
        self.used = nn.BatchNorm2d(3)
        self.unused = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def test_statistics_are_the_mean_of_the_batch_statistics():
    torch.manual_seed(0)
    batches = [torch.randn(4, 3, 5, 5) * (i + 1) + i for i in range(5)]
    model = _TwoBranches().eval()
    model.used.running_mean.fill_(7.0)  # stale statistics from "training"
    model.unused.running_mean.fill_(3.0)
    model.unused.running_var.fill_(2.0)
    used = update_bn_stats(model, iter(batches + [torch.randn(4, 3, 5, 5)]), num_batches=5)
    assert used == 5
    means = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches])
    variances = torch.stack([b.transpose(0, 1).reshape(3, -1).var(dim=1) for b in batches])
    torch.testing.assert_close(model.used.running_mean, means.mean(0))
    torch.testing.assert_close(model.used.running_var, variances.mean(0))  # unbiased, as BN
    assert int(model.used.num_batches_tracked) == 5
    # the branch no batch reached keeps what it had; momentum and mode are restored
    assert torch.all(model.unused.running_mean == 3.0)
    assert torch.all(model.unused.running_var == 2.0)
    assert model.used.momentum == 0.1 and not model.training


def test_no_batches_leave_the_statistics_alone():
    model = nn.Sequential(nn.BatchNorm1d(2))
    model[0].running_mean.fill_(5.0)
    assert update_bn_stats(model, [], num_batches=3) == 0
    assert torch.all(model[0].running_mean == 5.0)
    assert update_bn_stats(model, [torch.randn(4, 2)], num_batches=0) == 0
    assert torch.all(model[0].running_mean == 5.0)


def test_training_ends_with_precise_statistics_and_the_same_weights(tmp_path):
    common = dict(
        model="tiny",
        data=DATA,
        iters=3,
        batch=2,
        crop=(32, 32),
        workers=0,
        eval_limit=2,
        tensorboard=False,
        progress=False,
        deterministic=True,
    )
    train(TrainConfig(out=str(tmp_path / "plain"), precise_bn=0, **common))
    train(TrainConfig(out=str(tmp_path / "precise"), precise_bn=3, **common))
    plain = load_checkpoint(tmp_path / "plain" / LATEST)["model"]
    precise = load_checkpoint(tmp_path / "precise" / LATEST)["model"]
    stats = [k for k in plain if k.endswith(("running_mean", "running_var"))]
    weights = [k for k in plain if k.endswith((".weight", ".bias"))]
    assert stats and weights
    assert all(torch.equal(plain[k], precise[k]) for k in weights)  # only statistics change
    assert any(not torch.equal(plain[k], precise[k]) for k in stats)
    rows = [json.loads(line) for line in (tmp_path / "precise" / "metrics.jsonl").open()]
    kinds = [r["kind"] for r in rows]
    assert kinds.index("precise_bn") < kinds.index("eval")  # evaluated with the new statistics
    assert rows[kinds.index("precise_bn")]["batches"] == 3


@pytest.mark.parametrize(
    ("iters", "batches"), [(1, 1), (20, 2), (25, 3), (600, 60), (2000, 200), (190000, 200)]
)
def test_default_batches_scale_with_the_run(iters, batches):
    assert default_precise_bn_batches(iters) == batches


def test_a_short_run_spends_a_tenth_of_its_iterations_on_precise_bn(tmp_path):
    config = TrainConfig(
        model="tiny",
        data=DATA,
        out=str(tmp_path / "run"),
        iters=20,
        batch=2,
        crop=(32, 32),
        workers=0,
        eval_limit=1,
        tensorboard=False,
        progress=False,
    )
    train(config)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["batches"] for r in rows if r["kind"] == "precise_bn"] == [2]
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text(encoding="utf-8"))
    assert saved["train"]["precise_bn"] == 2  # saved resolved, so a resume compares like with like
