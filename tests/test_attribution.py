"""Exact gate attribution (``dynviz.analysis.attribution``): the maps' mean plus the bias is the
logit the network itself computed, for full and small gates, at sizes where the small gate's resize
rounds, with closed nodes and nodes that never receive input; the per-image summary, the object
analysis and ``dynviz attribute``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import dynviz
from dynviz.analysis.attribution import (
    AttributionError,
    attribute,
    attribution_overlay,
    attribution_vs_size,
    object_attribution,
    records_object_attribution,
    top_share,
)
from dynviz.cli import main as cli
from dynviz.data import build_dataset
from dynviz.model import Direction, RoutingNetwork
from dynviz.model.config import RoutingSpaceConfig
from dynviz.model.ops import gate_activation

SEMANTICS = ["paper", "official"]
"""``official`` (issue 10): closed paths feed zeros, so zero-input nodes still run their gate;
the small gate resizes with ``scale_factor=0.25``."""


def _calibrated(config: RoutingSpaceConfig, images: torch.Tensor) -> RoutingNetwork:
    """A network whose BN statistics come from ``images`` (gates then vary), in eval mode."""
    model = RoutingNetwork(config)
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


def _check_exact(model: RoutingNetwork, image: torch.Tensor, rtol: float = 1e-5) -> None:
    attr = attribute(model, image)
    assert attr.nodes, "no gate ran"
    with torch.no_grad():
        out = model.eval()(image.unsqueeze(0))
    gates = out.gates[0].double()
    scale = attr.max_abs_logit
    for (layer, s), node in attr.nodes.items():
        # mean(map) + bias is the network's own logit
        assert node.error <= rtol * scale, (layer, s, node.error, scale)
        # ... the logits give the gate's alphas, and the route used them (or closed the node)
        dirs = [int(d) for d in node.directions]
        expected = gate_activation(torch.from_numpy(node.reconstructed)).numpy()
        assert np.allclose(expected, node.gate_alpha, atol=1e-5), (layer, s)
        assert np.allclose(node.alpha, gates[layer, s, dirs].numpy())
        # the gate's own alphas are the network's, and the closing rule turns them into the
        # route's (the official drop rule may close the whole node)
        own = out.gate_alpha[0, layer, s, dirs].double().numpy()
        assert np.allclose(node.gate_alpha, own, atol=1e-6), (layer, s)
        closed = model.close(torch.from_numpy(node.gate_alpha)[None])[0].numpy()
        assert np.allclose(node.alpha, closed, atol=1e-6), (layer, s)
    # every node that ran a gate is attributed, and only those
    ran = {(l_, s_) for l_, s_ in model.config.cells if bool(out.gates[0, l_, s_].abs().sum() > 0)}
    assert ran <= set(attr.nodes)


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("gate", ["full", "small"])
@pytest.mark.parametrize("size", [(64, 64), (96, 160), (40, 72)])
def test_decomposition_is_exact(tiny, gate, size, semantics):
    """40x72 and 96x160: node maps 10x18 / 24x40 at 1/4, not multiples of 4 at every scale, so
    the small gate's 0.25 resize rounds (and the official scale_factor resize samples another
    grid)."""
    config = tiny.replace(gate=gate, semantics=semantics)
    images = torch.randn(3, 3, *size)
    model = _calibrated(config, images)
    _check_exact(model, images[0])
    attr = attribute(model, images[1])
    node = attr.node(0, 0)
    h, w = node.node_size
    assert node.node_size == (-(-size[0] // 32) * 8, -(-size[1] // 32) * 8)
    if gate == "small":
        assert node.map_size == (max(1, h // 4), max(1, w // 4))
    else:
        assert node.map_size == (h, w)
    assert attr.image_size == size


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_small_gate_rounds_and_stays_exact(tiny, semantics):
    """At 1/32 of a 72x72 input the node is 3x3 (padded 96 -> 3): the small gate reads 1x1."""
    model = _calibrated(tiny.replace(gate="small", semantics=semantics), torch.randn(2, 3, 72, 72))
    attr = attribute(model, torch.randn(3, 72, 72))
    coarse = [n for (layer, s), n in attr.nodes.items() if s == 3]
    assert coarse and all(n.map_size == (1, 1) for n in coarse)
    assert attr.max_error <= 1e-5 * attr.max_abs_logit


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_closed_paths_and_unreached_nodes(tiny, semantics):
    """The initial cell's down path forced shut (bias -50): its map still adds up to its
    (negative) logit and its alpha is 0. Paper: the node it fed, (1, 1), receives nothing and
    runs no gate. Official: the closed path delivers zeros and (1, 1) runs its gate on them,
    whose maps are constant over space."""
    config = tiny.replace(semantics=semantics)
    images = torch.randn(2, 3, 64, 64)
    model = _calibrated(config, images)
    cell = model.cell(0, 0)
    down = cell.directions.index(Direction.DOWN)
    with torch.no_grad():
        cell.gate.conv2.bias[down] = -50.0
    attr = attribute(model, images[0])
    node = attr.node(0, 0)
    assert node.alpha[down] == 0 and node.logits[down] < 0
    assert node.alpha[1 - down] > 0
    assert node.error <= 1e-5 * float(np.abs(node.logits).max())
    assert (1, 0) in attr.nodes
    if config.official:
        zero_input = attr.node(1, 1)
        assert np.allclose(zero_input.maps, zero_input.maps[:, :1, :1])
        assert zero_input.error <= 1e-5 * float(np.abs(zero_input.logits).max())
    else:
        assert (1, 1) not in attr.nodes
        with pytest.raises(KeyError, match="ran no gate"):
            attr.node(1, 1)
    _check_exact(model, images[0])


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_every_path_closed_but_decomposition_holds(tiny, semantics):
    """All gates shut: every cell is dropped and passes its input through keep (both
    semantics), so only the chain along 1/4 runs gates; each still decomposes exactly."""
    config = tiny.replace(semantics=semantics)
    images = torch.randn(2, 3, 64, 64)
    model = _calibrated(config, images)
    with torch.no_grad():
        for cell in model.cells.values():
            if cell.gate is not None:
                cell.gate.conv2.bias.fill_(-50.0)
    attr = attribute(model, images[1])
    assert set(attr.nodes) == {(layer, 0) for layer in range(config.num_layers + 1)}
    assert attr.max_error <= 1e-5 * attr.max_abs_logit
    assert (attr.frame()["active"] == False).all()  # noqa: E712


def test_static_and_gateless_networks_are_refused(tiny):
    route_net = dynviz.build_model("fcn32s")
    with pytest.raises(AttributionError, match="static network"):
        attribute(route_net, torch.randn(3, 64, 64))
    with pytest.raises(AttributionError, match="gate: none"):
        attribute(RoutingNetwork(tiny.replace(gate="none")), torch.randn(3, 64, 64))
    with pytest.raises(AttributionError, match="one image"):
        attribute(RoutingNetwork(tiny), torch.randn(2, 3, 64, 64))


def test_hooks_are_removed_and_mode_restored(tiny):
    model = RoutingNetwork(tiny).train()
    attribute(model, torch.randn(3, 64, 64))
    assert model.training
    for cell in model.cells.values():
        assert not cell.gate._forward_hooks and not cell.gate.conv2._forward_hooks


def test_uint8_image_frame_and_summary(tiny):
    model = _calibrated(tiny, torch.randn(2, 3, 64, 64))
    rgb = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    attr = attribute(model, rgb)
    frame = attr.frame()
    paths = sum(len(n.directions) for n in attr.nodes.values())
    assert len(frame) == paths
    assert (frame["error"] <= 1e-5 * attr.max_abs_logit).all()
    assert np.allclose(frame["map_mean"] + frame["bias"], frame["logit"], atol=1e-5)
    assert set(frame["direction"]) <= {"keep", "up", "down"}
    assert frame["top_share"].between(0.1 - 1e-9, 1.0).all()
    regions = attr.region_maps()
    assert set(regions) == {"down", "up"}
    assert regions["down"].shape == (48, 80)
    # the upsampled maps of the region keep (about) their node's mean
    summary = attr.summary()
    assert list(summary["direction"]) == ["keep", "up", "down"]
    assert (summary["open"] <= summary["paths"]).all()
    up = attr.upsampled(1, 1, Direction.UP)
    assert up.shape == (48, 80)


def test_top_share_by_hand():
    assert top_share(np.ones((10, 10))) == pytest.approx(0.1)
    spike = np.zeros((10, 10))
    spike[3, 4] = -2.0
    assert top_share(spike) == pytest.approx(1.0)
    values = np.arange(1, 11, dtype=float)  # top 10% = the single 10
    assert top_share(values) == pytest.approx(10 / 55)
    assert np.isnan(top_share(np.zeros(4)))


def test_overlay_is_diverging_and_centred():
    image = np.full((2, 3, 3), 128, np.uint8)
    values = np.array([[1.0, 0.0, -1.0], [0.5, 0.0, -0.5]])
    out = attribution_overlay(image, values, opacity=1.0)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert out[0, 0, 0] > out[0, 0, 2]  # positive: red
    assert out[0, 2, 2] > out[0, 2, 0]  # negative: blue
    assert (out[:, 1] == 128).all()  # zero: the image unchanged
    with pytest.raises(ValueError, match="differ in size"):
        attribution_overlay(image, np.zeros((3, 3)))


def test_object_attribution_partitions_the_logit(tiny):
    """Masses of objects that cover the image add up to the mean of (logit - bias) of the
    group's paths; lift is density minus the group mean."""
    model = _calibrated(tiny, torch.randn(2, 3, 64, 64))
    rgb = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    attr = attribute(model, rgb)
    instances = np.ones((64, 64), np.int32)
    instances[:, 32:] = 2
    instances[:8, :8] = 3
    label = (instances % 2).astype(np.uint8)
    objects = object_attribution(attr, instances, label, image_id="x")
    frame = attr.frame()
    for (scale, direction), part in objects.groupby(["scale_index", "direction"]):
        assert len(part) == 3
        paths = frame[(frame["scale_index"] == scale) & (frame["direction"] == direction)]
        region = np.mean(
            [attr.upsampled(r.layer, r.scale_index, r.direction) for r in paths.itertuples()], 0
        )
        assert part["mass"].sum() == pytest.approx(region.mean(), abs=1e-9)
        assert np.allclose(part["lift"], part["density"] - region.mean())
    assert set(objects["area"]) == {64 * 32 - 64, 64 * 32, 64}
    assert set(objects.loc[objects["object"] == 2, "class"]) == {0}


def test_attribution_vs_size_by_hand():
    objects = pd.DataFrame(
        {
            "class": [1] * 4,
            "scale_index": [0] * 4,
            "scale": [4] * 4,
            "direction": ["up"] * 4,
            "area": [10, 20, 40, 80],
            "lift": [4.0, 3.0, 2.0, 1.0],
        }
    )
    out = attribution_vs_size(objects)
    row = out.iloc[0]
    assert row["objects"] == 4
    assert row["spearman"] == pytest.approx(-1.0)
    assert row["small_mean"] == pytest.approx(3.5) and row["large_mean"] == pytest.approx(1.5)
    assert attribution_vs_size(objects.iloc[:0]).empty


def test_records_object_attribution_on_synthetic():
    dataset = build_dataset("synthetic:count=3,size=64x64,classes=4,seed=0", split="val")
    torch.manual_seed(0)
    model = dynviz.build_model("tiny", num_classes=dataset.num_classes).eval()
    ids = [dataset.image_id(i) for i in range(3)]
    objects = records_object_attribution(model, dataset, ids)
    assert set(objects["image_id"]) <= set(ids) and len(objects) > 0
    assert objects["class"].between(0, 3).all()
    assert (objects["area"] > 0).all()
    # resized to what the records saw
    resized = records_object_attribution(model, dataset, ids[:1], sizes=[(48, 40)])
    assert resized["area"].sum() <= 48 * 40 * resized.groupby(["scale_index", "direction"]).ngroups
    with pytest.raises(AttributionError, match="not in the data set"):
        records_object_attribution(model, dataset, ["nope"])


def test_cli_attribute_writes_maps_and_table(tmp_path, capsys):
    image = tmp_path / "street.png"
    rgb = np.random.default_rng(0).integers(0, 255, (40, 72, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(image)
    out = tmp_path / "attr"
    assert cli(["attribute", "tiny", str(image), "--out", str(out)]) == 0
    table = pd.read_parquet(out / "attribution.parquet")
    assert {"layer", "scale", "direction", "logit", "bias", "alpha", "error", "map"} <= set(
        table.columns
    )
    assert (table["error"] <= 1e-5 * table["logit"].abs().max()).all()
    first = table.iloc[0]
    values = np.asarray(first["map"], dtype=np.float64)
    assert values.size == first["map_height"] * first["map_width"]
    assert values.mean() + first["bias"] == pytest.approx(first["logit"], abs=1e-5)
    pngs = sorted((out / "maps").glob("*.png"))
    assert len(pngs) == len(table)
    assert Image.open(pngs[0]).size == (72, 40)
    assert (out / "summary.csv").is_file()
    assert sorted(p.name for p in out.glob("region_*.png")) == ["region_down.png", "region_up.png"]
    # the limit of each overlay's colour scale is its map's max |m|; the scale itself is drawn
    assert np.allclose(
        table["map_limit"], [np.abs(np.asarray(m)).max() for m in table["map"]], rtol=1e-6
    )
    assert Image.open(out / "colorbar.png").size[0] > Image.open(out / "colorbar.png").size[1]
    said = capsys.readouterr().out
    assert "max |mean(map) + bias - logit|" in said
    # the line counts what it wrote: one map per path, of fewer gates
    gates = table.groupby(["layer", "scale"]).ngroups
    assert f"attributed {gates} gates ({len(table)} paths)" in said
    assert f"{len(pngs)} maps in" in said and gates < len(pngs)
    # bad input: a clear error naming the file
    bad = tmp_path / "nothing.png"
    bad.write_bytes(b"not a png")
    assert cli(["attribute", "tiny", str(bad), "--out", str(out)]) == 3
    assert "nothing.png" in capsys.readouterr().err
    assert cli(["attribute", "fcn32s", str(image), "--out", str(out)]) == 2
    assert "no gates" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("name", ["layer16", "dynamic-a"])
def test_decomposition_exact_on_real_size_inputs(name, semantics):
    """Every gate of layer16 and dynamic-a at 256x512 (BN statistics of a few scenes, so gates
    vary): max |mean(map) + bias - logit| <= 1e-5 max |logit|. The figure at 512x1024:
    ``python analysis/attribution_exactness.py``."""
    calib = build_dataset("synthetic:count=2,size=128x256,classes=6,seed=1", split="train")
    batch = torch.stack([calib[i]["image"] for i in range(len(calib))])
    model = dynviz.build_model(name, num_classes=6, semantics=semantics)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(batch)
    model.eval()
    image = build_dataset("synthetic:count=1,size=256x512,classes=6,seed=0", split="val")[0]
    _check_exact(model, image["image"])
    attr = attribute(model, image["image"])
    assert len(attr.nodes) == model.config.num_cells
