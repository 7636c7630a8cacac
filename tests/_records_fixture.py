"""Small records and runs on synthetic data with the ``tiny`` model, for the app and notebook
tests.

``explorer_root(folder)`` lays out what ``dynviz app DIR`` expects to find::

    DIR/runs/tiny/          config.yaml, metrics.jsonl, checkpoint_best.pt (tiny, BN-calibrated)
    DIR/records/tiny/       that checkpoint recorded on 6 synthetic 64x64 images
    DIR/records/two-chains/ the same network with a forced two-chain route
    DIR/records/fcn32s/     the FCN-32s special case (static, untrained) on 3 images

The network is untrained, but its BatchNorm statistics are set by a few forward passes in train
mode (no weight changes): with initial statistics an untrained network's gates are
all-or-nothing, with them they vary over images, so activation probabilities spread over [0, 1]
and the common network changes with the threshold.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import yaml

import dynviz
from dynviz.data import build_dataset
from dynviz.model import RoutingNetwork
from dynviz.model.checkpoint import make_checkpoint, route_to_dict, save_checkpoint, sha256_file
from dynviz.model.route import Route
from dynviz.record import record

SPEC = "synthetic:count=6,size=64x64,classes=4,seed=0"
"""The data of the fixture records (validation split)."""

SPLIT = "val"


def calibrated_tiny(spec: str = SPEC, *, seed: int = 0, passes: int = 3) -> RoutingNetwork:
    """An untrained ``tiny`` network with BatchNorm statistics of ``spec``'s images, in eval
    mode."""
    dataset = build_dataset(spec, split="train")
    torch.manual_seed(seed)
    model = dynviz.build_model("tiny", num_classes=dataset.num_classes)
    batch = torch.stack([dataset[i]["image"] for i in range(min(len(dataset), 8))])
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            model(batch)
    return model.eval()


def write_run(folder: Path, model: RoutingNetwork, *, iters: int = 40, spec: str = SPEC) -> Path:
    """A run folder as ``dynviz train`` leaves it (config, metrics, best checkpoint), with
    made-up but plausible training curves."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "dynviz_version": dynviz.__version__,
        "torch_version": str(torch.__version__),
        "world_size": 1,
        "model": model.config.to_dict(),
        "route": route_to_dict(model.route),
        "train": {
            "model": model.config.name,
            "data": spec,
            "out": str(folder),
            "iters": iters,
            "batch": 4,
            "crop": [64, 64],
        },
        "data": {"train": spec, "val": spec, "val_split": SPLIT, "num_classes": 4},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    lines = []
    for it in range(2, iters + 1, 2):
        loss = 1.4 * math.exp(-it / 25) + 0.3
        lines.append(
            {
                "kind": "train",
                "iter": it,
                "loss": loss,
                "ce_loss": loss * 0.95,
                "budget_loss": loss * 0.05,
                "expected_cost_ratio": 0.9 - 0.004 * it,
                "lr": 0.05 * (1 - it / iters) ** 0.9,
                "images_per_s": 12.0,
            }
        )
        if it % 10 == 0:
            lines.append(
                {
                    "kind": "eval",
                    "iter": it,
                    "val_miou": 0.2 + 0.005 * it,
                    "val_pixel_accuracy": 0.6 + 0.004 * it,
                    "real_gmacs": 0.0015,
                    "expected_gmacs": 0.0014,
                    "val_images": 6,
                }
            )
    (folder / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8"
    )
    checkpoint = make_checkpoint(model, iteration=iters, best_metric=0.4, rng=False)
    save_checkpoint(folder / "checkpoint_best.pt", checkpoint)
    return folder


def explorer_root(folder: Path) -> Path:
    """Build the runs and records of the module docstring under ``folder`` (about 5 s)."""
    folder = Path(folder)
    dataset = build_dataset(SPEC, split=SPLIT)
    model = calibrated_tiny()
    run = write_run(folder / "runs" / "tiny", model)
    best = run / "checkpoint_best.pt"
    checkpoint = {"path": str(best), "sha256": sha256_file(best), "iteration": 40}
    record(
        model,
        dataset,
        folder / "records" / "tiny",
        name="tiny",
        checkpoint=checkpoint,
        data_spec=SPEC,
        split=SPLIT,
        progress=False,
    )
    chains = Route.from_chains(
        model.config, [[4, 8, 8, 16, 16], [4, 4, 4, 8, 8]], name="two-chains"
    )
    record(
        model,
        dataset,
        folder / "records" / "two-chains",
        route=chains,
        name="two-chains",
        checkpoint=checkpoint,
        data_spec=SPEC,
        split=SPLIT,
        progress=False,
    )
    torch.manual_seed(0)
    fcn = dynviz.build_model("fcn32s", num_classes=dataset.num_classes).eval()
    record(
        fcn,
        dataset,
        folder / "records" / "fcn32s",
        name="fcn32s",
        limit=3,
        data_spec=SPEC,
        split=SPLIT,
        progress=False,
    )
    return folder


_BUILT: dict[str, Path] = {}


def shared_explorer_root(tmp_path_factory) -> Path:  # noqa: ANN001 - pytest's factory
    """:func:`explorer_root` built once per test session."""
    key = str(tmp_path_factory.getbasetemp())
    if key not in _BUILT:
        _BUILT[key] = explorer_root(tmp_path_factory.mktemp("explorer"))
    return _BUILT[key]
