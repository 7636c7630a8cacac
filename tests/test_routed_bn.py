"""BatchNorm over the routed samples (``TrainConfig.bn_samples`` ``routed``): in training, a
node's BatchNorm takes its statistics over the samples routed through it, not over the whole
batch with zeros for the others (the official code's ``batch``). The trainer's side is in
``test_train.py``."""

from __future__ import annotations

import pytest
import torch
from _models import assert_close_to_scale, randomise

import dynviz
from dynviz.model import Route
from dynviz.model.ops import RoutedBatchNorm2d


def _two_routes(model):
    """Sample 0 also goes down from (layer 1, 1/4) to the cell at (layer 2, 1/8); sample 1
    stays at 1/4. Every node before that down path is reached by both."""
    config = model.config
    a = Route.from_chains(config, [[4, 4, 4, 4, 4], [4, 4, 8, 8, 8]], name="a")
    b = Route.from_chains(config, [[4, 4, 4, 4, 4]], name="b")
    return torch.stack([a.mask(), b.mask()]).float()


def _statistics(model, images, alphas, *, skip):
    """The inputs of two BatchNorms (momentum 1: the running mean is the last batch's) and
    their running means after one training forward pass."""
    torch.manual_seed(0)
    model.train()
    layers = {"down": model.cell(1, 0).down.bn, "op": model.cell(2, 1).op.bn1}
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    seen = {}
    hooks = [
        bn.register_forward_hook(lambda _m, i, _o, k=k: seen.__setitem__(k, i[0].detach()))
        for k, bn in layers.items()
    ]
    model(images, route=alphas, skip=skip)
    for h in hooks:
        h.remove()
    return seen, {k: bn.running_mean.clone() for k, bn in layers.items()}


def test_routed_statistics_cover_only_the_samples_a_node_reaches():
    torch.manual_seed(0)
    model = dynviz.build_model("tiny")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(2, 3, 32, 32)
    alphas = _two_routes(model)

    batch_in, batch_mean = _statistics(model, images, alphas, skip=False)
    model.load_state_dict(state)
    routed_in, routed_mean = _statistics(model, images, alphas, skip=True)

    # the official (batch) forward: every node runs on both samples; the cell that sample 1
    # does not reach gets zeros for it, which its statistics average in
    assert batch_in["down"].shape[0] == batch_in["op"].shape[0] == 2
    assert bool((batch_in["op"][1] == 0).all()) and bool((batch_in["op"][0] != 0).any())
    torch.testing.assert_close(batch_mean["op"], batch_in["op"].mean((0, 2, 3)))
    # routed: the down path and the cell it feeds run on sample 0 alone, with the same input
    assert routed_in["down"].shape[0] == routed_in["op"].shape[0] == 1
    assert_close_to_scale(routed_in["down"][0], batch_in["down"][0])
    for key in ("down", "op"):
        torch.testing.assert_close(routed_mean[key], routed_in[key].mean((0, 2, 3)))
    # so the statistics differ: the down path's are sample 0's alone, not both samples'
    assert not torch.allclose(routed_mean["down"], batch_mean["down"], atol=1e-3)


def test_where_every_sample_reaches_every_node_routed_is_the_batch_forward():
    """Gates open on every path for every sample: both forwards compute the same logits and
    the same gradients, gates included (training mode, batch statistics)."""
    torch.manual_seed(1)
    model = randomise(dynviz.build_model("tiny"), gate_bias=(2.0, 3.0))
    images = torch.randn(3, 3, 32, 32)
    results = []
    for skip in (False, True):
        model.zero_grad()
        model.train()
        out = model(images, skip=skip)
        assert bool((out.gates[:, model.route_mask] > 0).all())
        (out.logits.square().mean() + out.gates.sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out.logits.detach(), grads))
    (soft, soft_grads), (routed, routed_grads) = results
    assert_close_to_scale(routed, soft)
    assert soft_grads.keys() == routed_grads.keys()
    assert any(".gate." in n for n in routed_grads)
    for name, grad in soft_grads.items():
        assert_close_to_scale(routed_grads[name], grad, rel=1e-4)


def test_one_value_per_channel_is_normalised_by_the_running_statistics():
    """A node that one sample reaches at 1x1 has no batch variance: its BatchNorm uses the
    running statistics and leaves them alone; any larger batch is plain BatchNorm."""
    torch.manual_seed(2)
    bn = randomise(torch.nn.Sequential(RoutedBatchNorm2d(4)))[0].train()
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    x = torch.randn(1, 4, 1, 1)
    expected = (x - before[0].view(1, 4, 1, 1)) / torch.sqrt(before[1].view(1, 4, 1, 1) + bn.eps)
    expected = expected * bn.weight.view(1, 4, 1, 1) + bn.bias.view(1, 4, 1, 1)
    torch.testing.assert_close(bn(x), expected)
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2]
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.BatchNorm2d(4).train()(x)
    plain = torch.nn.BatchNorm2d(4)
    plain.load_state_dict(bn.state_dict())
    y = torch.randn(2, 4, 1, 1)
    torch.testing.assert_close(bn(y), plain.train()(y))
