"""``dynviz predict RUN_DIR|CHECKPOINT IMAGES... --out DIR``: segment image files into masks,
overlays and ``predictions.csv`` (:mod:`dynviz.inference.predict`). Unreadable files are listed and
skipped; the exit status is then 3 (after everything else was written)."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from dynviz.commands import (
    add_aug_option,
    add_threads_option,
    guarded,
    positive_int,
    print_json,
)
from dynviz.data.palette import palette_for, palette_for_spec
from dynviz.errors import EXIT_BAD_FILE
from dynviz.inference.predict import CSV_FILE, predict_files
from dynviz.inference.tta import Augment
from dynviz.model import ConfigError
from dynviz.model.checkpoint import load_model, run_data_spec
from dynviz.model.zoo import load_route
from dynviz.units import format_macs

__all__ = ["configure_parser", "main"]

EXIT_SKIPPED = EXIT_BAD_FILE  # some files (or all) could not be read or were refused


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dynviz predict``."""
    parser.add_argument(
        "checkpoint",
        metavar="RUN_DIR|CHECKPOINT",
        help="a run directory (its best, else latest, checkpoint) or a .pt file",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_aug_option(parser)
    parser.add_argument(
        "--window",
        nargs=2,
        type=positive_int,
        metavar=("H", "W"),
        help="slide H x W windows over larger images (probabilities of overlaps averaged)",
    )
    parser.add_argument(
        "--window-stride",
        nargs=2,
        type=positive_int,
        metavar=("H", "W"),
        help="the windows' stride (default: two thirds of --window)",
    )
    parser.add_argument(
        "--palette",
        choices=("auto", "cityscapes", "voc"),
        default="auto",
        help="overlay colours (default auto: Cityscapes' for a run trained on cityscapes:..., "
        "else VOC's)",
    )
    parser.add_argument(
        "--opacity", type=float, default=0.5, help="weight of the colours (default 0.5)"
    )
    parser.add_argument("--route", metavar="ROUTE", help="force this route spec (preset or YAML)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available")
    add_threads_option(parser)
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal, else a log line every half minute)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _palette(choice: str, meta: dict) -> np.ndarray:
    """``--palette``: a data set's palette by name, or ``auto``: the run's data set's (the
    explorer's rule, :func:`dynviz.data.palette.palette_for_spec`)."""
    if choice != "auto":
        return palette_for(choice)
    return palette_for_spec(run_data_spec(meta))


def _main(args: argparse.Namespace) -> int:
    import torch

    if not 0.0 <= args.opacity <= 1.0:
        raise ConfigError(f"--opacity {args.opacity} must be in [0, 1]")
    if args.window_stride and not args.window:
        raise ConfigError("--window-stride needs --window H W")
    aug = Augment.parse(args.aug)
    model, meta = load_model(args.checkpoint)
    route = load_route(args.route) if args.route else None
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    result = predict_files(
        model,
        args.images,
        args.out,
        palette=_palette(args.palette, meta),
        aug=aug,
        window=tuple(args.window) if args.window else None,
        stride=tuple(args.window_stride) if args.window_stride else None,
        route=route,
        device=device,
        opacity=args.opacity,
        progress=args.progress,
    )
    mean = sum(result.real_gmacs) / len(result.real_gmacs) if result.real_gmacs else 0.0
    if args.json:
        gmacs = result.real_gmacs
        print_json(
            {
                "out": str(result.out_dir),
                "csv": str(result.out_dir / CSV_FILE),
                "checkpoint": meta["path"],
                "images": result.images,
                "reused": result.reused,
                "forwards": result.forwards,
                "real_gmacs": {
                    "mean": mean if gmacs else None,
                    "max": max(gmacs, default=None),
                    "min": min(gmacs, default=None),
                },
                "failed": [{"path": path, "reason": reason} for path, reason in result.failed],
            }
        )
    elif result.images:
        reused = f", {result.reused} kept from a killed run" if result.reused else ""
        print(
            f"segmented {result.images} image(s) ({result.forwards} forward passes, "
            f"{format_macs(mean)} real per image{reused}) into {result.out_dir}"
        )
    else:
        print(f"error: no image could be segmented into {result.out_dir}", file=sys.stderr)
    if result.failed:
        print(f"skipped {len(result.failed)} file(s):", file=sys.stderr)
        for path, reason in result.failed:
            print(f"  {reason if path in reason else f'{path}: {reason}'}", file=sys.stderr)
        return EXIT_SKIPPED
    return 0


def main(args: argparse.Namespace) -> int:
    """``dynviz predict``."""
    return guarded(_main, args)
