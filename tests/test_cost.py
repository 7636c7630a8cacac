"""The cost model against hand counts, fvcore, and what really ran."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import dynviz
from dynviz.model.config import Direction, RoutingSpaceConfig
from dynviz.model.cost import cost_table, param_table
from dynviz.model.route import Route
from dynviz.model.zoo import load_spec

K, U, D = Direction.KEEP, Direction.UP, Direction.DOWN

# L=1, two scales, C=2, one class, 16x16 input: 1/4 is 4x4 (16 px), 1/8 is 2x2 (4 px).
MICRO = RoutingSpaceConfig(name="micro", num_layers=1, num_scales=2, base_channels=2, num_classes=1)


def test_hand_counted_macs_of_a_micro_space():
    t = cost_table(MICRO, (16, 16))
    # stem: conv1 9*3*2*64 + BN 2*2*64 + ReLU 128; sep1 at 8x8: 1152 + 256 + 256 + 128;
    # sep2 at 4x4: 288 + 64 + 64 + 32
    assert t.stem == 3456 + 256 + 128 + 1152 + 256 + 256 + 128 + 288 + 64 + 64 + 32 == 6080
    # cells: (2C^2 + 23C) * hw; the initial cell is not charged in the paper counting
    assert t.op[0, 0] == 0 and t.op[1, 0] == (8 + 46) * 16 and t.op[1, 1] == (32 + 92) * 4
    # gates: conv C*C/2*hw + BN 2*C/2*hw + ReLU C/2*hw + pool C/2*hw + conv C/2*g
    assert t.gate[1, 0] == 32 + 32 + 16 + 16 + 1 and t.gate[1, 1] == 32 + 16 + 8 + 8 + 2
    assert t.gate[0, 0] == 0
    # transforms of the initial cell: keep = ReLU; down = ReLU + conv + BN + ReLU at 1/8
    assert t.path[0, 0, K] == 32 and t.path[0, 0, D] == 32 + 32 + 32 + 16
    assert t.path[1, 0, K] == 0  # the last layer's keep is never charged
    # decoder: laterals (64 + 64 + 32) and (32 + 16 + 8), predictor 9*2*1*16
    assert t.decoder == 160 + 56 + 288
    assert t.total() == 6080 + 864 + 496 + 97 + 66 + 32 + 112 + 504 == 8251
    assert cost_table(MICRO.replace(gate="none"), (16, 16)).total() == 8251 - 97 - 66


def test_hand_counted_params_of_a_micro_space():
    p = param_table(MICRO)
    assert (p.stem, p.cells, p.transforms, p.gates, p.decoder) == (110, 224, 16, 29, 39)
    model = dynviz.build_model(MICRO)
    assert sum(x.numel() for x in model.parameters()) == p.total == 418
    fix = dynviz.build_model(MICRO.replace(gate="none"))
    assert sum(x.numel() for x in fix.parameters()) == param_table(fix.config).total == 389


def test_real_and_expected_cost_per_image():
    t = cost_table(MICRO, (16, 16))
    active = torch.zeros(1, 2, 2, 3, dtype=torch.bool)
    active[0, 0, 0, K] = active[0, 1, 0, K] = True
    # cell (1,1) gets nothing: no op, no gate, no decoder lateral at 1/8
    assert t.real(active, gates_ran=False).item() == 6080 + 864 + 32 + 160 + 288
    assert t.real(active).item() == 6080 + 864 + 32 + 160 + 288 + 97
    gates = torch.zeros(1, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        gates[0, 0, 0, K], gates[0, 0, 0, D] = 0.5, 0.25
        gates[0, 1, 0, K], gates[0, 1, 1, K] = 0.8, 0.6
    e = t.backbone_expected(gates)
    assert e.item() == pytest.approx(0.5 * 32 + 0.25 * 112 + 0.8 * 864 + 0.6 * 496)
    e.sum().backward()
    assert gates.grad[0, 1, 0, K] == 864 and gates.grad[0, 0, 0, D] == 112
    # with binary alphas the expected cost is the real cost
    binary = Route.all_open(MICRO).mask().unsqueeze(0).double()
    assert t.expected(binary).item() == t.real(binary.bool()).item() == t.total()


def test_pass_through_feeds_the_next_cell():
    cfg = RoutingSpaceConfig(name="t", num_layers=3, num_scales=2, base_channels=4)
    t = cost_table(cfg, (32, 32))
    active = torch.zeros(1, 4, 2, 3, dtype=torch.bool)
    active[0, 0, 0, K] = True  # (1,0) gets input but closes everything: X passes through
    active[0, 2, 0, K] = active[0, 3, 0, K] = True
    real = t.real(active).item()
    expected = (
        t.stem
        + t.gate[1, 0]
        + t.gate[2, 0]
        + t.gate[3, 0]
        + t.path[0, 0, K]
        + t.op[2, 0]
        + t.path[2, 0, K]
        + t.op[3, 0]
        + t.decoder_lateral[0]
        + t.decoder_fixed
    )
    assert real == pytest.approx(float(expected))


@pytest.mark.parametrize("gate", ["full", "small"])
def test_fvcore_agrees_on_every_conv(tiny, gate):
    from fvcore.nn import FlopCountAnalysis

    cfg = tiny.replace(gate=gate)
    model = dynviz.build_model(cfg).eval()

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return self.net(x, skip=False).logits  # soft form: every conv runs

    analysis = FlopCountAnalysis(Logits(), torch.randn(1, 3, 64, 96))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    measured = {
        name.removeprefix("net."): ops["conv"]
        for name, ops in analysis.by_module_and_operator().items()
        if name.startswith("net.")
        and ops.get("conv")
        and isinstance(model.get_submodule(name.removeprefix("net.")), torch.nn.Conv2d)
    }
    table = cost_table(cfg, (64, 96), counting="complete").by_module(op="conv")
    assert measured == table
    assert len(measured) == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def test_real_cost_equals_what_ran(tiny):
    """FlopCounterMode (2 FLOPs per MAC, convs only) on the skipping forward."""
    model = dynviz.build_model(tiny).eval()
    route = Route.from_chains(tiny, [[4, 8, 16, 8, 4], [4, 4, 4, 4, 4]])
    x = torch.randn(1, 3, 64, 64)
    with FlopCounterMode(display=False) as counter:
        out = model(x, route=route)
    conv_macs = counter.get_total_flops() // 2
    table = cost_table(tiny, (64, 64), counting="complete")
    ran = route.mask()
    # both chains end at 1/4: only the 1/4 lateral and the predictor run in the decoder
    expected = sum(
        i.macs
        for i in table.items
        if i.op == "conv"
        and (
            i.component == "stem"
            or i.module in ("decoder.lateral.0.conv", "decoder.predictor")
            or (i.component == "cell" and (i.layer, i.scale) in route.cells)
            or (i.component == "transform" and bool(ran[i.layer, i.scale, int(i.direction)]))
        )
    )
    assert conv_macs == expected
    assert torch.equal(out.active[0], ran)


def test_official_totals_at_1024x2048():
    layer16 = cost_table(load_spec("layer16"))
    assert layer16.total() / 1e9 == pytest.approx(119.49, abs=0.01)
    assert layer16.stem / 1e6 == pytest.approx(4194.3, abs=0.1)
    assert layer16.decoder / 1e6 == pytest.approx(2812.8, abs=0.1)
    assert layer16.backbone_all_open() / 1e6 == pytest.approx(95614.9, abs=0.1)
    assert cost_table(load_spec("layer16-fix")).total() / 1e9 == pytest.approx(102.62, abs=0.01)
    assert cost_table(load_spec("dynamic-a")).total() / 1e9 == pytest.approx(103.68, abs=0.01)
    assert cost_table(load_spec("layer33")).total() / 1e9 == pytest.approx(246.0, abs=0.05)
    # the budget normaliser at the 768x768 training crop (official FLOPS_ALL is 26300)
    assert cost_table(load_spec("layer16"), (768, 768)).backbone_all_open() / 1e6 == pytest.approx(
        26891.7, abs=0.1
    )
    # per-component table of official_repo.md section 5.1 (MMACs)
    assert layer16.op[5, 0] / 1e6 == pytest.approx(1266.7, abs=0.1)
    assert layer16.path[5, 1, U] / 1e6 == pytest.approx(278.9, abs=0.1)
    assert layer16.path[5, 0, D] / 1e6 == pytest.approx(289.4, abs=0.1)
    assert layer16.gate[5, 3] / 1e6 == pytest.approx(270.5, abs=0.1)
    small = cost_table(load_spec("dynamic-a"))
    assert small.gate[5, 0] / 1e6 == pytest.approx(17.8, abs=0.1)


def test_complete_counting_charges_more():
    for name in ("layer16", "layer16-fix", "fcn32s"):
        spec = load_spec(name)
        route = spec if isinstance(spec, Route) else None
        space = spec.space if route else spec
        paper = cost_table(space, route=route)
        complete = cost_table(space, route=route, counting="complete")
        assert complete.total() > paper.total()
        assert complete.by_module(op="conv") != paper.by_module(op="conv")  # initial cell
