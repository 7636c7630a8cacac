"""``dynviz analyze RECORDS_DIR... --out REPORT_DIR``: tables, figures and a report from records.

The report is :func:`dynviz.analysis.report.analyze`. Several records folders are several models,
labelled by their sidecar name (or folder name when names repeat). Writes into REPORT_DIR:

* CSV tables: per-path activation probability, its distribution (Fig. 5), per-layer, per-scale
  and per-cell views, the Table 1 cost statistics, routing versus scale per image, and its
  summary (correlations, per-regime means);
* each model's routing-space graph with per-path probability and mean alpha, as GraphML and
  node-link JSON (``space_<model>.graphml`` / ``.json``);
* figures as PNG and PDF (matplotlib): ``fig5_probability``, ``heatmap_<model>``,
  ``space_<model>``, ``cost_histogram``, ``routing_vs_scale``;
* the same figures as plotly HTML (one shared ``plotly.min.js``, works offline), unless
  ``--no-html`` or plotly is missing;
* ``report.md`` linking everything.

Damaged records (:mod:`dynviz.record.tables`): a missing, unreadable or newer sidecar, or a
folder with no readable part, is one line naming the file, exit status 3. A damaged part (zero
bytes, truncated, another schema) is skipped with its chunk by default: a warning names the file,
the fault and the images lost, and the summary says what each model skipped; ``--strict`` makes
it an error instead.

Gate-graph records (any gated network, :mod:`dynviz.gates`) get the report of
:func:`dynviz.analysis.gates_report.gate_report`: ``usage.csv``, ``distribution.csv``,
``common.yaml``, ``cost.csv``, ``statistics.csv``, the figures ``value_distribution``,
``option_usage`` and (with costs) ``cost_histogram``, and ``report.md``. One gate-graph folder
is analysed at a time; ``--html`` (plotly) applies to routing-space records only.
"""

from __future__ import annotations

import argparse

from dynviz.analysis.report import analyze
from dynviz.commands import add_strict_option, guarded, print_json
from dynviz.model import ConfigError
from dynviz.record import RecordError, Records, read_records
from dynviz.rules import COMMON_THRESHOLD

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dynviz analyze``."""
    parser.add_argument(
        "records", nargs="+", metavar="RECORDS_DIR", help="records folders (one per model)"
    )
    parser.add_argument("--out", required=True, metavar="REPORT_DIR", help="report folder")
    parser.add_argument(
        "--threshold",
        type=float,
        default=COMMON_THRESHOLD,
        help=f"common-network threshold shown on Fig. 5 (default {COMMON_THRESHOLD})",
    )
    parser.add_argument("--bins", type=int, default=10, help="Fig. 5 bins (default 10)")
    parser.add_argument(
        "--html",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also write plotly HTML figures (default on; routing-space records only)",
    )
    parser.add_argument(
        "--formats", nargs="+", default=["png", "pdf"], help="matplotlib formats (default png pdf)"
    )
    add_strict_option(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _main(args: argparse.Namespace) -> int:
    records = [read_records(path, strict=args.strict) for path in args.records]
    for rec in records:
        if rec.images.empty:
            raise RecordError(
                f"{rec.path}: no image recorded yet (an empty or interrupted recording); "
                "record again"
            )
    if any(rec.kind == "gate-graph" for rec in records):
        return _gate_report(args, records)
    report = analyze(
        records,
        args.out,
        threshold=args.threshold,
        bins=args.bins,
        html=args.html is not False,
        formats=tuple(args.formats),
    )
    common = report.summary["common_paths"]
    if args.json:
        print_json(
            {
                "out": str(report.out),
                "report": str(report.out / "report.md"),
                "models": list(common),
                "tables": report.tables,
                "figures": report.figures,
                "html": report.html,
                "threshold": args.threshold,
                "common_paths": {
                    label: {"kept": kept, "total": total} for label, (kept, total) in common.items()
                },
                "skipped": [s.to_dict() for rec in records for s in rec.skipped],
            }
        )
        return 0
    print(
        f"wrote {len(report.tables)} tables and graphs, {len(report.figures)} figures "
        f"({len(report.html)} HTML) and {report.out / 'report.md'}"
    )
    for label, (kept, total) in common.items():
        print(f"  {label}: {kept}/{total} paths above {args.threshold:g}")
    for rec in records:
        if rec.skipped:
            print(f"  {rec.skipped_note}")
    return 0


def _gate_report(args: argparse.Namespace, records: list[Records]) -> int:
    """The report of one gate-graph records folder."""
    from dynviz.analysis.gates_report import gate_report
    from dynviz.units import format_macs

    if len(records) > 1:
        kinds = ", ".join(f"{rec.path} ({rec.kind})" for rec in records)
        raise ConfigError(
            f"dynviz analyze reads one gate-graph records folder at a time, not several: {kinds}"
        )
    if args.html:
        raise ConfigError(
            f"--html applies to routing-space records; {records[0].path} holds a gated "
            "network's records (its figures are PNG/PDF, --formats)"
        )
    if not 0.0 <= args.threshold < 1.0:
        raise ConfigError(f"--threshold {args.threshold} must be in [0, 1)")
    if args.bins < 1:
        raise ConfigError(f"--bins {args.bins} must be >= 1")
    (rec,) = records
    report = gate_report(
        rec, args.out, threshold=args.threshold, bins=args.bins, formats=tuple(args.formats)
    )
    summary = report.summary
    if args.json:
        print_json(
            {
                "out": str(report.out),
                "report": str(report.out / "report.md"),
                "kind": "gate-graph",
                "models": [rec.label],
                "tables": report.tables,
                "figures": report.figures,
                "threshold": args.threshold,
                "summary": summary,
                "skipped": [s.to_dict() for s in rec.skipped],
            }
        )
        return 0
    print(
        f"wrote {len(report.tables)} tables, {len(report.figures)} figures and "
        f"{report.out / 'report.md'}"
    )
    print(
        f"  {rec.label}: {summary['points']} gate points, {summary['options']} options: "
        f"{summary['always']} used by more than {args.threshold:g} of {summary['images']} "
        f"inputs, {summary['sometimes']} sometimes, {summary['never']} never"
    )
    cost = summary["cost"]
    if cost is not None:
        print(
            f"  real cost per input: {format_macs(cost['min'])} to {format_macs(cost['max'])}, "
            f"mean {format_macs(cost['mean'])}"
        )
    if rec.skipped:
        print(f"  {rec.skipped_note}")
    return 0


def main(args: argparse.Namespace) -> int:
    """``dynviz analyze``."""
    return guarded(_main, args)
