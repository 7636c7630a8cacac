"""``dynviz compare RUN_DIR... --data SPEC --out DIR``: a Table-1-style comparison of trained runs.

Each run (a run directory or ``.pt`` checkpoint) is evaluated on the same data with
:func:`dynviz.evaluate.evaluate` (batch 1, real skipping): data-set mIoU and real GMACs per
image (average, maximum, minimum, as in the paper's Table 1), plus parameters. Rows are dynamic
models, common networks (``dynviz extract``), special cases (route specs carrying the paper's
numbers) and other static networks. Writes ``table1.md`` and ``table1.csv``.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dynviz.commands import add_resize_option, add_threads_option, guarded
from dynviz.commands.record import source_name
from dynviz.model import ConfigError

__all__ = ["CompareRow", "compare", "configure_parser", "describe_model", "main", "markdown"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompareRow:
    """One row of the comparison (GMACs are real, per image)."""

    method: str
    kind: str  # dynamic | fix | common | special case | static
    dynamic: bool
    modeled_from: str
    miou: float  # in [0, 1]
    gmacs_avg: float
    gmacs_max: float
    gmacs_min: float
    expected_gmacs_avg: float
    params: int
    images: int
    checkpoint: str
    iteration: int | None


def describe_model(model: Any) -> tuple[str, str]:
    """``(kind, modeled from)`` of a network: what Table 1's first columns say about it."""
    route = model.route
    config = model.config
    if route is None:
        if not config.has_gates:
            return "fix", "every path open, no gates (Network-Fix)"
        budget = (
            f"budget lambda={config.budget_lambda:g}, mu={config.budget_mu:g}"
            if config.budget_lambda > 0
            else "no budget"
        )
        return "dynamic", f"gates, {config.gate.value} ({budget})"
    text = route.description or route.name
    if "paper" in route.meta or route.description.lower().startswith("special case"):
        return "special case", text
    if route.name.startswith("common") or route.description.lower().startswith("common"):
        return "common", text
    return "static", text


def compare(
    runs: list[str],
    data: str,
    *,
    split: str = "val",
    limit: int | None = None,
    size: tuple[int, int] | None = None,
    names: list[str] | None = None,
    progress: bool = False,
) -> list[CompareRow]:
    """Evaluate each run on ``data`` and return the comparison rows (in the given order)."""
    from dynviz.checkpoint import load_model
    from dynviz.data import Resize, build_dataset
    from dynviz.evaluate import evaluate

    if names is not None and len(names) != len(runs):
        raise ConfigError(f"--names gives {len(names)} names for {len(runs)} runs")
    transform = Resize(size) if size else None
    dataset = build_dataset(data, split=split, transform=transform)
    rows = []
    for i, run in enumerate(runs):
        model, meta = load_model(run)
        result = evaluate(model, dataset, limit=limit, progress=progress)
        kind, modeled = describe_model(model)
        rows.append(
            CompareRow(
                method=names[i] if names else source_name(run),
                kind=kind,
                dynamic=kind == "dynamic",
                modeled_from=modeled,
                miou=result.miou,
                gmacs_avg=result.real_gmacs.mean,
                gmacs_max=result.real_gmacs.max,
                gmacs_min=result.real_gmacs.min,
                expected_gmacs_avg=result.expected_gmacs.mean,
                params=result.params,
                images=result.num_images,
                checkpoint=str(meta.get("path")),
                iteration=meta.get("iteration"),
            )
        )
        logger.info(
            "%s: mIoU %.4f, %.4g GMACs", rows[-1].method, result.miou, result.real_gmacs.mean
        )
    return rows


_ORDER = {"dynamic": 0, "fix": 1, "common": 2, "special case": 3, "static": 4}


def markdown(rows: list[CompareRow], *, note: str = "") -> str:
    """The Table 1 layout as Markdown: dynamic models first, then common nets and static ones.

    Costs below 1 GMAC are shown in MMACs so small test inputs stay readable.
    """
    ordered = sorted(rows, key=lambda r: _ORDER.get(r.kind, 9))
    top = max((r.gmacs_max for r in rows if math.isfinite(r.gmacs_max)), default=1.0)
    unit, scale = ("GMACs", 1.0) if top >= 1 else ("MMACs", 1e3)
    lines = [
        f"| Method | Kind | Dynamic | Modeled from | mIoU (%) | {unit} avg | {unit} max | "
        f"{unit} min | Params (M) |",
        "| --- | --- | :---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def num(v: float, fmt: str) -> str:
        return "n/a" if not math.isfinite(v) else format(v, fmt)

    for r in ordered:
        lines.append(
            f"| {r.method} | {r.kind} | {'yes' if r.dynamic else 'no'} | {r.modeled_from} | "
            f"{num(100 * r.miou, '.2f')} | {num(scale * r.gmacs_avg, '.3f')} | "
            f"{num(scale * r.gmacs_max, '.3f')} | {num(scale * r.gmacs_min, '.3f')} | "
            f"{r.params / 1e6:.3f} |"
        )
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dynviz compare``."""
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories or .pt files")
    parser.add_argument("--data", required=True, metavar="SPEC", help="evaluation data spec")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--split", default="val", help="split (default: val)")
    parser.add_argument("--limit", type=int, metavar="N", help="evaluate the first N images")
    add_resize_option(parser)
    parser.add_argument(
        "--names",
        nargs="+",
        metavar="NAME",
        help="method names, one per run (default: the run directories' names)",
    )
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=False, help="progress bars"
    )
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
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = rows[0].images if rows else 0
    note = (
        f"Evaluated on {args.data} [{args.split}], {images} images, batch 1 with closed paths "
        "skipped. mIoU is data-set level; cost is the real (executed) cost per image in the "
        "paper's counting (1 multiply-add = 1; the paper's FLOPs)."
    )
    text = markdown(rows, note=note)
    (out / "table1.md").write_text(text, encoding="utf-8")
    pd.DataFrame([asdict(r) for r in rows]).to_csv(
        out / "table1.csv", index=False, float_format="%.6g"
    )
    print(text, end="")
    print(f"\nwrote {out / 'table1.md'} and {out / 'table1.csv'}")
    return 0


def main(args: argparse.Namespace) -> int:
    """``dynviz compare``."""
    return guarded(_main, args)
