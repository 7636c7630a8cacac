"""Issue 27 end to end: the two reference networks and a model nobody wrote for dynviz go
through ``dynviz record``, ``analyze``, ``extract`` and the explorer (in the real browser).

``PlainResNet`` below has no dynviz import: it is a plain residual network whose blocks skip
when their own gate says so. ``build_plain`` gives it gates with :func:`dynviz.gates.watch`
only, and ``dynviz record tests/test_any_network.py:build_plain`` records it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from dynviz.cli import main as cli

SPEC = "synthetic:count=8,size=64x64,classes=4,seed=0"
HERE = Path(__file__).resolve()


# ------------------------------------------------------------ a model with no dynviz import
class GatedBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 1), nn.Sigmoid()
        )
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())

    def forward(self, x):
        run = self.gate(x)[:, 0] > 0.5
        out = x.clone()
        if run.any():
            out[run] = x[run] + self.body(x[run])
        return out


class PlainResNet(nn.Module):
    def __init__(self, num_classes: int = 4, channels: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.layer1 = nn.Sequential(GatedBlock(channels), GatedBlock(channels))
        self.head = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x):
        return self.head(self.layer1(torch.relu(self.stem(x / 58.0))))


BLOCK_MACS = 64 * 64 * 8 * 8 * 9  # one block's conv at 64x64
BASE_MACS = 64 * 64 * 3 * 8 * 9 + 64 * 64 * 8 * 4  # stem and head


def build_plain(num_classes: int = 4) -> nn.Module:
    """The entry point: the model above, with gates attached by name."""
    from dynviz.gates import Sigmoid, watch

    torch.manual_seed(0)
    model = PlainResNet(num_classes)
    with torch.no_grad():  # block 0 always runs, block 1 never: hand-checkable usage
        model.layer1[0].gate[2].bias.fill_(6.0)
        model.layer1[1].gate[2].bias.fill_(-6.0)
        model.layer1[0].gate[2].weight.zero_()
        model.layer1[1].gate[2].weight.zero_()
    watch(
        model,
        {f"layer1.{i}.gate": Sigmoid(macs=float(BLOCK_MACS)) for i in range(2)},
        name="plain-resnet",
        base_macs=float(BASE_MACS),
    )
    return model


NETWORKS = {
    "skipnet": "dynviz.gates.skipnet:build_skipnet",
    "moe": "dynviz.gates.moe:build_moe",
    "plain": f"{HERE}:build_plain",
}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Records, reports and plans of the three networks (untrained: the pipeline, not a
    result)."""
    from dynviz.gates.entry import load_entry, save_gated_checkpoint

    root = tmp_path_factory.mktemp("any-network")
    for name, spec in NETWORKS.items():
        records = root / "records" / name
        source = spec
        if name != "plain":  # weights in a checkpoint that carries its builder
            torch.manual_seed(0)
            model = load_entry(spec, kwargs={"num_classes": 4})
            source = str(root / f"{name}.pt")
            save_gated_checkpoint(model, source, builder=spec, kwargs={"num_classes": 4})
        assert cli(["record", source, "--data", SPEC, "--out", str(records), "-q"]) == 0
        assert cli(["analyze", str(records), "--out", str(root / "reports" / name), "-q"]) == 0
        plan = root / "plans" / f"{name}.yaml"
        extract = ["extract", str(records), "--out", str(plan), "--lossless", "-q"]
        if name != "plain":  # the reference networks build their static network
            extract += ["--static-out", str(root / "plans" / f"{name}.pt")]
        assert cli(extract) == 0
    return root


def test_the_three_networks_are_recorded_analysed_and_extracted(root):
    from dynviz.record import read_records

    for name in NETWORKS:
        records = read_records(root / "records" / name)
        assert records.kind == "gate-graph" and len(records.images) == 8
        assert (root / "reports" / name / "report.md").is_file()
        assert (root / "reports" / name / "value_distribution.png").is_file()
        plan = yaml.safe_load((root / "plans" / f"{name}.yaml").read_text())
        assert set(plan["keep"]) == set(records.graph.point_names)
    plain = yaml.safe_load((root / "plans" / "plain.yaml").read_text())
    assert plain["keep"] == {"layer1.0.gate": ["run"], "layer1.1.gate": ["skip"]}
    costs = read_records(root / "records" / "plain").images["real_gmacs"]
    assert costs.tolist() == [(BASE_MACS + BLOCK_MACS) / 1e9] * 8  # block 1 never ran
    for name in ("skipnet", "moe"):
        assert (root / "plans" / f"{name}.pt").is_file()


def test_the_static_network_of_a_lossless_plan_predicts_as_the_dynamic_one(root):
    from dynviz.data import build_dataset
    from dynviz.gates.entry import load_entry

    data = build_dataset(SPEC, split="val")
    x = torch.stack([data[i]["image"] for i in range(4)])
    for name in ("skipnet", "moe"):
        dynamic = load_entry(None, checkpoint=root / f"{name}.pt").eval()
        static = load_entry(None, checkpoint=root / "plans" / f"{name}.pt").eval()
        with torch.no_grad():
            torch.testing.assert_close(static(x), dynamic(x), rtol=1e-4, atol=1e-4)


@pytest.mark.browser
def test_the_explorer_shows_each_network_in_a_real_browser(root, tmp_path):
    from test_browser import _opened, chromium, streamlit_server

    from dynviz.record import read_records

    with streamlit_server(root, tmp_path / "server.log") as url, chromium() as browser:
        for name in NETWORKS:
            points = read_records(root / "records" / name).graph.point_names
            with _opened(browser, url, f"gates?records=records/{name}", "Gates") as page:
                page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg', timeout=30_000)
                ticks = page.locator('[data-testid="stPlotlyChart"]').first.locator(".ytick text")
                assert set(points) <= set(ticks.all_text_contents()), name
                assert page.locator('[data-testid="stException"]').count() == 0
        with _opened(browser, url, "route_explorer?records=records/moe", "Route explorer") as page:
            page.get_by_text("not of a routing space", exact=False).first.wait_for(timeout=30_000)
            assert page.locator('[data-testid="stException"]').count() == 0
