"""``dynviz extract RECORDS_DIR --threshold 0.95 --out models/NAME.yaml``: the common network.

Keeps the paths active in more than the threshold of the recorded images, removes dangling cells
and writes a route spec (:func:`dynviz.analysis.common.write_common`) that ``dynviz.build_model``
builds as a static network and ``dynviz train models/NAME.yaml --data ...`` retrains
(Common-A/B/C of the paper's Table 1). The file starts with a comment naming the source records
and threshold; its ``notes`` give the parameters and GMACs of the static network.

A damaged part of the records is skipped with its chunk by default (a warning names the file,
the fault and the images lost; the summary and the file's header say what was skipped);
``--strict`` refuses it (:mod:`dynviz.record.tables`).
"""

from __future__ import annotations

import argparse

from dynviz.analysis.common import write_common
from dynviz.commands import add_strict_option, guarded, positive_int, print_json
from dynviz.model import ConfigError
from dynviz.record import read_records
from dynviz.rules import COMMON_THRESHOLD

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dynviz extract``."""
    parser.add_argument("records", metavar="RECORDS_DIR", help="records folder")
    parser.add_argument(
        "--threshold",
        type=float,
        default=COMMON_THRESHOLD,
        help=f"keep paths active in more than this share of images (default {COMMON_THRESHOLD})",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="YAML",
        help="route spec to write, e.g. models/common-a.yaml",
    )
    parser.add_argument("--name", help="route name (default: the file's stem)")
    parser.add_argument(
        "--size",
        nargs=2,
        type=positive_int,
        metavar=("H", "W"),
        help="input size for the GMACs in the notes (default: the records')",
    )
    add_strict_option(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _main(args: argparse.Namespace) -> int:
    if not 0.0 <= args.threshold < 1.0:
        raise ConfigError(f"--threshold {args.threshold} must be in [0, 1)")
    records = read_records(args.records, strict=args.strict)
    route = write_common(
        records,
        args.out,
        threshold=args.threshold,
        name=args.name,
        size=tuple(args.size) if args.size else None,
    )
    if not args.json:
        print(f"wrote {args.out}: {route.name}, {len(route)} paths in {len(route.cells)} cells")
        print(f"  {route.meta.get('notes', '')}")
        if records.skipped:
            print(f"  {records.skipped_note}")
        return 0
    from dynviz.analysis.common import PAPER_SIZE
    from dynviz.model.zoo import model_cost

    size = args.size or records.sidecar.input_size or PAPER_SIZE
    size = (int(size[0]), int(size[1]))
    static, dynamic = model_cost(route, size=size), model_cost(route.space, size=size)
    print_json(
        {
            "out": str(args.out),
            "name": route.name,
            "records": str(args.records),
            "threshold": args.threshold,
            "paths": len(route),
            "cells": len(route.cells),
            "params": static.params,
            "gmacs": static.gmacs,
            "dynamic_gmacs": dynamic.gmacs,
            "size": list(size),
            "notes": route.meta.get("notes", ""),
            "skipped": [s.to_dict() for s in records.skipped],
        }
    )
    return 0


def main(args: argparse.Namespace) -> int:
    """``dynviz extract``."""
    return guarded(_main, args)
