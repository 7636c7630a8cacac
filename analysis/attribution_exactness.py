"""How exact are the gate attribution maps on real-size inputs?

For each model (default: ``layer16`` and ``dynamic-a``, untrained, BatchNorm statistics taken
from a few synthetic scenes so that the gates vary) and each synthetic image at ``--size``,
runs :func:`dynviz.model.attribution.attribute` and prints, over every gate that ran, the largest
``|mean(map) + bias - logit|`` (the logit the network computed in its own forward pass) and
that figure divided by the largest ``|logit|`` (the issue's bound: <= 1e-5).

Usage::

    python analysis/attribution_exactness.py                       # 512x1024, 2 images
    python analysis/attribution_exactness.py --size 256 512 --images 1 --models dynamic-a
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import torch

import dynviz
from dynviz.data import build_dataset
from dynviz.model.attribution import attribute

BOUND = 1e-5


def calibrated(
    name: str, num_classes: int, batch: torch.Tensor, semantics: str = "paper"
) -> torch.nn.Module:
    """An untrained preset with BatchNorm statistics of ``batch`` (one train-mode forward)."""
    torch.manual_seed(0)
    model = dynviz.build_model(name, num_classes=num_classes, semantics=semantics)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: the batch's own statistics
    model.train()
    with torch.no_grad():
        model(batch)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", nargs=2, type=int, default=(512, 1024), metavar=("H", "W"))
    parser.add_argument("--images", type=int, default=2, help="images per model (default 2)")
    parser.add_argument("--models", nargs="+", default=["layer16", "dynamic-a"])
    parser.add_argument(
        "--semantics", default="paper", choices=("paper", "official"), help="default: paper"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    height, width = args.size
    spec = f"synthetic:count={max(args.images, 2)},size={height}x{width},classes=6,seed=0"
    data = build_dataset(spec, split="val")
    calib = build_dataset("synthetic:count=4,size=128x256,classes=6,seed=1", split="train")
    batch = torch.stack([calib[i]["image"] for i in range(len(calib))])
    worst = 0.0
    print(
        f"{'model':<10} {'image':<14} {'gates':>5} {'max err':>10} {'max|logit|':>10} "
        f"{'ratio':>9} {'seconds':>7}"
    )
    for name in args.models:
        model = calibrated(name, data.num_classes, batch, args.semantics).to(args.device)
        semantics = model.config.semantics.value
        for i in range(args.images):
            image = data[i]["image"].to(args.device)
            start = time.perf_counter()
            attr = attribute(model, image)
            seconds = time.perf_counter() - start
            ratio = attr.max_error / attr.max_abs_logit
            worst = max(worst, ratio)
            # the same per node: error over the node's own largest |logit|
            per_node = max(n.error / float(abs(n.logits).max()) for n in attr.nodes.values())
            print(
                f"{name:<10} {data.image_id(i):<14} {len(attr.nodes):>5} "
                f"{attr.max_error:>10.3g} {attr.max_abs_logit:>10.4g} {ratio:>9.2g} "
                f"{per_node:>9.2g} "
                f"{seconds:>7.1f}  ({semantics}, {model.config.gate.value} gates, "
                f"{height}x{width})"
            )
    print(f"worst ratio {worst:.3g} (bound {BOUND:g}): {'OK' if worst <= BOUND else 'FAIL'}")
    return 0 if worst <= BOUND else 1


if __name__ == "__main__":
    sys.exit(main())
