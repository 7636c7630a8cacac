"""``dynviz attribute SOURCE IMAGE --out DIR``: why an image takes its route.

Writes the exact attribution maps of every gate that runs on the image
(``dynviz.model.attribution``): ``attribution.parquet`` (one row per path: logit, bias, alpha,
the map itself), one PNG overlay per path under ``maps/``, the per-image region maps of the down
and up paths and ``summary.csv``. SOURCE is a run directory, a ``.pt`` checkpoint, or a model
preset / YAML (an untrained network, for smoke tests).

Examples::

    dynviz attribute runs/dynamic-a street.png --out attribution/street
    dynviz attribute runs/dynamic-a street.png --out attribution/street --size 512 1024
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from dynviz.commands import add_threads_option, guarded, positive_int, print_json

__all__ = ["configure_parser", "main"]

logger = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dynviz attribute``."""
    parser.add_argument(
        "source",
        metavar="RUN_DIR|CHECKPOINT|MODEL",
        help="a run directory, a .pt checkpoint, or a preset / YAML (untrained)",
    )
    parser.add_argument("image", metavar="IMAGE", help="an image file (PNG, JPEG, ...)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--size",
        nargs=2,
        type=positive_int,
        metavar=("H", "W"),
        help="resize the image to H x W first (default: as it is)",
    )
    parser.add_argument(
        "--opacity", type=float, default=0.6, help="overlay opacity at the largest |map|"
    )
    add_threads_option(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _main(args: argparse.Namespace) -> int:
    from dynviz.data import Resize
    from dynviz.model.attribution import attribute
    from dynviz.plots.attribution_png import write_attribution
    from dynviz.record import load_records_model
    from dynviz.record.uploads import read_upload

    path = Path(args.image)
    upload = read_upload(path.read_bytes(), name=str(path))
    image = upload.image
    if args.size:
        image = Resize(tuple(args.size))(image, np.zeros(image.shape[:2], np.uint8))[0]
    model, _ = load_records_model(args.source)
    attr = attribute(model, image)
    folder = write_attribution(attr, image, args.out, opacity=args.opacity)
    relative = attr.max_error / (attr.max_abs_logit or 1.0)
    paths = sum(len(node.directions) for node in attr.nodes.values())
    if args.json:
        print_json(
            {
                "out": str(folder),
                "image": str(path),
                "size": [int(image.shape[0]), int(image.shape[1])],
                "gates": len(attr.nodes),
                "maps": paths,
                "max_error": attr.max_error,
                "max_abs_logit": attr.max_abs_logit,
                "relative_error": relative,
            }
        )
        return 0
    print(
        f"attributed {len(attr.nodes)} gates ({paths} paths) on {path.name} "
        f"({image.shape[0]}x{image.shape[1]}): {paths} maps in {folder / 'maps'}, colour scale in "
        f"{folder / 'colorbar.png'}; max |mean(map) + bias - logit| = {attr.max_error:.3g} "
        f"({relative:.2g} x max |logit|)"
    )
    return 0


def main(args: argparse.Namespace) -> int:
    """``dynviz attribute``."""
    return guarded(_main, args)
