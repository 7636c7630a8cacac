"""The flop check: an independent counter (fvcore's FlopCountAnalysis, torch's FlopCounterMode)
on the executed network beside the analytic MACs of what ran; hand counts of tiny networks,
agreement on dynamic routes, and ``dynviz flops --check`` / ``dynviz eval --check-flops``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import dynviz
from dynviz.cli import main as cli
from dynviz.errors import MissingExtraError
from dynviz.model.config import RoutingSpaceConfig
from dynviz.model.cost import cost_table
from dynviz.model.flopcheck import (
    FlopCheckError,
    FlopCounter,
    check_flops,
    component_of,
    executed_items,
    resolve_counter,
)
from dynviz.model.route import Route

# L=1, two scales, C=2 (4 at 1/8), one class; at 16x16 the 1/4 map is 4x4 (16 px), 1/2 is 8x8.
MICRO = RoutingSpaceConfig(name="micro", num_layers=1, num_scales=2, base_channels=2, num_classes=1)
COUNTERS = ["fvcore", "torch"]


@pytest.fixture(params=COUNTERS)
def counter(request) -> str:
    if request.param == "fvcore":
        pytest.importorskip("fvcore")
    return request.param


def _ops(check, source: str) -> dict[str, int]:
    get = check.analytic_by if source == "analytic" else check.counted_by
    return {op: get(op=op) for op in check.compared}


def test_a_static_micro_network_by_hand(counter):
    """Route (0,0) keep -> (1,0) keep -> decoder, at 16x16.

    conv: stem 9*3*2*64 + (9*2*64 + 4*64) + (9*2*16 + 4*16) = 5216; two cell operations
    (the initial one is run and counted) 2 * (288 + 64 + 288 + 64) = 1408; decoder lateral
    1x1 2->2 at 16 px = 64 and predictor 3x3 2->1 at 16 px = 288: 6976.
    batch norm (2 per element): stem 256 + 256 + 64, cells 4 * 64, lateral 64: 896.
    interpolation (4 per output element): the final x4 upsampling 4 * 1 * 256 = 1024.
    """
    model = dynviz.build_model(Route.from_chains(MICRO, [[4, 4]])).eval()
    check = check_flops(model, torch.randn(3, 16, 16), counter=counter)
    hand = {"conv": 6976, "bn": 896, "interp": 1024, "pool": 0}
    expected = {op: hand[op] for op in check.compared}
    assert _ops(check, "analytic") == expected
    assert _ops(check, "counted") == expected
    assert check.kind == "static" and (check.active_paths, check.total_paths) == (2, 2)
    if counter == "fvcore":
        assert check.compared == ("conv", "bn", "interp", "pool")
        by_component = {c: check.counted_by(component=c) for c in check.components}
        assert by_component.pop("transform") == 0  # keep transforms: ReLUs only
        assert by_component == {"stem": 5216 + 576, "cell": 1408 + 256, "decoder": 352 + 64 + 1024}
    else:
        assert check.compared == ("conv",)
        assert check.uncounted["bn"] == 896 and check.uncounted["interp"] == 1024
    assert check.relative == 0.0


def test_a_dynamic_micro_network_by_hand_counts_a_closed_cells_gate(counter):
    """The gates forced: (0,0) opens keep only, (1,0) receives it and closes its one path (the
    input passes through to the decoder), (1,1) receives nothing.

    conv: stem 5216, the initial cell's operation 704 (not (1,0)'s: no open path), gates
    (0,0) 2*1*16 + 1*2 = 34 and (1,0) 32 + 1*1 = 33 (its alpha closed everything; its conv
    still ran), lateral 64, predictor 288: 6339. batch norm: stem 576, one cell 128, two gates
    2 * 32, lateral 64: 832. pooling: two gates' 16 inputs each: 32. interpolation: 1024.
    """
    torch.manual_seed(0)
    model = dynviz.build_model(MICRO).eval()
    with torch.no_grad():
        for key, bias in (("0_0", [3.0, -3.0]), ("1_0", [-3.0])):
            conv2 = model.cells[key].gate.conv2
            conv2.weight.zero_()
            conv2.bias.copy_(torch.tensor(bias))
    check = check_flops(model, torch.randn(1, 3, 16, 16), counter=counter)
    hand = {"conv": 6339, "bn": 832, "interp": 1024, "pool": 32}
    expected = {op: hand[op] for op in check.compared}
    assert _ops(check, "analytic") == expected
    assert _ops(check, "counted") == expected
    assert check.kind == "dynamic" and (check.active_paths, check.total_paths) == (1, 4)
    assert check.counted_by(component="gate", op="conv") == 67


@pytest.mark.parametrize("gate", ["full", "small"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_counters_agree_on_dynamic_routes(tiny, gate, seed, counter):
    """Untrained networks of three seeds take different routes; each image's executed network
    costs what the analytic table says, component by component and operator by operator
    (small gates: their 0.25 bilinear resize too)."""
    torch.manual_seed(seed)
    model = dynviz.build_model(tiny.replace(gate=gate)).eval()
    image = torch.randn(3, 50, 70)  # padded to 64x96 inside
    check = check_flops(model, image, counter=counter)
    for component in check.components:
        assert check.counted_by(component=component) == check.analytic_by(component=component)
    assert _ops(check, "counted") == _ops(check, "analytic")
    assert check.counted_by() > 0 and check.size == (50, 70)
    assert 0 < check.active_paths <= check.total_paths


def test_the_routes_differ_and_executed_items_sum_to_the_real_cost(tiny):
    """The executed items are what ``CostTable.real`` charges (complete counting), and the
    seeds above do take different routes (so agreement is not one route checked thrice)."""
    table = cost_table(tiny, (64, 96), counting="complete")
    routes = set()
    for seed in range(3):
        torch.manual_seed(seed)
        model = dynviz.build_model(tiny).eval()
        with torch.no_grad():
            active = model(torch.randn(1, 3, 50, 70)).active[0]
        routes.add(tuple(active.flatten().tolist()))
        items = executed_items(table, active, gates_ran=True)
        total = sum(sum(ops.values()) for ops in items.values())
        assert total == pytest.approx(float(table.real(active[None])[0]))
    assert len(routes) == 3


def test_a_preset_static_network_agrees(counter):
    model = dynviz.build_model("fcn32s").eval()
    check = check_flops(model, torch.randn(3, 64, 128), counter=counter)
    assert check.kind == "static" and check.active_paths == check.total_paths
    assert _ops(check, "counted") == _ops(check, "analytic") and check.analytic_by(op="conv") > 0


def test_bad_input_is_refused(tiny, monkeypatch):
    model = dynviz.build_model(tiny).eval()
    with pytest.raises(FlopCheckError, match=r"one \(1, 3, H, W\) image.*\(2, 3, 32, 32\)"):
        check_flops(model, torch.randn(2, 3, 32, 32))
    with pytest.raises(FlopCheckError, match="'ptflops' is not one of auto, fvcore, torch"):
        check_flops(model, torch.randn(3, 32, 32), counter="ptflops")
    monkeypatch.setitem(__import__("sys").modules, "fvcore", None)
    monkeypatch.setitem(__import__("sys").modules, "fvcore.nn", None)
    with pytest.raises(MissingExtraError, match=r"dynviz\[flops\]"):
        resolve_counter("fvcore")


def test_auto_takes_fvcore_when_installed_else_torch(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert resolve_counter("auto") is FlopCounter.TORCH
    monkeypatch.setattr(importlib.util, "find_spec", real)
    if real("fvcore") is not None:
        assert resolve_counter(FlopCounter.AUTO) is FlopCounter.FVCORE


def test_component_of_module_names():
    assert component_of("stem.sep1.dw") == "stem"
    assert component_of("cells.3_1.op.pw1") == "cell"
    assert component_of("cells.3_1.gate.conv1") == "gate"
    assert component_of("cells.3_1.gate") == "gate"
    assert component_of("cells.3_1.up.conv") == "transform"
    assert component_of("cells.3_1.down") == "transform"
    assert component_of("cells.3_1") == "node"
    assert component_of("decoder.lateral.2.conv") == "decoder"
    assert component_of("somewhere") == "other"


# ------------------------------------------------------------------------------- the CLI
def test_flops_check_of_a_static_preset(capsys):
    pytest.importorskip("fvcore")
    code = cli(["flops", "fcn32s", "--check", "--size", "64", "128"])
    out = capsys.readouterr().out
    assert code == 0
    assert "fcn32s (static) at 64x128" in out  # the analytic table, then the check beside it
    assert "check: fvcore FlopCountAnalysis on the executed network" in out
    total = [line for line in out.splitlines() if line.startswith("total ")][-1]
    assert total.split()[-1] == "0"
    for name in ("convolution", "batch norm", "interpolation"):
        row = next(line for line in out.splitlines() if line.startswith(name))
        assert row.split()[-1] == "0", row
    assert "not counted by fvcore" in out and "ReLU" in out


def test_flops_check_of_a_dynamic_network_on_an_image(capsys, tmp_path):
    image = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 72, 3), np.uint8)).save(image)
    argv = ["flops", "tiny", "--check", "--image", str(image), "--counter", "torch", "--json"]
    assert cli(argv) == 0
    data = json.loads(capsys.readouterr().out)
    check = data["check"]
    assert data["size"] == [40, 72] and check["size"] == [40, 72]  # the image's own size
    assert check["counter"] == "torch" and check["agree"] and check["image"] == str(image)
    assert check["kind"] == "dynamic" and 0 < check["active_paths"] <= check["total_paths"]
    assert check["counted_macs"] == check["analytic_macs"] > 0
    # with --size the image is resized
    assert cli([*argv[:-1], "--size", "64", "64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["check"]["size"] == [64, 64]
    # a dynamic network needs the image; --image needs --check
    assert cli(["flops", "tiny", "--check"]) == 2
    assert "--image IMAGE" in capsys.readouterr().err
    assert cli(["flops", "tiny", "--image", str(image)]) == 2
    assert "add --check" in capsys.readouterr().err


def test_eval_check_flops_on_n_images(capsys, tmp_path):
    from dynviz.model.checkpoint import make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = dynviz.build_model("tiny", num_classes=4).eval()
    ckpt = save_checkpoint(tmp_path / "c.pt", make_checkpoint(model, rng=False))
    data = "synthetic:count=3,size=64x64,classes=4,seed=0"
    argv = ["eval", str(ckpt), "--data", data, "--check-flops", "2", "--threads", "1"]
    assert cli([*argv, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    checks = payload["check_flops"]
    assert payload["check_flops"]["agree"] and len(checks["images"]) == 2
    assert [c["image_id"] for c in checks["images"]] == ["val_000000", "val_000001"]
    assert all(c["counted_macs"] == c["analytic_macs"] > 0 for c in checks["images"])
    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert "flops check:" in out and out.count("val_0000") == 2
