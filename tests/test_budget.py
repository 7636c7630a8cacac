"""Budget loss (Eqs. 9-10) arithmetic and its 40% / 2% schedule."""

from __future__ import annotations

import pytest
import torch

import dynviz
from dynviz.model.cost import cost_table
from dynviz.train.budget import BudgetLoss, BudgetSchedule


@pytest.fixture(scope="module")
def table():
    return cost_table(dynviz.build_model("tiny").config, (64, 64))


def _gates(table, value: float, batch: int = 2) -> torch.Tensor:
    config = table.config
    mask = dynviz.Route.all_open(config).mask().to(torch.float64)
    return (mask * value).expand(batch, *mask.shape).clone()


def test_schedule_zero_before_forty_percent_then_ramps():
    schedule = BudgetSchedule()
    assert schedule.weight(0, 1000) == 0.0
    assert schedule.weight(399, 1000) == 0.0
    assert schedule.weight(400, 1000) == 0.0  # the ramp starts at 0
    assert schedule.weight(405, 1000) == pytest.approx(0.25)
    assert schedule.weight(410, 1000) == pytest.approx(0.5)
    assert schedule.weight(420, 1000) == pytest.approx(1.0)
    assert schedule.weight(999, 1000) == 1.0
    assert BudgetSchedule(start=0.5, ramp=0.0).weight(500, 1000) == 1.0
    assert BudgetSchedule(start=0.5, ramp=0.0).weight(499, 1000) == 0.0


def test_normaliser_is_the_all_open_backbone_cost_at_the_crop(table):
    loss = BudgetLoss(table, lam=0.8, mu=0.1)
    assert loss.normaliser == table.backbone_all_open()
    assert loss.normaliser == float(table.op.sum() + table.path.sum())
    bigger = cost_table(table.config, (128, 128)).backbone_all_open()
    assert bigger == pytest.approx(4 * loss.normaliser, rel=1e-12)  # every map has 4x the area


@pytest.mark.parametrize(
    ("value", "lam", "mu", "iteration", "expected"),
    [
        (1.0, 0.8, 0.1, 999, 0.8 * (1.0 - 0.1) ** 2),  # all open: ratio 1
        (0.0, 0.8, 0.1, 999, 0.8 * 0.1**2),  # all closed: ratio 0
        (0.5, 2.0, 0.3, 999, 2.0 * (0.5 - 0.3) ** 2),  # E is linear in uniform alphas
        (0.5, 2.0, 0.3, 410, 2.0 * 0.5 * (0.5 - 0.3) ** 2),  # half-way up the ramp
        (0.5, 2.0, 0.3, 300, 0.0),  # before 40% of training
    ],
)
def test_budget_loss_hand_values(table, value, lam, mu, iteration, expected):
    terms = BudgetLoss(table, lam=lam, mu=mu)(_gates(table, value), iteration, 1000)
    assert terms.ratio.item() == pytest.approx(value, abs=1e-12)
    assert terms.loss.item() == pytest.approx(expected, abs=1e-12)


def test_ratio_is_eq7_by_hand_and_batch_mean(table):
    torch.manual_seed(0)
    gates = torch.rand(3, *table.path.shape, dtype=torch.float64) * _gates(table, 1.0, 1)
    per_image = []
    for sample in gates:
        cells = sum(
            float(table.op[layer, scale] * sample[layer, scale].max())
            for layer in range(table.op.shape[0])
            for scale in range(table.op.shape[1])
        )
        paths = float((table.path * sample).sum())
        per_image.append((cells + paths) / table.backbone_all_open())
    loss = BudgetLoss(table, lam=1.0, mu=0.2)
    assert loss.ratio(gates).item() == pytest.approx(sum(per_image) / 3, rel=1e-6)


def test_gradient_pushes_gates_toward_mu(table):
    gates = _gates(table, 0.9).float().requires_grad_(True)
    BudgetLoss(table, lam=1.0, mu=0.1)(gates, 999, 1000).loss.backward()
    assert (gates.grad[_gates(table, 1.0) > 0] >= 0).all()  # ratio > mu: close paths
    assert gates.grad.sum() > 0
    gates = _gates(table, 0.05).float().requires_grad_(True)
    BudgetLoss(table, lam=1.0, mu=0.5)(gates, 999, 1000).loss.backward()
    assert gates.grad.sum() < 0  # ratio < mu: open paths


def test_invalid_settings_rejected(table):
    with pytest.raises(ValueError, match="mu"):
        BudgetLoss(table, lam=1.0, mu=1.5)
    with pytest.raises(ValueError, match="lambda"):
        BudgetLoss(table, lam=-1.0, mu=0.1)
    with pytest.raises(ValueError, match="start"):
        BudgetSchedule(start=1.5)


def test_official_normaliser_is_the_hard_coded_26300_mflops():
    """Layer16 at 768x768: E / 26300 M against E / 26891.70 M (the all-open cost)."""
    from dynviz.interop.official import OFFICIAL_BUDGET_NORMALISER

    table = cost_table(dynviz.build_model("layer16").config, (768, 768))
    assert table.backbone_all_open() == pytest.approx(26_891.70e6, rel=1e-6)
    gates = _gates(table, 1.0, batch=1)
    ours = BudgetLoss(table, lam=0.8, mu=0.1)
    official = BudgetLoss(table, lam=0.8, mu=0.1, normaliser=OFFICIAL_BUDGET_NORMALISER)
    assert official.normaliser == 26_300e6
    assert official.ratio(gates).item() == pytest.approx(26_891.70 / 26_300, rel=1e-6)
    assert ours.ratio(gates).item() == pytest.approx(1.0)
