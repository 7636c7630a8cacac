"""``dynviz demo``: the main job on the embedded synthetic data.

For now: the cost tables of the presets and special cases, and a forward pass of the tiny space on
synthetic scenes with its per-image routes, written to ``OUT/report.md``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

import dynviz
from dynviz.commands.flops import model_cost, special_cases
from dynviz.cost import cost_table
from dynviz.model.zoo import load_spec

__all__ = ["configure_parser", "main"]

logger = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")


def main(args: argparse.Namespace) -> int:
    from dynviz.data import build_dataset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# dynviz demo",
        "",
        "## Cost of the presets at 1024x2048 (paper counting)",
        "",
        "| model | kind | params | GMACs |",
        "| --- | --- | ---: | ---: |",
    ]
    for name in ("layer16", "layer16-fix", "dynamic-a", "layer33"):
        c = model_cost(load_spec(name))
        lines.append(f"| {c.name} | {c.kind} | {c.params:,} | {c.gmacs:.2f} |")
    lines += [
        "",
        "## Special cases beside Table 1",
        "",
        "| model | params (M) | paper | GMACs | paper |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for c in special_cases():
        p = c.paper or {}
        lines.append(
            f"| {c.name} | {c.params / 1e6:.2f} | {p.get('params_m')} | {c.gmacs:.1f} "
            f"| {p.get('gflops')} |"
        )
    data = build_dataset("synthetic:count=4,size=128x128", split="val")
    model = dynviz.build_model("tiny", num_classes=data.num_classes).eval()
    table = cost_table(model.config, (128, 128))
    lines += [
        "",
        "## Routes of an untrained tiny model on synthetic scenes",
        "",
        "| image | open paths | real MMACs | expected MMACs |",
        "| --- | ---: | ---: | ---: |",
    ]
    with torch.inference_mode():
        for i in range(len(data)):
            item = data[i]
            o = model(item["image"].unsqueeze(0))
            lines.append(
                f"| {item['image_id']} | {int(o.active.sum())} | "
                f"{table.real(o.active).item() / 1e6:.2f} | "
                f"{table.expected(o.gates).item() / 1e6:.2f} |"
            )
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    logger.info("wrote %s", report)
    return 0
