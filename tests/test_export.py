"""Static export: BN folding, the straight-line static module, ONNX, and ``dynviz export``."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from _models import FLOAT64_REL, assert_close_to_scale, randomise

import dynviz
from dynviz.cli import main as cli
from dynviz.inference.export import (
    ExportError,
    StaticNetwork,
    count_batchnorm,
    export_onnx,
    fold_batchnorm,
    static_network,
    transfer_to_route,
)
from dynviz.model.route import Route

ROUTE_CHAINS = [[4, 8, 16, 8, 4], [4, 4, 4, 4, 4]]


@pytest.fixture
def dynamic(tiny):
    return randomise(dynviz.build_model(tiny).eval().double(), spread=0.2)


@pytest.fixture
def route(tiny):
    return Route.from_chains(tiny, ROUTE_CHAINS, name="two-chains")


def test_fold_batchnorm_preserves_logits_and_gates(dynamic):
    x = torch.randn(2, 3, 32, 64, dtype=torch.float64)
    folded = fold_batchnorm(dynamic)
    assert count_batchnorm(dynamic) > 0 and count_batchnorm(folded) == 0
    with torch.no_grad():
        ref, out = dynamic(x), folded(x)
        soft = folded(x, skip=False)
    assert_close_to_scale(out.logits, ref.logits, rel=FLOAT64_REL)
    assert_close_to_scale(out.gates, ref.gates, rel=FLOAT64_REL)  # gates' BN too
    assert_close_to_scale(soft.logits, ref.logits, rel=FLOAT64_REL)
    # a copy: the original keeps its BN layers and parameter names
    assert any(name.endswith("op.bn1.running_mean") for name in dynamic.state_dict())
    assert folded.cells["1_0"].op.pw1.bias is not None


def test_fold_batchnorm_in_place_and_idempotent(dynamic):
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        ref = dynamic(x).logits
        same = fold_batchnorm(dynamic, inplace=True)
        again = fold_batchnorm(same, inplace=True)
        out = again(x).logits
    assert same is dynamic and again is dynamic
    assert_close_to_scale(out, ref, rel=FLOAT64_REL)


def test_static_module_equals_dynamic_forced_to_route(dynamic, route):
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    net = StaticNetwork(dynamic, route)
    gates_called = []
    for cell in dynamic.cells.values():
        cell.gate.register_forward_hook(lambda *args: gates_called.append(1))
    with torch.no_grad():
        forced = dynamic(x, route=route).logits
        plain = net(x)
    assert isinstance(plain, torch.Tensor)  # logits only
    assert_close_to_scale(plain, forced, rel=FLOAT64_REL)
    # shares the dynamic net's modules, holds only the route's cells, never runs a gate
    assert net.cells["1_1"] is dynamic.cells["1_1"]
    assert set(net.cells) == {f"{layer}_{scale}" for layer, scale in route.cells}
    assert not gates_called
    # static_network copies the route's weights into a gate-free network
    exported = static_network(dynamic, route)
    assert not any(".gate." in name for name, _ in exported.named_parameters())


def test_static_network_of_a_route_equals_the_built_static_net(dynamic, route):
    static = transfer_to_route(dynamic, route)
    assert static.is_static and static.route == route
    exported = static_network(dynamic, route)  # folded copy
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        ref = static(x).logits
        assert_close_to_scale(StaticNetwork(static)(x), ref, rel=FLOAT64_REL)
        assert_close_to_scale(exported(x), ref, rel=FLOAT64_REL)
    assert count_batchnorm(exported) == 0 and count_batchnorm(dynamic) > 0


def test_input_not_multiple_of_stride_is_padded_and_cropped(dynamic, route):
    x = torch.randn(1, 3, 50, 70, dtype=torch.float64)
    with torch.no_grad():
        out = StaticNetwork(dynamic, route)(x)
        ref = dynamic(x, route=route).logits
    assert out.shape == (1, 4, 50, 70)
    assert_close_to_scale(out, ref, rel=FLOAT64_REL)


def test_static_network_refuses_what_it_cannot_run(tiny, dynamic, route):
    with pytest.raises(ExportError, match="dynamic network"):
        StaticNetwork(dynamic)
    narrow = dynviz.build_model(tiny, route=Route.from_chains(tiny, [[4, 4, 4, 4, 4]]))
    with pytest.raises(ExportError, match="does not have"):
        StaticNetwork(narrow, route)
    with pytest.raises(ExportError, match="lacks weights"):
        transfer_to_route(narrow, route)
    other = Route.all_open(tiny.replace(num_layers=3))
    with pytest.raises(ExportError, match="L=3"):
        StaticNetwork(dynamic, other)


def _onnx_dims(path) -> list[int | str]:
    import onnx

    (images,) = onnx.load(str(path)).graph.input
    return [d.dim_param or d.dim_value for d in images.type.tensor_type.shape.dim]


def _onnx_logits(session, x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])


def test_onnx_export_any_size_gives_the_pytorch_logits(tmp_path, dynamic, route):
    pytest.importorskip("onnxscript")
    from dynviz.inference.export import onnx_session

    net = static_network(dynamic.float(), route)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export_onnx(net, tmp_path / "net.onnx")
    # the current exporter: no deprecation of the TorchScript one (nor any other)
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)], caught
    assert _onnx_dims(path) == ["batch", 3, "height", "width"]
    session = onnx_session(path)
    # a multiple of the largest stride (32) and a size the graph pads, other batch sizes
    for shape in [(3, 3, 64, 96), (1, 3, 50, 70)]:
        x = torch.randn(*shape)
        got = _onnx_logits(session, x)
        with torch.no_grad():
            ref = dynamic(x, route=route).logits
        assert got.shape == (shape[0], 4, *shape[2:])
        assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_onnx_export_at_a_given_size_takes_that_size_only(tmp_path, dynamic, route):
    pytest.importorskip("onnxscript")
    from dynviz.inference.export import onnx_session

    net = static_network(dynamic.float(), route)
    path = export_onnx(net, tmp_path / "net.onnx", (64, 64))
    assert _onnx_dims(path) == ["batch", 3, 64, 64]
    session = onnx_session(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = dynamic(x, route=route).logits
    assert (_onnx_logits(session, x) - ref).abs().max() <= 1e-4 * ref.abs().max()
    with pytest.raises(Exception, match="(?i)dimension"):
        _onnx_logits(session, torch.randn(1, 3, 64, 96))


def test_export_cli_checks_two_sizes(tmp_path, capsys):
    pytest.importorskip("onnxscript")
    from dynviz.commands.export import check_sizes

    spec = tmp_path / "straight.yaml"
    spec.write_text("name: straight\nspace: tiny\nchains:\n  - [4, 8, 16, 8, 4]\n")
    out = tmp_path / "straight.onnx"
    code = cli(["export", str(spec), "--out", str(out), "--check", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and out.is_file()
    assert report["route"] == "straight" and report["batchnorm_left"] == 0
    assert (
        report["size"] is None
        and report["dynamic_size"]
        and _onnx_dims(out)[2:]
        == [
            "height",
            "width",
        ]
    )
    runs = report["check"]["runs"]
    assert [[r["batch"], *r["size"]] for r in runs] == [[2, 64, 128], [1, 72, 88]]
    assert check_sizes(None, 32) == [(2, 64, 128), (1, 72, 88)] and 72 % 32 and 88 % 32
    assert report["check"]["ok"] and all(r["relative"] < 1e-4 for r in runs)
    # with --size: that size, and the text report says so
    code = cli(["export", str(spec), "--out", str(out), "--size", "64", "64", "--check"])
    text = capsys.readouterr().out
    assert code == 0 and "input 64x64 only" in text and _onnx_dims(out)[2:] == [64, 64]
    assert text.count("onnxruntime vs PyTorch at 2x3x64x64") == 1 and "FAILED" not in text
    assert check_sizes((64, 64), 32) == [(2, 64, 64)]


def test_export_cli_checkpoint_with_route(tmp_path, capsys, tiny, route):
    pytest.importorskip("onnxscript")
    from dynviz.model.checkpoint import make_checkpoint, save_checkpoint

    model = randomise(dynviz.build_model(tiny), spread=0.2).eval()
    (tmp_path / "run").mkdir()
    ckpt = save_checkpoint(
        tmp_path / "run" / "checkpoint_best.pt", make_checkpoint(model, rng=False)
    )
    spec = tmp_path / "two-chains.yaml"
    route.to_yaml(spec)
    out = tmp_path / "net.onnx"
    code = cli(
        ["export", str(ckpt.parent), "--route", str(spec), "--out", str(out), "--check", "--json"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["check"]["ok"] and len(report["check"]["runs"]) == 2
    assert report["checkpoint"] == str(ckpt) and report["cells"] == len(route.cells)
    # a dynamic model without --route is refused with a message
    assert cli(["export", str(ckpt), "--out", str(out)]) == 2
    assert "--route" in capsys.readouterr().err


def test_fused_onednn_path_matches_the_plain_static_module(dynamic, route, monkeypatch):
    from dynviz.model import fused as kernels

    if not kernels.available():
        pytest.skip("no fused oneDNN convolutions in this torch build")
    net = static_network(dynamic.float(), route)
    x = torch.randn(2, 3, 64, 96)
    calls = []
    conv = kernels.conv
    monkeypatch.setattr(kernels, "conv", lambda *a, **k: calls.append(1) or conv(*a, **k))
    with torch.inference_mode():
        ref = dynamic(x, route=route).logits
        assert calls == []  # the unfolded network keeps the plain ops
        fused = net(x)
        assert len(calls) > len(route.cells)  # the folded blocks ran the fused kernels
        net.fuse = False
        calls.clear()
        plain = net(x)
        assert calls == []
    scale = float(ref.abs().max())
    assert float((fused - plain).abs().max()) <= 1e-5 * scale
    assert float((fused - ref).abs().max()) <= 1e-5 * scale
    assert fused.is_contiguous(memory_format=torch.channels_last)  # as inference runs inside
    assert fused.shape == (2, 4, 64, 96)
