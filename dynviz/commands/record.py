"""``dynviz record SOURCE --data SPEC --out RECORDS_DIR``: record a model's routes over a data set.

SOURCE is a run directory (its best, else latest, checkpoint), a ``.pt`` checkpoint, or a model
preset / YAML (an untrained network, for smoke tests). Writes the records folder of
:mod:`dynviz.record`: ``gates/`` and ``images/`` Parquet parts and ``records.json``. A re-run
completes an interrupted one and never duplicates rows. Under ``torchrun`` each rank records a
disjoint share and writes its own parts. ``--counting official`` computes the per-image GMACs as
the official code's counters do (docs/official.md); the sidecar records the counting.

Examples::

    dynviz record runs/dynamic-a --data synthetic:count=200 --out records/dynamic-a
    dynviz record runs/raw --data synthetic --out records/raw-fcn --route models/fcn32s.yaml
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch

from dynviz.analysis.compare import source_name
from dynviz.commands import (
    add_aug_option,
    add_counting_option,
    add_resize_option,
    add_run_options,
    add_settings_options,
    guarded,
    print_json,
    split_settings,
)
from dynviz.data import Resize, build_dataset
from dynviz.inference.tta import Augment
from dynviz.model import ConfigError
from dynviz.model.checkpoint import run_data_spec
from dynviz.model.zoo import load_route
from dynviz.record import load_records_model, record

__all__ = ["configure_parser", "main"]

logger = logging.getLogger(__name__)


INTERMIXED = True  # KEY=VALUE overrides may follow the options


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dynviz record``."""
    parser.add_argument(
        "source",
        nargs="?",
        metavar="RUN_DIR|CHECKPOINT|MODEL",
        help="a run directory, a .pt checkpoint, or a preset / YAML (untrained)",
    )
    add_settings_options(parser)
    parser.add_argument(
        "--data", metavar="SPEC", help="dataset spec (default: the run's validation data)"
    )
    parser.add_argument("--out", metavar="RECORDS_DIR", help="records folder (required)")
    parser.add_argument("--split", default="val", help="split to record (default: val)")
    parser.add_argument("--limit", type=int, metavar="N", help="record the first N images")
    parser.add_argument(
        "--route",
        metavar="ROUTE",
        help="force this route spec (preset or YAML) instead of the gates",
    )
    add_resize_option(parser)
    add_aug_option(parser)
    add_counting_option(parser)
    parser.add_argument(
        "--batch", type=int, default=1, metavar="B", help="images per forward pass (default 1)"
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=256,
        metavar="N",
        help="images per Parquet part file (default 256)",
    )
    parser.add_argument(
        "--name",
        help="label of the model in analyses (default: the run directory's or model's name)",
    )
    add_run_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _main(args: argparse.Namespace) -> int:
    from dynviz.support.distributed import all_reduce_sum, cleanup_distributed, init_distributed

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = split_settings(parser, args, "source")
    if not args.out:
        raise ConfigError("dynviz record needs --out RECORDS_DIR")
    aug = Augment.parse(args.aug)
    info = init_distributed(args.device)
    try:
        if info.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormal activations slow CPU kernels down
        if args.limit is not None and args.limit < 1:
            raise ConfigError(f"--limit {args.limit} must be >= 1")
        path = Path(args.source)
        trained = path.is_dir() or path.suffix == ".pt"
        meta: dict[str, Any] = {}
        spec = args.data
        if trained:
            model, meta = load_records_model(args.source)
            spec = spec or run_data_spec(meta)
            if not spec:
                raise ConfigError(f"{meta['path']}: records no training data; pass --data SPEC")
        elif not spec:
            raise ConfigError("an untrained MODEL needs --data SPEC")
        transform = Resize(tuple(args.size)) if args.size else None
        dataset = build_dataset(spec, split=args.split, transform=transform)
        if not trained:
            model, meta = load_records_model(args.source, num_classes=dataset.num_classes)
        route = load_route(args.route) if args.route else None
        checkpoint = None
        if meta.get("sha256"):
            checkpoint = {
                "path": str(meta["path"]),
                "sha256": meta["sha256"],
                "iteration": meta.get("iteration"),
            }
        model.to(info.device)
        result = record(
            model,
            dataset,
            args.out,
            route=route,
            limit=args.limit,
            batch_size=args.batch,
            chunk_size=args.chunk,
            name=args.name or source_name(args.source),
            checkpoint=checkpoint,
            data_spec=spec,
            split=args.split,
            device=info.device,
            workers=args.workers,
            progress=args.progress,
            aug=aug,
            counting=args.counting,
        )
        counts = all_reduce_sum(torch.tensor([result.recorded, result.parts]))  # all ranks
        if info.is_main and args.json:
            print_json(
                {
                    "records": str(result.path),
                    "name": args.name or source_name(args.source),
                    "recorded": int(counts[0]),
                    "skipped": result.skipped,
                    "parts": int(counts[1]),
                    "data": spec,
                    "split": args.split,
                    "counting": args.counting,
                    "checkpoint": checkpoint,
                }
            )
        elif info.is_main:
            print(
                f"recorded {int(counts[0])} image(s) into {result.path} "
                f"({result.skipped} already there, {int(counts[1])} part file(s) written)"
            )
        return 0
    finally:
        cleanup_distributed()


def main(args: argparse.Namespace) -> int:
    """``dynviz record``."""
    return guarded(_main, args)
