"""Official semantics (docs/official.md): golden behaviours derived by hand, the per-sample drop
rule, the unpadded stem, the small gate's resize, skip = soft, and the official counting (also
in ``dynviz eval`` / ``record --counting official``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _models import FLOAT64_REL, assert_close_to_scale, randomise

import dynviz
from dynviz.analysis.compare import compare
from dynviz.analysis.report import analyze
from dynviz.cli import main as cli_main
from dynviz.data import build_dataset
from dynviz.model import load_spec
from dynviz.model.checkpoint import load_model, make_checkpoint, save_checkpoint
from dynviz.model.config import (
    OFFICIAL_DROP_THRESHOLD,
    ConfigError,
    RoutingSpaceConfig,
    Semantics,
)
from dynviz.model.cost import Counting, cost_table
from dynviz.model.ops import SoftConditionalGate, gate_activation
from dynviz.record import RecordError, Sidecar, SidecarError, read_records, record


def _official(tiny: RoutingSpaceConfig, **changes: object) -> RoutingSpaceConfig:
    return tiny.replace(semantics=Semantics.OFFICIAL, **changes)


def _bn_of_zero(bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    """BN applied to a zero input, per channel: bias - mean * weight / sqrt(var + eps)."""
    return bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)


def test_semantics_is_a_config_field_that_round_trips(tiny):
    config = _official(tiny)
    assert config.official and not tiny.official
    assert config.to_dict()["semantics"] == "official"
    assert RoutingSpaceConfig.from_dict(config.to_dict()) == config
    data = tiny.to_dict()
    del data["semantics"]  # configs and checkpoints written before the switch
    assert RoutingSpaceConfig.from_dict(data).semantics is Semantics.PAPER
    with pytest.raises(ConfigError, match="semantics: 'oficial'"):
        tiny.replace(semantics="oficial")


def test_official_stem_conv_has_no_padding_and_reaches_the_same_quarter_size(tiny):
    paper = dynviz.build_model(tiny).eval()
    official = dynviz.build_model(_official(tiny)).eval()
    official.load_state_dict(paper.state_dict())  # same weights, same keys
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        half = official.stem.conv1(x)
        assert half.shape[-2:] == (31, 47)  # 64 -> 31: no padding
        torch.testing.assert_close(half, F.conv2d(x, official.stem.conv1.weight, stride=2))
        assert paper.stem.conv1(x).shape[-2:] == (32, 48)
        assert official.stem(x).shape == paper.stem(x).shape == (1, 8, 16, 24)
        assert not torch.allclose(official.stem(x), paper.stem(x))


def test_small_gate_resizes_with_scale_factor_where_it_rounds():
    torch.manual_seed(0)
    official = SoftConditionalGate(16, 3, small=True, official_resize=True).eval()
    paper = SoftConditionalGate(16, 3, small=True).eval()
    paper.load_state_dict(official.state_dict())
    randomise(official, seed=2)
    randomise(paper, seed=2)

    def gate_on(z: torch.Tensor) -> torch.Tensor:
        z = paper.bn(paper.conv1(z)).relu()
        return gate_activation(paper.conv2(z.mean((2, 3), keepdim=True)).flatten(1))

    x = torch.randn(2, 16, 10, 20)  # 1/16 of a 160x320 input: 10 / 4 rounds down
    with torch.no_grad():
        by_factor = F.interpolate(x, scale_factor=0.25, mode="bilinear", align_corners=False)
        by_size = F.interpolate(x, size=(2, 5), mode="bilinear", align_corners=False)
        assert by_factor.shape == by_size.shape and not torch.allclose(by_factor, by_size)
        torch.testing.assert_close(official(x), gate_on(by_factor))
        torch.testing.assert_close(paper(x), gate_on(by_size))
        x = torch.randn(2, 16, 16, 32)  # a multiple of 4: the two resizes agree
        torch.testing.assert_close(official(x), paper(x))


def _close_initial_down(model: torch.nn.Module) -> None:
    """Cell (0, 0) keeps with alpha tanh(3) and closes its down path (alpha exactly 0)."""
    conv2 = model.cells["0_0"].gate.conv2
    conv2.weight.data.zero_()
    conv2.bias.data.copy_(torch.tensor([3.0, -50.0]))


def test_a_node_fed_only_closed_paths_runs_on_zeros_as_derived_from_its_bn(tiny):
    """Official: cell (1, 1) receives only the closed down path of cell (0, 0), i.e. zeros.
    Its gate reads BN(0) and its operation turns zeros into a map whose interior is derived by
    hand from the BN parameters and kernels. The paper network does not compute it."""
    torch.manual_seed(0)
    official = randomise(dynviz.build_model(_official(tiny)).eval(), seed=4)
    _close_initial_down(official)
    paper = dynviz.build_model(tiny).eval()
    paper.load_state_dict(official.state_dict())
    cell = official.cells["1_1"]
    seen = {}
    cell.op.register_forward_hook(lambda m, i, o: seen.update(h=o))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = official(x)
        ref = paper(x)
        # gate on zeros: conv1(0) = 0, BN(0), ReLU, mean, conv2 + bias, relu(tanh)
        g = _bn_of_zero(cell.gate.bn).relu()
        z = cell.gate.conv2.weight[:, :, 0, 0] @ g + cell.gate.conv2.bias
        alpha = gate_activation(z)
        # O(0): pw1(dw1(0)) = 0, BN1(0), ReLU: a constant map; dw2 sums its 3x3 kernel inside
        c1 = _bn_of_zero(cell.op.bn1).relu()
        inner = c1 * cell.op.dw2.weight.sum((1, 2, 3))
        h = (
            cell.op.bn2.weight
            * (cell.op.pw2.weight[:, :, 0, 0] @ inner - cell.op.bn2.running_mean)
            / torch.sqrt(cell.op.bn2.running_var + cell.op.bn2.eps)
            + cell.op.bn2.bias
        )
    assert float(out.gates[0, 0, 0, 2]) == 0.0 and float(out.gates[0, 0, 0, 0]) > 0.99
    dirs = [int(d) for d in cell.directions]
    torch.testing.assert_close(out.gates[0, 1, 1, dirs], alpha)
    assert bool((alpha > 0).any())  # it reopens paths ("revived" cell)
    # the hook sees O(X) + X, ReLU-ed in place by the cell (X = 0): ReLU(H) on the interior
    relu_h = h.relu().view(-1, 1, 1).expand(-1, 4, 4)
    torch.testing.assert_close(seen["h"][0, :, 2:-2, 2:-2], relu_h)
    assert float(ref.gates[0, 1, 1].abs().sum()) == 0.0  # paper: never computed
    assert not torch.allclose(out.logits, ref.logits)


def test_official_counting_charges_the_gate_of_a_node_that_received_nothing(tiny):
    torch.manual_seed(0)
    model = randomise(dynviz.build_model(_official(tiny)).eval(), seed=5)
    model.cells["0_0"].gate.conv2.weight.data.zero_()
    model.cells["0_0"].gate.conv2.bias.data.fill_(-50.0)  # cell (0, 0) dropped
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    # (1, 0) gets the stem through the keep pass-through; (1, 1) gets nothing at all
    assert float(out.gates[0, 0].abs().sum()) == 0.0
    assert float(out.gates[0, 1, 1].abs().sum()) == 0.0
    table = cost_table(model.config, (64, 64), counting="official")
    paper = cost_table(model.config, (64, 64), counting="paper")
    gates_all = float(table.gate.sum())
    expected_real = (
        table.stem
        + table.decoder
        + gates_all
        + float(((out.gates.sum(-1) > 1e-4).double() * table.op).sum())
        + float(((out.gates > 1e-4).double() * table.path).sum())
    )
    assert float(table.real(out.gates)[0]) == pytest.approx(expected_real)
    assert float(table.real(out.gates)[0]) > float(paper.real(out.active)[0]) - paper.decoder


def test_official_counting_of_layer16_at_the_papers_size():
    """All open: the paper's 119.49 G less half the decoder (its h x h bug), as the official
    repository's own maxima (118.08 G)."""
    config = load_spec("layer16")
    official = cost_table(config, (1024, 2048), counting="official")
    paper = cost_table(config, (1024, 2048), counting="paper")
    # laterals on 256^2, 128^2, 64^2, 32^2 maps and the 3x3 predictor on 256^2 (by hand)
    decoder = (
        (64 * 64 + 3 * 64) * 256**2
        + (128 * 64 + 3 * 64) * 128**2
        + (256 * 128 + 3 * 128) * 64**2
        + (512 * 256 + 3 * 256) * 32**2
        + 9 * 64 * 19 * 256**2
    )
    assert official.decoder == decoder == 1_406_402_560
    assert official.total() == paper.total() - paper.decoder + decoder == 118_085_140_448
    all_open = torch.ones(1, 17, 4, 3, dtype=torch.float64) * paper.path.gt(0).unsqueeze(0)
    all_open[:, :, :, 0] = 1.0
    assert float(official.real(all_open)[0]) == official.total()
    # a path with alpha at most 1e-4 is computed but not charged
    weak = all_open.clone()
    weak[0, 5, 2, 1] = 5e-5
    assert float(official.real(weak)[0]) == official.total() - float(official.path[5, 2, 1])


def test_official_counting_counts_at_the_size_given_flooring_each_map():
    """At 200x400 the official counters (FIX_SIZE_FOR_FLOPS = [200, 400]) count maps of 50x100,
    25x50, 12x25 and 6x12, each side floor-divided (cal_op_flops.py); the network runs on the
    224x416 padded input (56x104 at 1/4), which the paper counting counts."""
    config = load_spec("dynamic-a")
    table = cost_table(config, (200, 400), counting="official")
    paper = cost_table(config, (200, 400), counting="paper")
    assert (table.size, table.counted_size) == ((200, 400), (200, 400))
    assert (paper.size, paper.counted_size) == ((200, 400), (224, 416))
    assert paper.total() == cost_table(config, (224, 416), counting="paper").total()
    # stem: 3x3 s2 conv + BN + ReLU on 100x200, separable conv on 100x200, s2 one to 50x100
    stem = (27 * 64 + 3 * 64) * 100 * 200 + (9 * 64 + 64 * 64 + 3 * 64) * (100 * 200 + 50 * 100)
    assert table.stem == stem
    # a cell at 1/16 (12x25): two separable convs; down: ReLU on 12x25, conv + BN + ReLU to 6x12
    assert float(table.op[5, 2]) == 2 * (9 * 256 + 256 * 256) * 12 * 25 + 5 * 256 * 12 * 25
    assert float(table.path[5, 2, 2]) == 256 * 12 * 25 + (256 * 512 + 3 * 512) * 6 * 12
    # small gates read X / 4 floored: 3x6 at 1/16, 1x3 at 1/32 (1 output in the last layer)
    gate = (256 * 128 + 4 * 128) * 3 * 6 + 128 * 3
    assert float(table.gate[5, 2]) == gate
    assert float(table.gate[16, 3]) == (512 * 256 + 4 * 256) * 1 * 3 + 256 * 1
    # decoder on h x h maps: 50^2, 25^2, 12^2, 6^2 and the predictor on 50^2
    decoder = (
        (64 * 64 + 3 * 64) * 50**2
        + (128 * 64 + 3 * 64) * 25**2
        + (256 * 128 + 3 * 128) * 12**2
        + (512 * 256 + 3 * 256) * 6**2
        + 9 * 64 * 19 * 50**2
    )
    assert table.decoder == decoder
    # all open: the official counter's real_flops at [200, 400], measured side by side with
    # the official code (docs/official.md), 3,789.165 MFLOPs
    assert table.total() == 3_789_165_088


@pytest.mark.parametrize("gate", ["full", "small"])
def test_official_skip_forward_equals_soft_forward_and_single_images(tiny, gate):
    model = dynviz.build_model(_official(tiny, gate=gate)).eval().double()
    randomise(model, gate_bias=(-1.2, 0.6), seed=6)
    x = torch.randn(5, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        soft = model(x, skip=False)
        hard = model(x)
        singles = [model(x[i : i + 1]) for i in range(len(x))]
    fed_closed = (soft.gates.sum(-1) == 0) & soft.route_mask.any(-1)
    assert fed_closed.any() and (soft.gates > 0).any()
    torch.testing.assert_close(hard.gates, soft.gates)
    assert_close_to_scale(hard.logits, soft.logits, rel=FLOAT64_REL)
    for i, single in enumerate(singles):  # per sample: independent of the batch mates
        assert_close_to_scale(single.logits[0], hard.logits[i], rel=FLOAT64_REL)


def _check_drop_rule_is_per_sample(tiny: RoutingSpaceConfig) -> None:
    """Official: a cell whose alphas sum below 1e-4 is dropped (X passes through); paper: each
    alpha above 0 keeps its path open. One sample's drop does not touch its batch mate: the
    decisions are exact, and each image's logits are its logits alone up to the rounding of
    kernels that sum in another order at another batch size (``FLOAT32_REL``)."""
    model = randomise(dynviz.build_model(_official(tiny)).eval(), seed=7)
    paper = dynviz.build_model(tiny).eval()
    paper.load_state_dict(model.state_dict())
    alpha = model.route_mask.double().unsqueeze(0).repeat(2, 1, 1, 1)
    alpha[0, 2, 1] = alpha[0, 2, 1] * 3e-5  # 3 paths of 3e-5: sum 9e-5 < 1e-4
    both = alpha.clone()
    both[1, 2, 1] = both[1, 2, 1] * 3e-5  # the batch mate drops the cell too
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(x, route=alpha)
        soft = model(x, route=alpha, skip=False)
        ref = paper(x, route=alpha)
        alone = model(x[:1], route=alpha[:1])
        alive = model(x[1:], route=alpha[1:])
        mate_dropped = model(x, route=both)
    # Each image's logits: alone, beside a batch mate, and beside one whose drop is flipped.
    assert_close_to_scale(out.logits[0], alone.logits[0])
    assert_close_to_scale(out.logits[1], alive.logits[0])
    assert_close_to_scale(mate_dropped.logits[0], out.logits[0])
    assert not torch.allclose(mate_dropped.logits[1], out.logits[1])
    assert_close_to_scale(soft.logits, out.logits)
    # The decisions, exactly.
    assert float(out.gates[0, 2, 1].abs().sum()) == 0.0  # dropped
    assert float(ref.gates[0, 2, 1].abs().sum()) > 0  # paper: open with alpha 3e-5
    assert torch.equal(out.gates[1], alpha[1].float())
    assert torch.equal(alone.gates[0], out.gates[0]) and torch.equal(alive.gates[0], out.gates[1])


def test_drop_rule_is_per_sample_on_the_alpha_sum(tiny):
    _check_drop_rule_is_per_sample(tiny)


def test_the_per_sample_check_fails_when_a_batch_mate_decides_the_drop(tiny, monkeypatch):
    """The check above has teeth: under the official code's per-batch rule (a cell dropped only
    when every sample's alpha sum is below 1e-4) sample 0 keeps its cell because of its batch
    mate, and the check fails on that sample's logits before it reads a gate."""
    from dynviz.model import network

    def per_batch(self, alpha):
        every = alpha.sum(1, keepdim=True).max() < OFFICIAL_DROP_THRESHOLD
        return torch.where(every, torch.zeros_like(alpha), alpha)

    monkeypatch.setattr(network.RoutingNetwork, "close", per_batch)
    with pytest.raises(AssertionError, match="max difference .* of max.expected"):
        _check_drop_rule_is_per_sample(tiny)


def test_official_static_network_equals_the_dynamic_one_forced_to_its_route(tiny):
    """A forced route is a static network in both semantics: closed paths deliver nothing."""
    from dynviz.inference.export import transfer_to_route
    from dynviz.model.route import Route

    route = Route.from_chains(tiny, [[4, 8, 16, 8, 4], [4, 4, 4, 4, 4]])
    dynamic = randomise(dynviz.build_model(_official(tiny)).eval(), seed=8)
    static = transfer_to_route(dynamic, route)
    assert static.config.official and static.is_static
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        forced = dynamic(x, route=route)
        assert_close_to_scale(static(x).logits, forced.logits)
        assert_close_to_scale(dynamic(x, route=route, skip=False).logits, forced.logits)


# ------------------------------------------------- --counting official in eval and record
COUNTING_DATA = "synthetic:count=3,size=64x96,classes=4"


@pytest.fixture
def official_checkpoint(tiny, tmp_path):
    """A tiny official-semantics network with many closed paths, saved as a checkpoint."""
    model = dynviz.build_model(_official(tiny, num_classes=4)).eval()
    randomise(model, gate_bias=(-1.2, 0.6), seed=6)
    path = tmp_path / "official.pt"
    save_checkpoint(path, make_checkpoint(model, iteration=3, train_args={"data": COUNTING_DATA}))
    return path


def _by_hand(path, limit: int) -> tuple[list[float], list[float], list[float]]:
    """Per image: the official real MACs summed by hand from the official cost table (stem,
    the h x h decoder with every lateral, every gate, ops with alpha sum > 1e-4, transforms
    with alpha > 1e-4), the official expected MACs, and the paper's real MACs."""
    model, _ = load_model(path)
    dataset = build_dataset(COUNTING_DATA, split="val")
    table = cost_table(model.config, (64, 96), counting="official")
    paper = cost_table(model.config, (64, 96), counting="paper")
    real, expected, paper_real = [], [], []
    for i in range(limit):
        with torch.inference_mode():
            out = model(dataset[i]["image"].unsqueeze(0))
        gates = out.gates.float()
        macs = (
            table.stem
            + table.decoder
            + float(table.gate.sum())
            + float(((gates.double().sum(-1) > 1e-4).double() * table.op).sum())
            + float(((gates.double() > 1e-4).double() * table.path).sum())
        )
        assert float(table.real(out.gates)[0]) == pytest.approx(macs, rel=1e-12)
        real.append(macs)
        expected.append(float(table.expected(gates)[0]))
        paper_real.append(float(paper.real(out.active)[0]))
    return real, expected, paper_real


def test_eval_counting_official_charges_as_the_official_counters(official_checkpoint, capsys):
    real, expected, paper_real = _by_hand(official_checkpoint, 2)
    # the rules differ here: a 64x96 input (the decoder on 16x16, not 16x24) and closed paths
    table = cost_table(load_model(official_checkpoint)[0].config, (64, 96), counting="official")
    assert table.decoder < cost_table(table.config, (64, 96)).decoder
    assert all(r != pytest.approx(p, rel=1e-6) for r, p in zip(real, paper_real, strict=True))
    base = ["eval", str(official_checkpoint), "--json", "--limit", "2"]
    assert cli_main([*base, "--counting", "official"]) == 0
    official = json.loads(capsys.readouterr().out)
    assert official["counting"] == "official"
    assert official["real_gmacs"]["mean"] == pytest.approx(np.mean(real) / 1e9, rel=1e-12)
    assert official["real_gmacs"]["max"] == pytest.approx(max(real) / 1e9, rel=1e-12)
    assert official["real_gmacs"]["min"] == pytest.approx(min(real) / 1e9, rel=1e-12)
    assert official["expected_gmacs"]["mean"] == pytest.approx(np.mean(expected) / 1e9, rel=1e-9)
    assert cli_main(base) == 0  # the default: paper counting, as before
    paper = json.loads(capsys.readouterr().out)
    assert paper["counting"] == "paper"
    assert paper["real_gmacs"]["mean"] == pytest.approx(np.mean(paper_real) / 1e9, rel=1e-12)
    assert paper["miou"] == official["miou"]  # only the counting changed
    assert cli_main(base[:2] + ["--limit", "1", "--counting", "official"]) == 0
    assert "official (GMACs)" in capsys.readouterr().out
    rows = compare([str(official_checkpoint)], COUNTING_DATA, limit=2, counting="official")
    assert rows[0].gmacs_avg == pytest.approx(np.mean(real) / 1e9, rel=1e-12)


@pytest.fixture
def _restore_denormals():
    """``dynviz record`` on the CPU flushes denormals for the process; later tests (hypothesis
    floats) need them back."""
    yield
    torch.set_flush_denormal(False)


@pytest.mark.usefixtures("_restore_denormals")
def test_record_counting_official_writes_official_gmacs_and_says_so(
    official_checkpoint, tmp_path, capsys
):
    real, expected, paper_real = _by_hand(official_checkpoint, 3)
    out, paper_out = tmp_path / "official", tmp_path / "paper"
    base = ["record", str(official_checkpoint), "--batch", "2"]
    assert cli_main([*base, "--out", str(out), "--counting", "official", "--limit", "2"]) == 0
    assert cli_main([*base, "--out", str(paper_out)]) == 0
    capsys.readouterr()
    records = read_records(out)
    assert records.sidecar.counting is Counting.OFFICIAL
    assert records.meta["counting"] == "official"
    assert read_records(paper_out).sidecar.counting is Counting.PAPER
    images = read_records(paper_out).images.sort_values("image_id")
    np.testing.assert_allclose(images["real_gmacs"], np.asarray(paper_real) / 1e9, rtol=1e-12)
    # completing the folder in another counting would mix two; in its own it completes
    with pytest.raises(RecordError, match="'counting' differs"):
        record_into(out, official_checkpoint, counting="paper")
    assert cli_main([*base, "--out", str(out), "--counting", "official"]) == 0
    capsys.readouterr()
    images = read_records(out).images.sort_values("image_id")
    assert len(images) == 3
    np.testing.assert_allclose(images["real_gmacs"], np.asarray(real) / 1e9, rtol=1e-12)
    np.testing.assert_allclose(images["expected_gmacs"], np.asarray(expected) / 1e9, rtol=1e-6)
    # the analysis report says which counting its GMACs are in
    both = [read_records(out), read_records(paper_out)]
    report = analyze(both, tmp_path / "report", html=False, formats=("png",), dpi=40)
    text = (report.out / "report.md").read_text()
    assert "Counting: official (official), paper (paper)" in text


def record_into(out, checkpoint, *, counting: str) -> None:
    model, meta = load_model(checkpoint)
    record(
        model,
        build_dataset(COUNTING_DATA, split="val"),
        out,
        checkpoint={"path": str(meta["path"]), "sha256": meta["sha256"], "iteration": 3},
        data_spec=COUNTING_DATA,
        split="val",
        counting=counting,
    )


def test_sidecar_counting_defaults_to_paper_and_rejects_unknown_values():
    assert Sidecar.from_dict({"format": "dynviz-records"}).counting is Counting.PAPER
    sidecar = Sidecar.from_dict({"counting": "official"})
    assert sidecar.counting is Counting.OFFICIAL and sidecar.to_dict()["counting"] == "official"
    with pytest.raises(SidecarError, match="'counting'.*'oficial'"):
        Sidecar.from_dict({"counting": "oficial"}, where="x/records.json")


@pytest.mark.parametrize("command", ["eval", "record", "compare"])
@pytest.mark.parametrize("value", ["complete", "bogus"])
def test_counting_values_other_than_paper_and_official_are_refused(command, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main([command, "x.pt", "--data", "synthetic", "--out", "o", "--counting", value])
    assert exit_info.value.code == 2
    assert f"invalid choice: '{value}'" in capsys.readouterr().err
