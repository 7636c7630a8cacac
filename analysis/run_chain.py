"""Regenerate the paper-style figures and table of ``docs/`` with the whole dynviz chain.

Runs :func:`dynviz.demo.chain.run_chain` (train Raw and Budget, record, analyze, extract the common
network, retrain it and special cases, compare) on synthetic data, then copies ``fig5.png``,
``routing_vs_scale.png`` and ``table1.md`` into ``docs/``.

Usage::

    python analysis/run_chain.py                 # quick (a few minutes), into runs/chain
    python analysis/run_chain.py --demo --out runs/demo   # what `make demo` runs (reuses it)
    python analysis/run_chain.py --full --out runs/chain-full --no-docs
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
from pathlib import Path

from dynviz.analysis.compare import against_special_cases, read_table
from dynviz.demo.chain import DEMO, FULL, QUICK, run_chain

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--demo", action="store_true", help="the settings of `make demo`")
    size.add_argument("--full", action="store_true", help="1000 iterations on 128x128 scenes")
    parser.add_argument("--out", default="runs/chain", help="output folder (default runs/chain)")
    parser.add_argument("--docs", default=str(ROOT / "docs"), help="where the figures go")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    parser.add_argument("--iters", type=int, help="training iterations of every model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    preset = FULL if args.full else DEMO if args.demo else QUICK
    settings = dataclasses.replace(preset, threads=args.threads)
    if args.iters:
        settings = dataclasses.replace(settings, iters=args.iters, static_iters=args.iters)
    result = run_chain(args.out, settings, progress=False)
    if not args.no_docs:
        docs = Path(args.docs)
        docs.mkdir(parents=True, exist_ok=True)
        report = result.out / "report"
        shutil.copyfile(report / "fig5_probability.png", docs / "fig5.png")
        shutil.copyfile(report / "routing_vs_scale.png", docs / "routing_vs_scale.png")
        flag = " --full" if args.full else " --demo" if args.demo else ""
        header = (
            "# Table 1 on synthetic data (generated)\n\n"
            f"Written by `python analysis/run_chain.py{flag}`: the "
            f"`{settings.space}` space, {settings.iters} iterations per dynamic model and "
            f"{settings.static_iters} per static network on {settings.size}x{settings.size} "
            "synthetic scenes. These numbers show that the chain runs end to end; they are not "
            "comparable with the paper's Cityscapes results.\n\n"
        )
        verdict = against_special_cases(
            read_table(result.table.with_suffix(".csv")),
            "Dynamic-Budget",
            kinds=("special case", "common"),
        )
        against = ""
        if verdict is not None:
            lines = "\n".join(f"- {line}" for line in verdict.sentences())
            against = f"\n### Dynamic against the static networks\n\n{lines}\n"
        (docs / "table1.md").write_text(
            header + result.table.read_text(encoding="utf-8") + against, encoding="utf-8"
        )
    print(f"chain finished in {result.seconds:.0f} s; report: {result.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
