"""``dynviz compare RUN_DIR... --data SPEC --out DIR``: a Table-1-style comparison of trained runs.

Each run (a run directory or ``.pt`` checkpoint) is evaluated on the same data by
:func:`dynviz.analysis.compare.compare` (batch 1, real skipping): data-set mIoU and real GMACs per
image
(average, maximum, minimum, as in the paper's Table 1), plus parameters. Rows are dynamic models,
common networks (``dynviz extract``), special cases (route specs carrying the paper's numbers) and
other static networks. Writes ``table1.md`` and ``table1.csv``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dynviz.analysis.compare import compare, write_table
from dynviz.commands import (
    add_counting_option,
    add_resize_option,
    add_threads_option,
    guarded,
    print_json,
)
from dynviz.model import ConfigError

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dynviz compare``."""
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories or .pt files")
    parser.add_argument("--data", required=True, metavar="SPEC", help="evaluation data spec")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--split", default="val", help="split (default: val)")
    parser.add_argument("--limit", type=int, metavar="N", help="evaluate the first N images")
    add_resize_option(parser)
    add_counting_option(parser)
    parser.add_argument(
        "--names",
        nargs="+",
        metavar="NAME",
        help="method names, one per run (default: the run directories' names)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: when stderr is a terminal, else a log line every half "
        "minute)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_threads_option(parser)


def _main(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit} must be >= 1")
    rows = compare(
        args.runs,
        args.data,
        split=args.split,
        limit=args.limit,
        size=tuple(args.size) if args.size else None,
        names=args.names,
        progress=args.progress,
        counting=args.counting,
    )
    table = write_table(rows, args.out, data=args.data, split=args.split, counting=args.counting)
    out = Path(args.out)
    if args.json:
        print_json(
            {
                "table": str(table),
                "csv": str(out / "table1.csv"),
                "data": args.data,
                "split": args.split,
                "counting": args.counting,
                "rows": [row.fields() for row in rows],
            }
        )
        return 0
    print(table.read_text(encoding="utf-8"), end="")
    print(f"\nwrote {out / 'table1.md'} and {out / 'table1.csv'}")
    return 0


def main(args: argparse.Namespace) -> int:
    """``dynviz compare``."""
    return guarded(_main, args)
