"""``dynviz demo``: the main job, the whole chain on the embedded synthetic data.

Trains a small dynamic network without and with a budget, records both, analyzes them, extracts
the common network, retrains it beside special cases modeled in the same space, compares them and
writes ``OUT/report.md``. Within 10 minutes on 2 idle CPU cores (two steps at a time, one
process per core); a re-run reuses finished steps. Every step's time is in ``OUT/demo.log``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from dynviz.data.errors import DataError
from dynviz.demo.chain import DEMO, QUICK, run_chain

__all__ = ["configure_parser", "main"]

logger = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smaller chain (a few minutes): 64x64 scenes, 150 iterations",
    )
    parser.add_argument(
        "--threads", type=int, help="torch threads per step (default 1: robust on shared cores)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        help="steps run side by side, one process each (default 2, at most the cores)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="seed of the scenes and the initial weights (default 0; docs/demo.md has seeds 0-4)",
    )
    parser.add_argument(
        "--scenes",
        metavar="OPTIONS",
        help="a variant of the scenes as synthetic spec options, e.g. tiny=3-8,checker=2.4-4 "
        "(docs/demo.md; default: the demo's scenes)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    settings = QUICK if args.quick else DEMO
    if args.threads:
        settings = dataclasses.replace(settings, threads=args.threads)
    if args.jobs:
        settings = dataclasses.replace(settings, jobs=args.jobs)
    if args.seed is not None:
        if args.seed < 0:
            print(f"error: --seed: {args.seed} must be >= 0", file=sys.stderr)
            return 2
        settings = dataclasses.replace(settings, seed=args.seed)
    if args.scenes:
        try:
            settings = dataclasses.replace(settings, scenes=args.scenes)
        except DataError as err:
            print(f"error: --scenes: {err}", file=sys.stderr)
            return 2
    progress = not args.no_progress and sys.stderr.isatty()
    try:
        result = run_chain(args.out, settings, progress=progress)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if abs(result.made_seconds - result.seconds) > 1:
        print(
            f"\nDemo finished in {result.seconds / 60:.1f} minutes, reusing earlier steps "
            f"(made in {result.made_seconds / 60:.1f} minutes in all)."
        )
    else:
        print(f"\nDemo finished in {result.made_seconds / 60:.1f} minutes.")
    if result.adaptivity:
        from dynviz.analysis.adaptivity import RouteAdaptivity

        print("Dynamic-Budget routes:")
        for line in RouteAdaptivity(**result.adaptivity).sentences():
            print(f"  {line}")
    print(f"Report: {result.report}")
    print(f"Table:  {result.table}")
    print(f"Open the route explorer on it:  dynviz app {result.out}")
    print(f"  (or: .venv/bin/dynviz app {result.out}, then visit http://127.0.0.1:8501)")
    return 0
