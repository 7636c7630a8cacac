"""``dynviz bench``: speed figures of real skipping, batching, export and the machine's limit.

Every figure is the median, over interleaved rounds, of a ratio of timings taken in the same
round on this machine, with its quartiles (after a warm-up round). A full run takes about 10-15
minutes on 2 cores; ``--quick`` about a minute at small sizes. Neither writes any file unless
asked: ``--out FILE`` for the JSON report, ``--update-docs [DOC]`` to rewrite the generated block
of a performance doc (``docs/performance.md`` of the current folder by default, e.g. a dynviz
checkout; never a file inside an installed package).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from dynviz.bench import SECTIONS, BenchSettings, run_bench, update_doc
from dynviz.commands import positive_int
from dynviz.model.config import ConfigError

__all__ = ["DEFAULT_DOC", "configure_parser", "doc_target", "main"]

logger = logging.getLogger(__name__)

DEFAULT_DOC = Path("docs") / "performance.md"  # relative to the current folder


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and few repeats (about a minute on 2 idle cores)",
    )
    parser.add_argument(
        "--size",
        nargs=2,
        type=positive_int,
        metavar=("H", "W"),
        help="batch-1 input size (default 512 1024; quick 128 256); the batch "
        "figure uses half of it per side",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help="timed repeats per variant (default 5; 11 for the skipping, batch and recording "
        "figures)",
    )
    parser.add_argument("--batch", type=int, help="samples per batch in figure (b) (default 8)")
    parser.add_argument("--threads", type=int, help="torch threads (default: the cores)")
    parser.add_argument("--model", help="dynamic model whose routes are forced (default layer16)")
    parser.add_argument(
        "--fix-model", help="all-open model of the machine-limit figure (default layer16-fix)"
    )
    parser.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="SPEC",
        help="an extra route spec to measure (e.g. an extracted Common net); repeatable",
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"figures to measure, comma-separated of {','.join(SECTIONS)}",
    )
    parser.add_argument(
        "--no-tune-malloc",
        action="store_true",
        help="leave glibc's malloc thresholds alone (default: raise them so "
        "freed activations are reused instead of page-faulted back in)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", help="also write the JSON report to this file")
    parser.add_argument(
        "--update-docs",
        nargs="?",
        const=str(DEFAULT_DOC),
        metavar="DOC",
        help=f"rewrite the generated block of DOC (default {DEFAULT_DOC.as_posix()} in the "
        "current folder); refused inside an installed package",
    )


def _command(args: argparse.Namespace) -> str:
    parts = ["dynviz", "bench"]
    if args.quick:
        parts.append("--quick")
    if args.size:
        parts += ["--size", str(args.size[0]), str(args.size[1])]
    for key in ("repeats", "batch", "threads"):
        value = getattr(args, key)
        if value is not None:
            parts += [f"--{key}", str(value)]
    for key in ("model", "fix_model"):
        value = getattr(args, key)
        if value is not None:
            parts += [f"--{key.replace('_', '-')}", value]
    for route in args.route:
        parts += ["--route", route]
    if args.no_tune_malloc:
        parts.append("--no-tune-malloc")
    if args.sections != ",".join(SECTIONS):
        parts += ["--sections", args.sections]
    return shlex.join(parts)


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """The :class:`BenchSettings` of parsed ``dynviz bench`` arguments."""
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    changes: dict[str, object] = {"sections": sections, "routes": tuple(args.route)}
    if args.repeats is not None:
        changes["repeats"] = changes["ratio_repeats"] = args.repeats
    if args.batch is not None:
        changes["batch"] = args.batch
    if args.threads is not None:
        changes["threads"] = args.threads
    if args.no_tune_malloc:
        changes["tune_malloc"] = False
    if args.model is not None:
        changes["model"] = args.model
    if args.fix_model is not None:
        changes["fix_model"] = args.fix_model
    settings = BenchSettings.quick_settings(**changes) if args.quick else BenchSettings(**changes)  # type: ignore[arg-type]
    if args.size:
        settings = settings.with_size((args.size[0], args.size[1]))
    return settings


def doc_target(path: str | Path) -> Path:
    """The doc ``--update-docs`` may rewrite: any Markdown file outside an installed package.

    Raises:
        ValueError: the file lies inside ``site-packages``/``dist-packages`` or inside the
            installed ``dynviz`` package, or is not a ``.md`` file.
    """
    import dynviz

    target = Path(path).resolve()
    package = Path(dynviz.__file__).resolve().parent
    installed = {"site-packages", "dist-packages"} & set(target.parts)
    if installed or target.is_relative_to(package):
        raise ValueError(
            f"--update-docs {path}: {target} is inside an installed package; run the bench "
            "from a dynviz checkout, or name a doc of yours"
        )
    if target.suffix.lower() != ".md":
        raise ValueError(f"--update-docs {path}: not a Markdown (.md) file")
    return target


def main(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        doc = None if args.update_docs is None else doc_target(args.update_docs)
        report = run_bench(settings, command=_command(args))
    except (ValueError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    data = report.to_json()
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if doc is not None:
        update_doc(doc, report)
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        print()
    else:
        print(report.to_text())
        if doc is not None:
            print(f"\nupdated {doc}")
    return 0
