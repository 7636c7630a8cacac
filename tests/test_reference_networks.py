"""The reference gated networks (dynviz.gates.skipnet, dynviz.gates.moe) and their training
(dynviz.train.gated): real skipping, hand-computed costs, the flop counter, training with a budget
and a load balance, and records -> common plan -> static network end to end (issue 27)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dynviz.analysis.gates import common_plan, option_usage
from dynviz.data import build_dataset
from dynviz.gates import (
    Decision,
    GateGraph,
    GatePoint,
    build_moe,
    build_skipnet,
    collect,
    load_balance_loss,
)
from dynviz.gates.skipnet import gumbel_sigmoid
from dynviz.model import ConfigError
from dynviz.record import read_records, record
from dynviz.train.gated import expected_macs, train_gated

SPEC = "synthetic:count=6,size=32x32,classes=4,seed=0"

# A skipnet of two stages of one block each at 32x32, by hand (MACs = H*W*Cin*Cout*k*k):
STEM = 16 * 16 * 3 * 4 * 9  # 27648: 3x3 stride 2, 3 -> 4 channels, out 16x16
BLOCK1 = 2 * 16 * 16 * 4 * 4 * 9  # 73728: two 3x3 convolutions 4 -> 4 at 16x16
DOWN = 8 * 8 * 4 * 8 * 9  # 18432: 3x3 stride 2, 4 -> 8, out 8x8
BLOCK2 = 2 * 8 * 8 * 8 * 8 * 9  # 73728: two 3x3 convolutions 8 -> 8 at 8x8
GATES = 4 + 8  # 12: linear 4 -> 1 and 8 -> 1
HEAD = 8 * 8 * 8 * 4  # 2048: 1x1, 8 -> 4 classes at 8x8
SKIP_BASE = STEM + DOWN + GATES + HEAD  # 48140

# A mixture of 4 experts (k = 2), width 8, at 32x32:
STEM1 = 16 * 16 * 3 * 8 * 9  # 55296
STEM2 = 8 * 8 * 8 * 8 * 9  # 36864: stride 2 again, out 8x8
ROUTER = 8 * 4  # 32
MOE_HEAD = 8 * 8 * 8 * 4  # 2048
EXPERT = 2 * 8 * 8 * 8 * 8 * 9  # 73728
MOE_BASE = STEM1 + STEM2 + ROUTER + MOE_HEAD  # 94240


def _skipnet(classes: int = 4):
    return build_skipnet(num_classes=classes, channels=(4, 8), blocks=(1, 1), size=(32, 32))


def _moe(classes: int = 4):
    return build_moe(num_classes=classes, channels=8, experts=4, k=2, size=(32, 32))


def _force(module: torch.nn.Module, output: torch.Tensor):
    """Make ``module`` return ``output`` (a forward hook replaces what it computed)."""
    return module.register_forward_hook(lambda _m, _i, _o: output)


def _calls(module: torch.nn.Module) -> list[int]:
    """The batch size of each call of ``module`` (appended as it runs)."""
    seen: list[int] = []
    module.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].shape[0]))
    return seen


def _set_gate(block, bias: float) -> None:
    with torch.no_grad():
        block.gate.fc.weight.zero_()
        block.gate.fc.bias.fill_(bias)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _flops(model, x) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2  # MACs


@pytest.fixture(scope="module")
def train_set():
    return build_dataset("synthetic:count=16,size=32x32,classes=4,seed=0", split="train")


# ------------------------------------------------------------------------------- skipnet
def test_skipnet_costs_are_the_hand_arithmetic():
    model = _skipnet()
    graph = model.gate_graph()
    assert graph.name == "skipnet" and graph.point_names == ("block1", "block2")
    assert graph.base_macs == SKIP_BASE == 48140
    assert graph.option_macs() == {
        ("block1", "skip"): 0.0,
        ("block1", "run"): BLOCK1,
        ("block2", "skip"): 0.0,
        ("block2", "run"): BLOCK2,
    }
    assert graph.all_run_macs == model.macs() == SKIP_BASE + BLOCK1 + BLOCK2 == 195596
    assert graph.meta["size"] == [32, 32]
    # at 64x64 every spatial term is four times larger; the gates' linear layers are not
    big = model.gate_graph(size=(64, 64))
    assert big.base_macs == 4 * (STEM + DOWN + HEAD) + GATES
    assert big["block1"].options[1].macs == 4 * BLOCK1


def test_skipnet_a_closed_gate_really_skips_its_block():
    torch.manual_seed(0)
    model = _skipnet().eval()
    block1, block2 = model.blocks()
    body1, body2 = _calls(block1.body), _calls(block2.body)
    _force(block1.gate, torch.tensor([0.9, 0.1, 0.7]))  # inputs 0 and 2 run block 1
    _force(block2.gate, torch.tensor([0.2, 0.4, 0.3]))  # nobody runs block 2
    x = torch.randn(3, 3, 32, 32) * 50
    with collect(model.gate_graph()) as seen, torch.no_grad():
        out = model(x)
    assert body1 == [2] and body2 == []  # gathered inputs only; block 2 never computed
    decisions = seen.complete()
    assert decisions["block1"].ran[:, 1].tolist() == [True, False, True]
    assert not decisions["block2"].ran[:, 1].any()
    torch.testing.assert_close(decisions["block1"].values[:, 1], torch.tensor([0.9, 0.1, 0.7]))
    # the flop counter sees what ran: the base for all three, block 1 for two
    assert _flops(model, x) == 3 * SKIP_BASE + 2 * BLOCK1
    # each input's output is its own network's: block 1 or nothing, and no block 2
    keep = {"block1": ("run",), "block2": ()}
    with torch.no_grad():
        ran = model.static(keep)(x)
        bare = model.static({"block1": (), "block2": ()})(x)
    torch.testing.assert_close(out[[0, 2]], ran[[0, 2]])
    torch.testing.assert_close(out[1], bare[1])
    assert not torch.allclose(ran[1], bare[1])


def test_skipnet_flop_counter_agrees_with_the_graph_when_every_block_runs():
    model = _skipnet().eval()
    for block in model.blocks():
        _set_gate(block, 10.0)
    x = torch.randn(2, 3, 32, 32)
    assert _flops(model, x) == 2 * model.gate_graph().all_run_macs
    # a static network of one block costs what the graph says, less the gates
    static = model.static({"block1": ("run",), "block2": ("skip",)})
    assert static.macs() == SKIP_BASE - GATES + BLOCK1
    assert _flops(static, x) == 2 * static.macs()


def test_skipnet_trains_soft_gates_every_block_runs_scaled_by_p():
    torch.manual_seed(0)
    model = _skipnet().train()
    block1 = model.blocks()[0]
    _set_gate(block1, math.log(0.25 / 0.75))  # p = 0.25, under the threshold
    calls = _calls(block1.body)
    x = torch.randn(2, 3, 32, 32)
    logits, gates = model.forward_gates(x)
    assert calls == [2]  # soft: it runs for everyone
    torch.testing.assert_close(gates["block1"].values, torch.tensor([[0.75, 0.25]] * 2))
    h = model.stem(x / 58.0)
    torch.testing.assert_close(block1(h, {}), h + 0.25 * block1.body(h))
    logits.sum().backward()
    assert block1.gate.fc.bias.grad is not None and block1.gate.fc.bias.grad.abs() > 0


def test_gumbel_sigmoid_is_hard_forward_and_soft_backward():
    logits = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0], requires_grad=True)
    torch.manual_seed(3)
    z, run = gumbel_sigmoid(logits, tau=0.5)
    assert set(z.tolist()) <= {0.0, 1.0} and z.bool().tolist() == run.tolist()
    # the same noise by hand: u from the same seed, logistic g = log(u) - log(1 - u)
    torch.manual_seed(3)
    u = torch.rand(5)
    soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / 0.5)
    assert run.tolist() == (soft > 0.5).tolist()
    (z * torch.arange(5.0)).sum().backward()
    want = torch.arange(5.0) * soft.detach() * (1 - soft.detach()) / 0.5  # d sigmoid(a/tau)
    torch.testing.assert_close(logits.grad, want)
    # a fixed seed draws the same noise, another seed other noise
    many = torch.zeros(200)
    torch.manual_seed(7)
    a = gumbel_sigmoid(many)[1]
    torch.manual_seed(7)
    assert torch.equal(gumbel_sigmoid(many)[1], a)
    assert 60 < int(a.sum()) < 140  # p = 0.5: about half run
    torch.manual_seed(8)
    assert not torch.equal(gumbel_sigmoid(many)[1], a)


def test_skipnet_gumbel_training_runs_hard_blocks_and_eval_has_no_noise():
    torch.manual_seed(0)
    model = build_skipnet(
        num_classes=4, channels=(4, 8), blocks=(1, 1), size=(32, 32), gate_mode="gumbel"
    ).train()
    block1 = model.blocks()[0]
    _set_gate(block1, 0.0)  # p = 0.5: the noise decides
    x = torch.randn(64, 3, 32, 32)
    h = model.stem(x / 58.0)
    torch.manual_seed(1)
    gates: dict = {}
    out = block1(h, gates)
    ran = gates["block1"].ran[:, 1]
    assert 10 < int(ran.sum()) < 54  # some inputs run the block, others skip it
    torch.testing.assert_close(gates["block1"].values[:, 1], torch.full((64,), 0.5))  # p
    with torch.no_grad():
        torch.testing.assert_close(out[ran], h[ran] + block1.body(h[ran]))  # hard: z = 1
        torch.testing.assert_close(out[~ran], h[~ran])  # z = 0: passes through
    torch.manual_seed(1)
    again: dict = {}
    torch.testing.assert_close(block1(h, again), out)  # the same seed, the same routes
    assert torch.equal(again["block1"].ran, gates["block1"].ran)
    out.sum().backward()  # the soft gradient reaches the gate
    assert block1.gate.fc.bias.grad is not None and block1.gate.fc.bias.grad.abs() > 0
    # eval: no noise, p > threshold, the same decisions on every call
    model.eval()
    _set_gate(block1, 0.1)  # p = 0.525: runs for everyone
    with torch.no_grad():
        first = model(x)
        with collect(model.gate_graph()) as seen:
            second = model(x)
    torch.testing.assert_close(first, second)
    assert seen.complete()["block1"].ran[:, 1].all()


def test_skipnet_avgmax_gate_pools_average_and_maximum():
    model = build_skipnet(
        num_classes=4, channels=(4, 8), blocks=(1, 1), size=(32, 32), gate_pool="avgmax"
    )
    gate = model.blocks()[0].gate
    assert gate.fc.in_features == 8
    x = torch.zeros(1, 4, 16, 16)
    x[0, 2, 5, 5] = 256.0  # one bright pixel: average 1, maximum 256
    with torch.no_grad():
        gate.fc.weight.zero_()
        gate.fc.bias.zero_()
        gate.fc.weight[0, 2] = 1.0  # channel 2's average
        assert float(gate.logit(x)) == pytest.approx(1.0)
        gate.fc.weight[0, 4 + 2] = 0.01  # and its maximum
        assert float(gate.logit(x)) == pytest.approx(1.0 + 2.56)
    # the gates' linear layers take 2C inputs: 8 + 16 MACs
    assert model.gate_graph().base_macs == SKIP_BASE + GATES
    with pytest.raises(ConfigError, match="gate_mode"):
        build_skipnet(num_classes=4, gate_mode="hard")
    with pytest.raises(ConfigError, match="tau"):
        build_skipnet(num_classes=4, tau=0.0)


def test_skipnet_static_checks_the_plan():
    model = _skipnet()
    with pytest.raises(ConfigError, match="block9"):
        model.static({"block1": ("run",), "block2": (), "block9": ()})
    with pytest.raises(ConfigError, match="says nothing about points \\['block2'\\]"):
        model.static({"block1": ("run",)})
    with pytest.raises(ConfigError, match="no options \\['go'\\]"):
        model.static({"block1": ("go",), "block2": ()})
    with pytest.raises(ConfigError, match="no gates"):
        model.static({"block1": ("run",), "block2": ("run",)}).gate_graph()


def test_skipnet_records_plan_and_static_network_end_to_end(dataset, tmp_path):
    torch.manual_seed(0)
    model = _skipnet().eval()
    block1, block2 = model.blocks()
    _set_gate(block1, 10.0)  # always runs
    _set_gate(block2, -10.0)  # never runs
    record(model, dataset, tmp_path / "rec", builder="dynviz.gates.skipnet:build_skipnet")
    records = read_records(tmp_path / "rec")
    assert records.kind == "gate-graph" and records.graph == model.gate_graph()
    np.testing.assert_allclose(records.images["real_gmacs"], (SKIP_BASE + BLOCK1) / 1e9)
    plan = common_plan(records.decisions, records.graph, threshold=0.95)
    assert plan.keep() == {"block1": ("run",), "block2": ("skip",)}
    static = model.static(plan.keep())
    # block 2's body (2 convolutions of 8 * 8 * 9 weights and 8 biases) and both gates go
    assert _params(model) - _params(static) == 2 * (8 * 8 * 9 + 8) + (4 + 1) + (8 + 1)
    assert static.macs() == SKIP_BASE - GATES + BLOCK1 < records.graph.all_run_macs
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    with torch.no_grad():
        torch.testing.assert_close(static(images), model(images))


def test_skipnet_keep_gates_keeps_a_sometimes_block_dynamic():
    torch.manual_seed(0)
    model = _skipnet().eval()
    static = model.static({"block1": ("skip", "run"), "block2": ("skip",)}, keep_gates=True)
    assert static.gate_graph().point_names == ("block1",)
    assert static.blocks()[0].gate is not None and len(static.blocks()) == 1
    x = torch.randn(3, 3, 32, 32)
    _force(model.blocks()[0].gate, torch.tensor([0.9, 0.1, 0.7]))
    _force(model.blocks()[1].gate, torch.tensor([0.1, 0.1, 0.1]))
    _force(static.blocks()[0].gate, torch.tensor([0.9, 0.1, 0.7]))
    with torch.no_grad():
        torch.testing.assert_close(static(x), model(x))


# ----------------------------------------------------------------------------------- moe
def test_moe_costs_are_the_hand_arithmetic():
    model = _moe()
    graph = model.gate_graph()
    point = graph["moe"]
    assert point.k == 2 and point.option_names == ("expert0", "expert1", "expert2", "expert3")
    assert graph.base_macs == MOE_BASE == 94240
    assert [o.macs for o in point.options] == [EXPERT] * 4
    assert model.macs() == MOE_BASE + 2 * EXPERT == 241696  # each input runs two experts
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    assert _flops(model, x) == 3 * model.macs()


def test_moe_each_expert_runs_only_on_the_inputs_that_chose_it():
    torch.manual_seed(0)
    model = _moe().eval()
    calls = {name: _calls(body) for name, body in model.moe.experts.items()}
    logits = torch.tensor([[3.0, 2.0, 0.0, 0.0], [0.0, 2.0, 3.0, 0.0], [3.0, 0.0, 2.0, 0.0]])
    _force(model.moe.router, logits)
    h = torch.randn(3, 8, 8, 8)
    with collect(model.gate_graph()) as seen, torch.no_grad():
        out = model.moe(h, {})
    assert {n: c for n, c in calls.items()} == {
        "expert0": [2],  # inputs 0 and 2
        "expert1": [2],  # inputs 0 and 1
        "expert2": [2],  # inputs 1 and 2
        "expert3": [],  # nobody chose it: not computed
    }
    decision = seen.complete()["moe"]
    torch.testing.assert_close(decision.values, logits.softmax(1))
    assert decision.ran.int().tolist() == [[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 0]]
    # renormalised over the two chosen: softmax([3, 2]) = (1 / (1 + e^-1), 1 / (1 + e))
    a, b = 1 / (1 + math.e**-1), 1 / (1 + math.e)
    experts = model.moe.experts
    with torch.no_grad():
        want0 = h[0] + a * experts["expert0"](h[:1])[0] + b * experts["expert1"](h[:1])[0]
        want1 = h[1] + a * experts["expert2"](h[1:2])[0] + b * experts["expert1"](h[1:2])[0]
    torch.testing.assert_close(out[0], want0)
    torch.testing.assert_close(out[1], want1)
    # the flop counter: the base three times, two experts per input
    assert _flops(model, torch.randn(3, 3, 32, 32)) == 3 * MOE_BASE + 6 * EXPERT


def test_load_balance_loss_is_the_switch_transformer_formula():
    uniform = torch.full((4, 4), 0.25)
    balanced = torch.eye(4, dtype=torch.bool)  # each expert takes one input
    assert float(load_balance_loss(uniform, balanced)) == pytest.approx(1.0)
    one = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 3)
    assert float(load_balance_loss(one, one.bool())) == pytest.approx(4.0)
    # E = 2: f = (1, 0), P = (0.7, 0.3): 2 * (1 * 0.7 + 0 * 0.3) = 1.4
    weights = torch.tensor([[0.8, 0.2], [0.6, 0.4]], requires_grad=True)
    loss = load_balance_loss(weights, torch.tensor([[True, False], [True, False]]))
    assert float(loss.detach()) == pytest.approx(1.4)
    loss.backward()  # d/dw = E * f_i / N
    torch.testing.assert_close(weights.grad, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))


def test_moe_records_usage_and_a_lossless_static_network(dataset, tmp_path):
    torch.manual_seed(0)
    model = _moe().eval()
    with torch.no_grad():
        model.moe.router.weight.mul_(100.0)  # inputs choose different experts
        model.moe.router.bias[3] = -1e4  # nobody chooses expert 3
    record(model, dataset, tmp_path / "rec", builder="dynviz.gates.moe:build_moe")
    records = read_records(tmp_path / "rec")
    np.testing.assert_allclose(records.images["real_gmacs"], (MOE_BASE + 2 * EXPERT) / 1e9)
    usage = option_usage(records.decisions).set_index("option")["usage"]
    assert usage.sum() == pytest.approx(2.0)  # two experts per input
    assert usage["expert3"] == 0.0 and usage.drop("expert3").gt(0).sum() >= 2
    plan = common_plan(records.decisions, records.graph, threshold=0.95)
    kept = plan.keep(lossless=True)["moe"]
    assert "expert3" not in kept and len(kept) >= 2
    static = model.static(plan.keep(lossless=True))
    assert static.expert_names == kept
    dropped = 4 - len(kept)  # each expert: 2 * (8 * 8 * 9 + 8) weights, a router row of 8 + 1
    assert _params(model) - _params(static) == dropped * (2 * (8 * 8 * 9 + 8) + 9)
    assert static.gate_graph().all_run_macs < records.graph.all_run_macs
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    with torch.no_grad():
        torch.testing.assert_close(static(images), model(images))


def test_moe_static_of_one_expert_has_no_router():
    torch.manual_seed(0)
    model = _moe().eval()
    static = model.static({"moe": ("expert2",)})
    assert static.moe.router is None and static.macs() == MOE_BASE - ROUTER + EXPERT
    h = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(static.moe(h, {}), h + model.moe.experts["expert2"](h))
    with pytest.raises(ConfigError, match="no router"):
        static.gate_graph()
    assert model.static({"moe": ()}).macs() == MOE_BASE - ROUTER


# ------------------------------------------------------------------------------ training
def test_expected_macs_is_value_times_cost_and_differentiable():
    graph = GateGraph(
        (GatePoint.skip("b", macs=10.0), GatePoint.router("r", ["e0", "e1"], k=1, macs=[1, 4])),
        base_macs=100.0,
    )
    p = torch.tensor([0.5, 1.0], requires_grad=True)
    gates = {
        "b": Decision(torch.stack([1 - p, p], 1), torch.zeros(2, 2, dtype=torch.bool)),
        "r": Decision(torch.tensor([[0.5, 0.5], [1.0, 0.0]]), torch.zeros(2, 2, dtype=torch.bool)),
    }
    cost = expected_macs(graph, gates)
    # 100 + 0.5 * 10 + (0.5 * 1 + 0.5 * 4); 100 + 10 + 1
    torch.testing.assert_close(cost, torch.tensor([107.5, 111.0]))
    cost.sum().backward()
    torch.testing.assert_close(p.grad, torch.tensor([10.0, 10.0]))


def test_training_lowers_the_loss_and_the_budget_pulls_the_cost_share(train_set):
    runs = {}
    for budget in (None, 0.2):
        torch.manual_seed(0)
        model = _skipnet()
        runs[budget] = train_gated(
            model, train_set, iterations=40, batch_size=4, lr=1e-2, budget=budget, budget_weight=5
        )
    free, tight = runs[None], runs[0.2]
    assert len(free.losses) == 40 and tight.mu == 0.2
    first, last = np.mean(free.task_losses[:5]), np.mean(free.task_losses[-5:])
    assert last < 0.8 * first
    assert free.shares[0] == tight.shares[0] > 0.8  # gates start open: sigmoid(2) = 0.88
    assert abs(tight.final_share - 0.2) < abs(free.final_share - 0.2)
    assert tight.final_share < 0.6 and free.final_share > 0.7


def test_target_rates_add_convnet_aig_s_term_and_pull_each_block(train_set):
    torch.manual_seed(0)
    model = _skipnet()
    for block in model.blocks():
        _set_gate(block, 2.0)  # p = sigmoid(2) for every input
    run = train_gated(
        model, train_set, iterations=1, batch_size=4, lr=0.0, target_rates=0.5, target_weight=3.0
    )
    p = 1 / (1 + math.exp(-2.0))
    assert run.losses[0] - run.task_losses[0] == pytest.approx(3.0 * (p - 0.5) ** 2, rel=1e-4)
    # only block2 has a target: the mean over the points with one
    torch.manual_seed(0)
    run = train_gated(
        model, train_set, iterations=1, batch_size=4, lr=0.0, target_rates={"block2": 0.0}
    )
    assert run.losses[0] - run.task_losses[0] == pytest.approx(p**2, rel=1e-4)
    # training pulls each block's rate to its target
    torch.manual_seed(0)
    model = _skipnet()
    train_gated(
        model, train_set, iterations=40, batch_size=4, lr=1e-2, target_rates=0.2, target_weight=5
    )
    images = torch.stack([train_set[i]["image"] for i in range(len(train_set))])
    with torch.no_grad():
        _, gates = model.forward_gates(images)
    for decision in gates.values():
        assert float(decision.values[:, 1].mean()) < 0.6  # from 0.88
    with pytest.raises(ConfigError, match="block9"):
        train_gated(_skipnet(), train_set, iterations=1, target_rates={"block9": 0.5})
    with pytest.raises(ConfigError, match="in \\[0, 1\\]"):
        train_gated(_skipnet(), train_set, iterations=1, target_rates=1.5)


def test_the_balance_loss_spreads_the_experts(train_set):
    finals = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = _moe()
        with torch.no_grad():
            model.moe.router.bias.copy_(torch.tensor([2.0, 2.0, 0.0, 0.0]))  # start unbalanced
        run = train_gated(
            model, train_set, iterations=30, batch_size=4, lr=1e-2, balance_weight=weight
        )
        finals[weight] = np.mean(run.balance[-5:])
        assert run.balance[0] > 1.5  # experts 0 and 1 take nearly every run
    assert finals[1.0] < finals[0.0]


def test_train_gated_refuses_a_network_without_forward_gates(train_set):
    with pytest.raises(ConfigError, match="forward_gates"):
        train_gated(torch.nn.Conv2d(3, 4, 1), train_set, iterations=1)
    with pytest.raises(ConfigError, match="must hold a batch"):
        train_gated(_skipnet(), train_set, iterations=1, batch_size=64)


# -------------------------------------------------------------------------------- script
@pytest.mark.slow
def test_the_script_prints_a_table_per_network(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "reference_networks.py"
    args = ["--iterations", "20", "--train-count", "16", "--val-count", "8", "--size", "32"]
    args += ["--repeats", "1", "--timing-images", "2", "--out", str(tmp_path / "out")]
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    text = done.stdout
    assert "machine: " in text and "command: " in text
    for line in ("skipnet: final", "moe: final", "static, common@0.95", "routes (validation)"):
        assert line in text
    assert (tmp_path / "out" / "skipnet").is_dir() and (tmp_path / "out" / "moe").is_dir()
