"""``dynviz export``: a route's static network to ONNX, BN folded, gates removed.

``dynviz export fcn32s --out fcn32s.onnx`` exports a zoo special case (freshly initialised);
``dynviz export runs/dyn-a --route common-a.yaml --out common-a.onnx --check`` takes a trained
dynamic model (checkpoint or run folder), copies the route's weights into the static network of
the route, folds BN and exports; ``--check`` compares onnxruntime with PyTorch.

The graph takes any height and width unless ``--size H W`` fixes them; ``--check`` runs it at
two sizes (one a multiple of the largest stride, one not) or, with ``--size``, at that size.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import torch

from dynviz.commands import add_threads_option, positive_int, set_threads
from dynviz.errors import MissingExtraError
from dynviz.inference.export import (
    DEFAULT_OPSET,
    DEFAULT_TOLERANCE,
    ExportError,
    check_onnx,
    count_batchnorm,
    export_onnx,
    load_for_export,
    static_network,
)
from dynviz.model.config import ConfigError
from dynviz.model.cost import cost_table
from dynviz.units import GIGA, format_macs

__all__ = ["configure_parser", "main"]

logger = logging.getLogger(__name__)

COST_SIZE = (512, 1024)
"""The size the GMACs of a graph of any size are reported at."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        help="preset name or YAML (a route spec, or a space with "
        "--route), a checkpoint file or a run folder",
    )
    parser.add_argument(
        "--route", help="route spec to export (preset name or YAML); required for a dynamic model"
    )
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument(
        "--size",
        nargs=2,
        type=positive_int,
        default=None,
        metavar=("H", "W"),
        help="fix the graph's input height and width (default: any size)",
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})"
    )
    parser.add_argument("--no-fold", action="store_true", help="keep BatchNorm layers")
    parser.add_argument(
        "--check",
        action="store_true",
        help="run onnxruntime on random images at two sizes (at --size when given) and compare "
        f"logits with PyTorch (max |diff| / max |logit| < {DEFAULT_TOLERANCE:g})",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="--check tolerance, relative to the logit scale",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_threads_option(parser)


def check_sizes(size: tuple[int, int] | None, stride: int) -> list[tuple[int, int, int]]:
    """``(batch, height, width)`` of the ``--check`` runs: at a fixed size, that size with two
    images; otherwise two images at ``(2s, 4s)`` and one at ``(2s + 8, 3s - 8)`` (``s`` the
    largest stride: a multiple of it, and a size the graph pads)."""
    if size is not None:
        return [(2, size[0], size[1])]
    return [(2, 2 * stride, 4 * stride), (1, 2 * stride + 8, 3 * stride - 8)]


def main(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    size = None if args.size is None else (args.size[0], args.size[1])
    try:
        model, route, meta = load_for_export(args.model, args.route)
        own = model.route is not None and not args.route  # a static net exports itself
        net = static_network(model, None if own else route, fold=not args.no_fold)
        path = export_onnx(net, args.out, size, opset=args.opset)
    except (ExportError, ConfigError, MissingExtraError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    params = sum(p.numel() for p in net.parameters())
    cost_size = size or COST_SIZE
    gmacs = cost_table(route.space, cost_size, route=route).total() / GIGA
    result: dict[str, object] = {
        "model": args.model,
        "route": route.name,
        "out": str(path),
        "size": None if size is None else list(size),
        "dynamic_size": size is None,
        "opset": args.opset,
        "params": params,
        "gmacs": gmacs,
        "gmacs_size": list(cost_size),
        "cells": len(route.cells),
        "paths": len(route),
        "batchnorm_left": count_batchnorm(net),
        "bytes": path.stat().st_size,
        "checkpoint": meta.get("path"),
    }
    status = 0
    if args.check:
        gen = torch.Generator().manual_seed(0)
        checks = []
        try:
            for batch, height, width in check_sizes(size, route.space.max_stride):
                images = torch.randn(batch, 3, height, width, generator=gen)
                check = check_onnx(path, net, images, tolerance=args.tolerance)
                checks.append(
                    {
                        "batch": batch,
                        "size": [height, width],
                        "max_abs_diff": check.max_abs_diff,
                        "logit_scale": check.logit_scale,
                        "relative": check.relative,
                        "ok": check.ok,
                    }
                )
        except MissingExtraError as err:
            print(f"error: --check: {err}", file=sys.stderr)
            return 2
        ok = all(c["ok"] for c in checks)
        result["check"] = {
            "runs": checks,
            "relative": max(float(c["relative"]) for c in checks),
            "tolerance": args.tolerance,
            "ok": ok,
        }
        status = 0 if ok else 1
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return status
    shape = "any height and width" if size is None else f"{size[0]}x{size[1]} only"
    print(
        f"wrote {path} ({result['bytes'] / 1e6:.1f} MB): route {route.name!r}, "
        f"{len(route.cells)} cells, {len(route)} paths, {params:,} params, "
        f"{format_macs(gmacs)} at {cost_size[0]}x{cost_size[1]}, input {shape}, "
        f"{'BN folded' if not args.no_fold else 'BN kept'}, no gates"
    )
    if args.check:
        for c in checks:
            verdict = "ok" if c["ok"] else "FAILED"
            print(
                f"onnxruntime vs PyTorch at {c['batch']}x3x{c['size'][0]}x{c['size'][1]}: "
                f"max |diff| {c['max_abs_diff']:.2e}, {c['relative']:.1e} of the logit scale "
                f"{c['logit_scale']:.3g} (tolerance {args.tolerance:g}): {verdict}"
            )
    return status
