"""What each open path of a trained Dynamic-Budget is worth to each image (issue 20, docs/demo.md).

For a run that ``analysis/closing_thresholds.py`` trained (``OUT/seedN``), runs the network on
``--val`` validation scenes of that seed with its active threshold at ``--threshold``, then closes
each path that is open on an image, alone (every other alpha as the gates gave it), and writes one
row per (image, open path) to ``OUT/seedN/path_value.parquet``: the image's scale regime, the
path's alpha, the image's loss change (mean cross-entropy over its pixels, nats) and the real MACs
the closing saves (the path, and whatever it alone fed). It prints, per scale regime, the open
paths per image and the share of them that are *idle* (closing one alone raises the loss by less
than ``--idle`` nats), and the share of idle paths by alpha. Two parallel paths can each be idle
while the image needs one of them: the idle share bounds what could be closed from above. It
first prints how many images have a loss above 10 nats, the largest loss and logit, and the
smallest running variance of a BatchNorm the images run through (a node that few samples reach
can blow up the images that reach it: the twelfth round).

Usage (the eleventh round of docs/demo.md)::

    python analysis/closing_thresholds.py --seeds 0 1 2 3 4 --thresholds 0.3 --out runs/closing
    python analysis/path_value.py runs/closing/seed0 --seed 0
    python analysis/path_value.py runs/radial-hue/seed1 --seed 1 --scenes large=radial,small=hue
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from dynviz.data import build_dataset
from dynviz.data.errors import DataError
from dynviz.data.transforms import IGNORE_INDEX, normalize
from dynviz.demo.chain import DEMO
from dynviz.model.checkpoint import load_model
from dynviz.model.config import Direction
from dynviz.model.cost import cost_table
from dynviz.model.network import RoutingNetwork
from dynviz.train.precise_bn import batchnorms

ALPHA_BINS = (0.0, 0.5, 0.7, 0.9, 0.97, 1.0)


def image_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over each image's labelled pixels, ``(B,)``."""
    pixels = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")
    valid = (labels != IGNORE_INDEX).sum((1, 2)).clamp(min=1)
    return pixels.sum((1, 2)) / valid


@torch.no_grad()
def path_values(model: RoutingNetwork, images: torch.Tensor, labels: torch.Tensor) -> pd.DataFrame:
    """Close each open path of each image alone; one row per (image, open path).

    Args:
        model: a dynamic network in eval mode; its ``active_threshold`` decides what is open.
        images: ``(B, 3, H, W)`` normalised images.
        labels: ``(B, H, W)`` int64 class maps (``IGNORE_INDEX`` ignored).

    Returns:
        Columns ``image`` (index in the batch), ``layer``, ``scale`` (the stride, as in
        records), ``scale_index``, ``direction`` (``keep``, ``up``, ``down``), ``alpha``,
        ``loss_change`` (nats, closed minus open) and ``macs_saved``.
    """
    table = cost_table(model.config, tuple(images.shape[-2:]))
    out = model(images, skip=False)
    alphas = out.gates  # (B, L + 1, S, 3), the closing rule applied
    active = out.active
    loss = image_loss(out.logits, labels)
    cost = table.real(active, gates_ran=True)
    rows = []
    for layer, scale, d in torch.nonzero(active.any(0)).tolist():
        closed = alphas.clone()
        closed[:, layer, scale, d] = 0.0  # the other alphas as the gates gave them
        changed = model(images, route=closed, skip=False)
        loss_change = image_loss(changed.logits, labels) - loss
        saved = cost - table.real(changed.active, gates_ran=True)
        for i in torch.nonzero(active[:, layer, scale, d]).flatten().tolist():
            rows.append(
                {
                    "image": i,
                    "layer": layer,
                    "scale": model.config.stride(scale),
                    "scale_index": scale,
                    "direction": Direction(d).label,
                    "alpha": float(alphas[i, layer, scale, d]),
                    "loss_change": float(loss_change[i]),
                    "macs_saved": float(saved[i]),
                }
            )
    return pd.DataFrame(rows)


def summary(
    values: pd.DataFrame, regimes: pd.Series, idle: float
) -> tuple[pd.DataFrame, pd.Series]:
    """Per regime: images, open paths per image, share idle; and the share idle by alpha.

    ``values`` are :func:`path_values` rows with the image's ``regime``; ``regimes`` holds every
    image's regime, so that an image with no open path still counts."""
    values = values.assign(idle=values["loss_change"] < idle)
    per_regime = values.groupby("regime").agg(paths=("idle", "size"), idle=("idle", "mean"))
    per_regime.insert(0, "images", regimes.value_counts())
    per_regime["open_per_image"] = per_regime["paths"] / per_regime["images"]
    bins = pd.cut(values["alpha"], list(ALPHA_BINS))
    return per_regime, values.groupby(bins, observed=True)["idle"].agg(["size", "mean"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a seed folder of closing_thresholds.py")
    parser.add_argument("--seed", type=int, required=True, help="the folder's seed")
    parser.add_argument("--scenes", default="", help="the scenes it trained on (default: demo's)")
    parser.add_argument("--val", type=int, default=288, help="validation scenes (default 288)")
    parser.add_argument("--threshold", type=float, default=0.3, help="active threshold (0.3)")
    parser.add_argument("--idle", type=float, default=0.002, help="idle below (nats, 0.002)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    try:
        settings = dataclasses.replace(DEMO, seed=args.seed, val_count=args.val, scenes=args.scenes)
    except DataError as err:
        parser.error(f"--scenes: {err}")
    run = args.folder / "runs" / "budget"
    if not (run / "checkpoint_latest.pt").is_file():
        parser.error(f"{run} holds no trained run (checkpoint_latest.pt)")
    model, _ = load_model(run)
    model.eval()
    model.config = dataclasses.replace(model.config, active_threshold=args.threshold)
    data = build_dataset(settings.val_data, split="val")
    samples = [data.sample(i) for i in range(len(data))]
    images = torch.stack([normalize(s.image) for s in samples])
    labels = torch.from_numpy(np.stack([s.label for s in samples]).astype(np.int64))
    ran = []  # the BatchNorms the images run through (skipping, so unreached nodes do not run)
    hooks = [m.register_forward_hook(lambda m, *_: ran.append(m)) for m in batchnorms(model)]
    with torch.no_grad():
        logits = model(images).logits
    for hook in hooks:
        hook.remove()
    losses = image_loss(logits, labels)
    variance = min(float(m.running_var.min()) for m in ran)
    print(
        f"images with a loss above 10 nats: {int((losses > 10).sum())} of {len(losses)}"
        f" (largest {float(losses.max()):.3g} nats,"
        f" largest |logit| {float(logits.abs().max()):.3g});"
        f" smallest running variance of a BatchNorm they run through {variance:.2g}"
    )
    values = path_values(model, images, labels)
    regimes = pd.Series([s.regime for s in samples])
    values.insert(1, "image_id", [data.image_id(i) for i in values["image"]])
    values.insert(2, "regime", regimes.to_numpy()[values["image"]])
    values.to_parquet(args.folder / "path_value.parquet")
    per_regime, by_alpha = summary(values, regimes, args.idle)
    print(f"open paths and idle ones (closing one alone costs < {args.idle:g} nats):")
    print(per_regime.round(3).to_string())
    print("idle share by alpha:")
    print(by_alpha.round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
