"""The contract every preset of the zoo keeps.

For each preset: it builds; a training forward and backward give every parameter a finite,
non-zero gradient (except the decoder laterals coarser than a static route ever reaches, which
the architecture keeps and Table 1 counts); the static network of a route computes exactly what
the dynamic network forced onto that route computes; and the cost table charges exactly what ran
(each convolution that ran costs what the table says, and the table's real cost is the sum over
what ran).

Routing-space presets run with at most 4 layers here (their gates, scales, widths and semantics
kept); their full depth is the ``slow`` variant. Route presets (the special cases) run at full
size: their routes are drawn in Layer16.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import dynviz
from dynviz.model import Direction, Route, RoutingSpaceConfig
from dynviz.model.cost import cost_table, propagate
from dynviz.model.zoo import load_spec, preset_names

SIZE = (32, 64)  # the smallest input of every preset (stride 32), not square
CLASSES = 3
PRESETS = preset_names()
SPACES = [n for n in PRESETS if isinstance(load_spec(n), RoutingSpaceConfig)]
ROUTES = [n for n in PRESETS if isinstance(load_spec(n), Route)]


def _spec(name: str, *, full: bool) -> RoutingSpaceConfig | Route:
    spec = load_spec(name)
    if isinstance(spec, Route) or full:
        return spec
    return spec.replace(num_layers=min(spec.num_layers, 4))


def _chain_route(config: RoutingSpaceConfig) -> Route:
    """Two chains: one down to the coarsest scale and back up, one along 1/4 (every kind of
    transform, and a skipped cell or two)."""
    top = config.num_scales - 1
    down = [min(layer, top) for layer in range(config.num_layers + 1)]
    back = [max(0, min(s, config.num_layers - layer)) for layer, s in enumerate(down)]
    strides = [[config.stride(s) for s in back], [config.stride(0)] * (config.num_layers + 1)]
    return Route.from_chains(config, strides, name="two-chains")


def _randomised(model: nn.Module, seed: int) -> nn.Module:
    """BN statistics and gate biases that make outputs and routes differ between images."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        for cell in getattr(model, "cells", {}).values():
            gate = getattr(cell, "gate", None)
            if gate is not None:
                gate.conv2.bias.copy_(torch.rand(gate.conv2.bias.shape, generator=g) * 2 - 0.5)
    return model


def _unused_laterals(model) -> set[str]:
    """Decoder laterals coarser than every last-layer cell of a static route."""
    if model.route is None:
        return set()
    last = model.config.num_layers
    coarsest = max(s for layer, s in model.route.cells if layer == last)
    return {
        name
        for name, _ in model.named_parameters()
        if name.startswith("decoder.lateral.") and int(name.split(".")[2]) > coarsest
    }


def _check_build_and_gradients(spec) -> None:
    torch.manual_seed(0)
    model = dynviz.build_model(spec, num_classes=CLASSES).train()
    out = model(torch.randn(2, 3, *SIZE))
    assert out.logits.shape == (2, CLASSES, *SIZE)
    assert torch.isfinite(out.logits).all()
    loss = out.logits.square().mean() + out.gates.sum()
    loss.backward()
    missing = {n for n, p in model.named_parameters() if p.grad is None}
    assert missing == _unused_laterals(model)
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name
    from dynviz.train.trainer import find_unused_parameters

    assert set(find_unused_parameters(model)) == missing


def _check_static_equals_forced(spec) -> None:
    route = spec if isinstance(spec, Route) else _chain_route(spec)
    torch.manual_seed(1)
    static = _randomised(dynviz.build_model(route, num_classes=CLASSES), 1).eval()
    dynamic = dynviz.build_model(route.space, num_classes=CLASSES).eval()
    result = dynamic.load_state_dict(static.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert static.route is not None and static.route.paths == route.paths
    x = torch.randn(2, 3, *SIZE)
    with torch.inference_mode():
        want = dynamic(x, route=route)
        got = static(x)
    scale = float(want.logits.abs().max())
    assert float((got.logits - want.logits).abs().max()) <= 1e-5 * scale
    assert torch.equal(got.active, want.active)
    assert torch.equal(got.active[0], route.mask())


def _conv_macs_by_module(model: nn.Module, run) -> tuple[dict[str, int], int, object]:
    """Run ``run()`` with a hook on every convolution; ``(MACs per conv module, total conv
    MACs that FlopCounterMode saw, run's result)``."""
    measured: dict[str, int] = defaultdict(int)
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):

            def hook(module, args, output, name=name):  # noqa: ANN001 - a forward hook
                k = module.kernel_size[0] * module.kernel_size[1]
                measured[name] += output.numel() * (module.in_channels // module.groups) * k

            handles.append(m.register_forward_hook(hook))
    try:
        with FlopCounterMode(display=False) as counter:
            result = run()
    finally:
        for handle in handles:
            handle.remove()
    return dict(measured), counter.get_total_flops() // 2, result


def _check_cost_table_equals_what_ran(spec, route: Route | None) -> None:
    torch.manual_seed(2)
    model = _randomised(dynviz.build_model(spec, num_classes=CLASSES), 2).eval()
    config = model.config
    x = torch.randn(1, 3, *SIZE)
    with torch.inference_mode():
        measured, counted, out = _conv_macs_by_module(model, lambda: model(x, route=route))
    gates_ran = model.is_dynamic and route is None
    # every convolution that ran costs what the (complete) table says, once
    complete = cost_table(config, SIZE, counting="complete", route=model.route)
    table_conv = complete.by_module(op="conv")
    assert {m: table_conv.get(m) for m in measured} == measured
    assert sum(measured.values()) == counted  # no convolution ran outside a module
    # which cells, transforms, gates and laterals ran, as the skipping forward saw it ...
    has, on, _ = propagate(config, out.active)
    ran = set(measured)
    for item in complete.items:
        if item.op != "conv" or item.layer == 0 and item.component == "cell":
            continue
        if item.component == "cell":
            assert (item.module in ran) == bool(on[0, item.layer, item.scale]), item
        elif item.component == "gate":
            assert (item.module in ran) == (gates_ran and bool(has[0, item.layer, item.scale]))
        elif item.component == "transform":
            path = (0, item.layer, item.scale, int(item.direction))
            assert (item.module in ran) == bool(out.active[path]), item

    # ... and the table's real cost (paper counting) is the sum over what ran
    def key(item) -> tuple:  # noqa: ANN001 - a CostItem
        if item.component == "decoder":
            parts = item.module.split(".")
            return ("decoder", parts[1], int(parts[2]) if parts[1] == "lateral" else None)
        direction = None if item.direction is None else int(item.direction)
        return (item.component, item.layer, item.scale, direction)

    seen = {key(item) for item in complete.items if item.op == "conv" and item.module in ran}
    paper = cost_table(config, SIZE, route=model.route)
    charged = 0
    for item in paper.items:
        k = key(item)
        if item.component == "stem" or k == ("decoder", "predictor", None):
            runs = True
        elif item.component == "transform" and item.direction is Direction.KEEP:
            runs = bool(out.active[0, item.layer, item.scale, int(item.direction)])
        else:  # a cell, gate, up/down transform or lateral runs with its convolution
            runs = k in seen
        charged += item.macs if runs else 0
    real = float(paper.real(out.active, gates_ran=gates_ran)[0])
    assert real == charged


def _contract(name: str, *, full: bool) -> None:
    spec = _spec(name, full=full)
    _check_build_and_gradients(spec)
    _check_static_equals_forced(spec)
    if isinstance(spec, Route):
        _check_cost_table_equals_what_ran(spec, None)  # the static network
        _check_cost_table_equals_what_ran(spec.space, spec)  # the dynamic one, forced
    else:
        _check_cost_table_equals_what_ran(spec, None)  # the gates choose
        _check_cost_table_equals_what_ran(spec, _chain_route(spec))


@pytest.mark.parametrize("name", PRESETS)
def test_preset_contract(name):
    _contract(name, full=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", SPACES)
def test_preset_contract_at_full_depth(name):
    _contract(name, full=True)


def test_the_contract_covers_the_zoo():
    assert set(SPACES) | set(ROUTES) == set(PRESETS)
    assert {"layer16", "layer33", "fcn32s", "unet"} <= set(PRESETS)
