"""The common network: threshold, dangling-cell pruning, equivalence with the forced dynamic net."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from _models import assert_close_to_scale

import dynviz
from dynviz.analysis.common import CommonNetError, extract_common, prune_dangling
from dynviz.cli import main as cli
from dynviz.data import build_dataset
from dynviz.model.config import Direction
from dynviz.model.route import Route
from dynviz.model.zoo import load_space
from dynviz.record import read_records, record

K, U, D = Direction.KEEP, Direction.UP, Direction.DOWN


@pytest.fixture
def space():
    return load_space("tiny")  # L = 4, 4 scales


def _frame(config, probability: dict, images: int = 20) -> pd.DataFrame:
    """Gate rows of ``images`` images where path k is active in round(p_k * images) of them."""
    rows = []
    for i in range(images):
        for layer, scale, d in config.paths:
            p = probability.get((layer, scale, d), 0.0)
            on = i < round(p * images)
            rows.append((f"img{i}", layer, 4 * 2**scale, scale, d.label, float(on), on))
    return pd.DataFrame(
        rows, columns=["image_id", "layer", "scale", "scale_index", "direction", "alpha", "active"]
    )


def test_threshold_keeps_frequent_paths(space):
    chain = Route.from_chains(space, [[4, 4, 8, 8, 8]])
    probability = dict.fromkeys(chain.paths, 1.0)
    probability[(2, 1, D)] = 0.9  # below 0.95
    probability[(3, 2, U)] = 0.9
    route = extract_common(_frame(space, probability), space, threshold=0.95)
    assert route.paths == chain.paths
    assert route.name == "common-95" and "20 images" in route.description
    looser = extract_common(_frame(space, probability), space, threshold=0.85)
    assert looser.paths == chain.paths | {(2, 1, D), (3, 2, U)}
    exactly = extract_common(_frame(space, probability), space, threshold=0.9)
    assert exactly.paths == chain.paths  # strictly more than the threshold


def test_dangling_cells_are_removed(space):
    chain = Route.from_chains(space, [[4, 8, 8, 16, 16]])
    probability = dict.fromkeys(chain.paths, 1.0)
    # survives the threshold, but its cell (2, 1/4) gets no input: (1, 1/4, keep) is rare
    probability[(2, 0, K)] = 1.0
    probability[(3, 0, K)] = 1.0
    probability[(4, 0, K)] = 1.0
    probability[(1, 0, K)] = 0.3
    # survives, but ends in cell (3, 1/32) whose onward paths never pass
    probability[(2, 2, D)] = 1.0
    probability[(3, 3, K)] = 0.2
    # survives, feeds cell (2, 1/16) which is alive: a real second branch
    probability[(1, 1, D)] = 0.99
    probability[(2, 2, K)] = 0.99
    route = extract_common(_frame(space, probability), space, threshold=0.95)
    expected = set(chain.paths) | {(1, 1, D), (2, 2, K)}
    assert route.paths == frozenset(expected)
    assert "4 removed as dangling" in route.meta["notes"]
    # prune_dangling alone, iteratively: a chain that only dangles vanishes entirely
    assert prune_dangling(space, [(2, 0, K), (3, 0, K), (4, 0, K)]) == frozenset()
    assert prune_dangling(space, chain.paths) == chain.paths


def test_nothing_survives_names_the_threshold(space):
    chain = Route.from_chains(space, [[4, 4, 4, 4, 4]])
    half = dict.fromkeys(chain.paths, 0.5)
    with pytest.raises(CommonNetError, match=r"threshold 0\.95 emptied.*no path is active"):
        extract_common(_frame(space, half), space, threshold=0.95)
    dangling = {(2, 0, K): 1.0, (3, 0, K): 1.0}  # pass, but never connect stem to decoder
    with pytest.raises(CommonNetError, match=r"threshold 0\.9 emptied.*dangling"):
        extract_common(_frame(space, dangling), space, threshold=0.9)
    with pytest.raises(ValueError, match="threshold"):
        extract_common(_frame(space, half), space, threshold=1.0)


def test_static_net_equals_forced_dynamic_net(tmp_path):
    data = build_dataset("synthetic:count=3,size=64x64,classes=4", split="val")
    torch.manual_seed(1)
    dynamic = dynviz.build_model("tiny", num_classes=data.num_classes)
    # make BN statistics non-trivial so that the comparison means something
    dynamic.train()
    with torch.no_grad():
        for _ in range(2):
            dynamic(torch.stack([data[i]["image"] for i in range(3)]) / 64)
    dynamic.eval()
    forced = Route.from_chains(dynamic.config, [[4, 8, 16, 16, 8], [4, 4, 4, 4, 4]])
    out = tmp_path / "records"
    record(dynamic, data, out, route=forced)
    extracted = extract_common(read_records(out), threshold=0.95)
    assert extracted.paths == forced.paths
    static = dynviz.build_model(extracted)
    result = static.load_state_dict(dynamic.state_dict(), strict=False)
    assert result.missing_keys == []
    static.eval()
    images = torch.stack([data[i]["image"] for i in range(3)]) / 64
    with torch.inference_mode():
        want = dynamic(images, route=forced).logits
        got = static(images).logits
    assert_close_to_scale(got, want)
    assert static.is_static and sum(p.numel() for p in static.parameters()) < sum(
        p.numel() for p in dynamic.parameters()
    )


def test_extract_cli_writes_a_buildable_spec(tmp_path, capsys):
    data = build_dataset("synthetic:count=3,size=64x64,classes=4", split="val")
    model = dynviz.build_model("tiny", num_classes=data.num_classes).eval()
    forced = Route.from_chains(model.config, [[4, 8, 8, 8, 8]])
    records = tmp_path / "records"
    record(model, data, records, route=forced, name="forced-tiny")
    out = tmp_path / "models" / "common-t.yaml"
    capsys.readouterr()
    assert cli(["extract", str(records), "--threshold", "0.95", "--out", str(out)]) == 0
    said = capsys.readouterr()
    assert (said.out + said.err).count("Paths active in more than 95%") == 1  # said once
    text = out.read_text()
    assert text.startswith("# Common network extracted by `dynviz extract`")
    assert "forced-tiny" in text and "95%" in text
    route = Route.from_yaml(out)
    assert route.paths == forced.paths and route.name == "common-t"
    assert "parameters" in route.meta["notes"] and "MACs at 64x64" in route.meta["notes"]
    net = dynviz.build_model(out)
    assert net.is_static
    assert "wrote" in said.out
    code = cli(["extract", str(records), "--threshold", "1.5", "--out", str(out)])
    assert code == 2


def test_extraction_from_per_path_probabilities_equals_extraction_from_gates(space):
    from dynviz.analysis import activation_probability

    chain = Route.from_chains(space, [[4, 4, 8, 8, 8]])
    probability = {path: 0.25 * (i % 5) for i, path in enumerate(space.paths)}
    probability.update(dict.fromkeys(chain.paths, 1.0))
    gates = _frame(space, probability)
    for threshold in (0.3, 0.6, 0.95):
        from_rows = extract_common(gates, space, threshold=threshold)
        from_paths = extract_common(activation_probability(gates), space, threshold=threshold)
        assert from_rows.paths == from_paths.paths
        assert from_rows.meta["notes"] == from_paths.meta["notes"]  # same image count
