"""Behaviour of the routing network: forced routes, real skipping, per-sample routes."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
import torch
from _models import FLOAT64_REL, assert_close_to_scale, randomise

import dynviz
from dynviz.model.config import Direction
from dynviz.model.route import Route, RouteError


def _count_calls(model: torch.nn.Module) -> Counter:
    calls: Counter = Counter()
    for name, module in model.named_modules():
        if name.count(".") == 2 and name.startswith("cells.") or name.endswith(".gate"):
            module.register_forward_hook(lambda m, i, o, name=name: calls.update([name]))
    return calls


def test_parameter_counts_match_the_paper():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(dynviz.build_model("layer16")) == 17_784_968
    assert count(dynviz.build_model("dynamic-a")) == 17_784_968
    assert count(dynviz.build_model("layer16-fix")) == 15_261_843


def test_gates_start_about_ninety_percent_open(tiny, images):
    model = dynviz.build_model(tiny).train()
    with torch.no_grad():
        out = model(torch.randn(8, 3, 64, 64))
    alpha = out.gates[out.route_mask.expand_as(out.gates)]
    # tanh(1.5) = 0.905, spread by the gate's kaiming-initialised last conv
    assert 0.7 < float(alpha.mean()) < 1.0
    assert out.logits.shape == (8, 4, 64, 64)


def test_skip_mode_equals_soft_mode(tiny, images):
    """Real skipping computes the same function as the soft (masked) form, Eqs. 5-6."""
    model = dynviz.build_model(tiny).eval().double()
    randomise(model, gate_bias=(-1.5, 1.0))
    x = torch.randn(6, 3, 32, 64, dtype=torch.float64)
    soft = model(x, skip=False)
    hard = model(x)
    closed = (soft.gates == 0) & soft.route_mask
    assert closed.any() and (soft.gates > 0).any()  # some paths closed, some open
    torch.testing.assert_close(hard.gates, soft.gates)
    assert_close_to_scale(hard.logits, soft.logits, rel=FLOAT64_REL)


def test_static_net_equals_dynamic_forced_to_its_route(tiny, images):
    route = Route.from_chains(tiny, [[4, 8, 16, 8, 4], [4, 4, 4, 4, 4]])
    dynamic = dynviz.build_model(tiny).eval()
    randomise(dynamic)
    static = dynviz.build_model(tiny, route=route).eval()
    missing, unexpected = static.load_state_dict(dynamic.state_dict(), strict=False)
    assert missing == [] and any(".gate." in k for k in unexpected)
    forced = dynamic(images, route=route)
    assert_close_to_scale(static(images).logits, forced.logits)
    torch.testing.assert_close(forced.gates, route.mask().float().expand_as(forced.gates))
    assert sum(p.numel() for p in static.parameters()) < sum(
        p.numel() for p in dynamic.parameters()
    )


def test_closed_cells_and_paths_are_never_called(tiny, images):
    route = Route.from_chains(tiny, [[4, 8, 16, 16, 16]])
    model = dynviz.build_model(tiny).eval()
    calls = _count_calls(model)
    model(images, route=route)
    ran_ops = {k.split(".")[1] for k in calls if k.endswith(".op")}
    assert ran_ops == {f"{layer}_{s}" for layer, s in route.cells}
    assert {k for k in calls if k.endswith((".up", ".down"))} == {
        "cells.0_0.down",
        "cells.1_1.down",
    }
    assert not any(k.endswith(".gate") for k in calls)  # forced: gates are not evaluated
    # a dynamic forward with every gate closed except the initial cell's keep chain
    calls.clear()
    for name, cell in model.cells.items():
        bias = torch.full_like(cell.gate.conv2.bias, -20.0)
        if name in {"0_0", "1_0", "2_0", "3_0", "4_0"}:
            bias[0] = 20.0  # keep open
        cell.gate.conv2.bias.data.copy_(bias)
    out = model(images)
    assert {k.split(".")[1] for k in calls if k.endswith(".op")} == {
        "0_0",
        "1_0",
        "2_0",
        "3_0",
        "4_0",
    }
    assert not any(k.endswith((".up", ".down")) for k in calls)
    # gates ran only where input arrived
    assert {k.split(".")[1] for k in calls if k.endswith(".gate")} == {
        "0_0",
        "1_0",
        "2_0",
        "3_0",
        "4_0",
    }
    assert int(out.active.sum()) == 10  # 5 keeps per sample


def test_cell_with_all_paths_closed_passes_input_through(tiny, images):
    model = dynviz.build_model(tiny).eval()
    randomise(model)
    model.cells["2_0"].gate.conv2.bias.data.fill_(-50.0)
    calls = _count_calls(model)
    out = model(images)
    assert "cells.2_0.op" not in calls and "cells.2_0.gate" in calls
    assert (out.gates[:, 2, 0] == 0).all()
    assert_close_to_scale(out.logits, model(images, skip=False).logits)


def test_per_sample_routes_match_single_image_runs(tiny):
    model = dynviz.build_model(tiny).eval().double()
    randomise(model)
    routes = [
        Route.from_chains(tiny, [[4, 8, 16, 32, 32]]),
        Route.all_open(tiny),
        Route.from_chains(tiny, [[4, 4, 4, 4, 4], [4, 8, 8, 8, 8]]),
        Route.from_chains(tiny, [[4, 8, 16, 8, 4]]),
    ]
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    batch = model(x, route=routes)
    for i, r in enumerate(routes):
        single = model(x[i : i + 1], route=r)
        assert_close_to_scale(batch.logits[i : i + 1], single.logits, rel=FLOAT64_REL)
        torch.testing.assert_close(batch.gates[i : i + 1], single.gates)


def test_per_sample_gates_match_single_image_runs(tiny):
    model = dynviz.build_model(tiny).eval().double()
    randomise(model, gate_bias=(-1.0, 1.0))
    x = torch.randn(5, 3, 32, 32, dtype=torch.float64) * torch.linspace(0.2, 3, 5).view(5, 1, 1, 1)
    batch = model(x)
    assert len({tuple(a.flatten().gt(0).tolist()) for a in batch.gates}) > 1  # routes differ
    for i in range(5):
        single = model(x[i : i + 1])
        assert_close_to_scale(batch.logits[i : i + 1], single.logits, rel=FLOAT64_REL)


def test_input_not_multiple_of_32_is_padded_and_cropped(tiny):
    model = dynviz.build_model(tiny).eval()
    x = torch.randn(1, 3, 50, 70)
    out = model(x)
    assert out.logits.shape == (1, 4, 50, 70)
    padded = torch.nn.functional.pad(x, (0, 26, 0, 14))
    assert_close_to_scale(model(padded).logits[..., :50, :70], out.logits)


def test_soft_mode_is_differentiable_through_gates(tiny, images):
    model = dynviz.build_model(tiny).train()
    out = model(images)
    (out.logits.square().mean() + out.gates.sum()).backward()
    grads = [c.gate.conv2.weight.grad for c in model.cells.values()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_small_gate_reads_quarter_resolution(tiny):
    model = dynviz.build_model(tiny.replace(gate="small")).eval()
    seen = []
    model.cells["1_0"].gate.conv1.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    model(torch.randn(1, 3, 64, 64))
    assert seen == [torch.Size([1, 8, 4, 4])]  # 1/4 of 64 is 16, resized by 0.25


def test_forced_route_from_another_space_is_rejected(tiny, images):
    model = dynviz.build_model(tiny).eval()
    other = Route.all_open(tiny.replace(num_layers=3))
    with pytest.raises(RouteError, match="L=3"):
        model(images, route=other)
    static = dynviz.build_model(tiny, route=Route.from_chains(tiny, [[4, 4, 4, 4, 4]]))
    with pytest.raises(RouteError, match="does not have"):
        static.eval()(images, route=Route.all_open(tiny))


def test_fix_network_runs_every_path(tiny, images):
    model = dynviz.build_model(tiny.replace(gate="none")).eval()
    out = model(images)
    assert torch.equal(out.active, out.route_mask.expand_as(out.active))
    assert not any(c.gate is not None for c in model.cells.values())


def test_model_package_imports_torch_only():
    code = (
        "import sys, dynviz.model, dynviz.model.cost\n"
        "bad = {'pandas', 'matplotlib', 'networkx', 'streamlit', 'plotly', 'pyarrow'}\n"
        "print(sorted(bad & set(m.split('.')[0] for m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_direction_order_is_the_official_gate_order():
    assert [d.name for d in Direction] == ["KEEP", "UP", "DOWN"]
