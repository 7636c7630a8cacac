"""The dynamic network's inference form (issue 26): BatchNorm folded into every conv (cells,
transforms, gates, stem, decoder) and the folded blocks run as fused oneDNN kernels. The outputs
equal the unfolded network's within 1e-5 of max |logit|, and every image takes the same route."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dynviz.inference.folding import count_batchnorm, fold_batchnorm
from dynviz.model import Route, RoutingSpaceConfig, build_model
from dynviz.model import fused as kernels

SPACES = [
    pytest.param(dict(gate="full"), id="full-gates"),
    pytest.param(dict(gate="small"), id="small-gates"),
    pytest.param(dict(gate="full", semantics="official"), id="official"),
    pytest.param(dict(gate="full", active_threshold=0.3), id="threshold-0.3"),
    pytest.param(dict(gate="none"), id="no-gates"),
]


def _trained_like(config: RoutingSpaceConfig) -> nn.Module:
    """A network whose BatchNorms carry non-trivial statistics and affine parameters (as after
    training), and whose gates open some paths and close others."""
    net = build_model(config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                m.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=generator))
                m.bias.copy_(0.1 * torch.randn(n, generator=generator))
        for name, p in net.named_parameters():
            if name.endswith("gate.conv2.bias"):  # near the closing edge: images disagree
                edge = math.atanh(config.active_threshold)  # alpha = tanh(G) at the threshold
                p.copy_(edge + 0.05 * torch.randn(p.shape, generator=generator))
            elif name.endswith("gate.conv2.weight"):
                p.mul_(4.0)
    return net.eval()


@pytest.mark.parametrize("options", SPACES)
def test_folded_network_gives_the_same_logits_and_routes(options):
    config = RoutingSpaceConfig(
        name="t", num_layers=4, num_scales=3, base_channels=8, num_classes=3, **options
    )
    net = _trained_like(config)
    folded = fold_batchnorm(net)
    assert count_batchnorm(folded) == 0 and count_batchnorm(net) > 0
    x = torch.randn(3, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        ref, out = net(x), folded(x)
    scale = float(ref.logits.abs().max())
    assert float((out.logits - ref.logits).abs().max()) <= 1e-5 * scale
    assert torch.equal(out.active, ref.active)  # the same paths for every image
    assert float((out.gate_alpha - ref.gate_alpha).abs().max()) <= 1e-5
    if config.has_gates:
        routes = {tuple(a.flatten().tolist()) for a in ref.active}
        assert len(routes) > 1 or config.official  # the images took different routes


def test_folded_network_forced_to_a_route_equals_the_static_network():
    from dynviz.inference.static import static_network

    config = RoutingSpaceConfig(name="t", num_layers=4, num_scales=3, base_channels=8)
    net = _trained_like(config)
    route = Route.from_chains(config, [[4, 4, 8, 16, 8], [4, 8, 8, 8, 8]])
    folded = fold_batchnorm(net)
    static = static_network(net, route)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        dyn, ref = folded(x, route=route).logits, static(x)
    assert float((dyn - ref).abs().max()) <= 1e-5 * float(ref.abs().max())


def test_the_folded_dynamic_network_runs_the_fused_kernels(monkeypatch):
    if not kernels.available():
        pytest.skip("no fused oneDNN convolutions in this torch build")
    config = RoutingSpaceConfig(name="t", num_layers=3, num_scales=3, base_channels=8)
    net = _trained_like(config)
    folded = fold_batchnorm(net)
    calls: list[int] = []
    conv, add = kernels.conv, kernels.conv_add_relu
    monkeypatch.setattr(kernels, "conv", lambda *a, **k: calls.append(1) or conv(*a, **k))
    monkeypatch.setattr(kernels, "conv_add_relu", lambda *a, **k: calls.append(2) or add(*a, **k))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        out = folded(x)
    cells = int(out.active[0].any(-1).sum())
    assert calls.count(2) == cells  # each cell that ran: its residual add and ReLU fused
    assert calls.count(1) > 3 * cells  # and its other convs, the gates, stem and decoder
    calls.clear()
    with torch.inference_mode():
        net(x)  # not folded: plain ops
    x.requires_grad_(True)
    folded(x)  # autograd: plain ops
    assert calls == []


@pytest.mark.parametrize("semantics", ["paper", "official"])
def test_one_forced_route_runs_as_a_straight_line_with_the_skip_forward_s_outputs(semantics):
    """A :class:`Route` forced on every sample takes the straight-line runner
    (:func:`dynviz.model.skip.forward_route`): no gathering or masks, the same outputs as the
    per-sample engine given the same route as a tensor, bit for bit."""
    from dynviz.model import skip

    config = RoutingSpaceConfig(
        name="t", num_layers=4, num_scales=3, base_channels=8, semantics=semantics
    )
    net = _trained_like(config)
    route = Route.from_chains(config, [[4, 4, 8, 16, 8], [4, 8, 8, 8, 8], [4, 4, 4, 8, 8]])
    x = torch.randn(2, 3, 64, 64)
    taken = []
    original = skip.run_plan
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(skip, "run_plan", lambda *a, **k: taken.append(1) or original(*a, **k))
        for grad in (False, True):
            with torch.set_grad_enabled(grad):
                line = net(x, route=route)
                per_sample = net(x, route=route.mask().float())  # a tensor: forward_skip
            assert torch.equal(line.logits, per_sample.logits)
            assert torch.equal(line.gates, per_sample.gates)
            assert torch.equal(line.gate_alpha, per_sample.gate_alpha)
    assert len(taken) == 2  # the Route, not the tensor, took the straight line


def test_inference_form_folds_a_copy_once():
    from dynviz.inference.folding import inference_form

    config = RoutingSpaceConfig(name="t", num_layers=2, num_scales=3, base_channels=8)
    net = _trained_like(config)
    folded = inference_form(net)
    assert folded is not net and count_batchnorm(net) > 0  # the trained network is untouched
    assert count_batchnorm(folded) == 0
    assert inference_form(folded) is folded  # already folded: no second copy


def test_record_batch_runs_the_folded_form_once_and_refolds_after_a_weight_change(tiny):
    """The explorer's uploads (record_batch) run the inference form, folded once per weights."""
    import dynviz
    from dynviz.inference.folding import count_batchnorm
    from dynviz.record import record_batch
    from dynviz.record.rows import folded_form

    torch.manual_seed(0)
    model = dynviz.build_model(tiny).eval()
    first = folded_form(model)
    assert count_batchnorm(first) == 0 and count_batchnorm(model) > 0
    assert folded_form(model) is first
    x = torch.randn(1, 3, 64, 64)
    batch = record_batch(model, x, image_ids=["a"])
    with torch.inference_mode():
        out = model(x)
    assert (batch.prediction[0] == out.logits.argmax(1)[0].numpy()).mean() > 0.999
    with torch.no_grad():
        next(model.parameters()).mul_(0.5)
    assert folded_form(model) is not first
