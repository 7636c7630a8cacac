"""The report of a gate-graph recording (what ``dynviz analyze`` writes for any gated network).

:func:`gate_report` reads one records folder of a gated network (:mod:`dynviz.gates`, recorded
by :func:`dynviz.record.record`) and writes into the report folder:

* ``usage.csv``: per point and option, the share of inputs that ran it and its value's
  quartiles (:func:`~dynviz.analysis.gates.option_usage`);
* ``distribution.csv``: the histogram of each option's per-input value
  (:func:`~dynviz.analysis.gates.value_distribution`);
* ``common.yaml``: the options used by more than the threshold of the inputs, by some, by none
  (:meth:`~dynviz.analysis.gates.CommonPlan.to_dict`);
* ``cost.csv``: each input's real and expected cost (:func:`~dynviz.analysis.gates.input_cost`);
* ``statistics.csv``: Spearman's rho of each option's value against each input statistic
  (:func:`~dynviz.analysis.gates.decisions_vs_statistics`);
* figures (PNG and PDF by default): ``value_distribution`` (Fig. 5 for any gate graph),
  ``option_usage`` and, when the graph gives costs, ``cost_histogram``;
* ``report.md``: the recording, the points and their usage, the common plan, the cost per input,
  the strongest correlations with input statistics, and the list of files.

The files are written into a hidden folder inside the report folder (``.report-*.tmp``) and
renamed into place once all are written, as :func:`dynviz.analysis.report.analyze` does: a
failed write leaves the previous report as it was.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from dynviz.analysis.gates import (
    CommonPlan,
    common_plan,
    decision_matrix,
    decisions_vs_statistics,
    input_cost,
    option_usage,
    value_distribution,
)
from dynviz.analysis.report import save_figure
from dynviz.gates import GateGraph
from dynviz.record import Records
from dynviz.rules import COMMON_THRESHOLD
from dynviz.support.staging import staged_folder
from dynviz.units import GIGA, MAC_NOTE, format_macs

__all__ = ["GateReport", "cost_summary", "gate_report"]

logger = logging.getLogger(__name__)

TOP_CORRELATIONS = 10
"""Rows of the strongest decision-statistic correlations shown in ``report.md``."""


@dataclass
class GateReport:
    """What :func:`gate_report` wrote (file names relative to ``out``).

    Attributes:
        out: the report folder.
        tables: ``{name: file}`` of the tables (CSV and YAML).
        figures: ``{name: [files]}`` of the figures, one file per format.
        summary: the figures of the report as plain data (see :func:`gate_report`).
        plan: the common plan at the report's threshold.
    """

    out: Path
    tables: dict[str, str] = field(default_factory=dict)
    figures: dict[str, list[str]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    plan: CommonPlan | None = None


def cost_summary(costs: pd.DataFrame) -> dict[str, float] | None:
    """``min``, ``median``, ``mean``, ``max`` of the real cost per input (GMACs) and its
    ``spread`` (90th over 10th percentile; NaN when the 10th is 0); None without a known cost."""
    real = costs["real_gmacs"].to_numpy(np.float64)
    real = real[np.isfinite(real)]
    if real.size == 0:
        return None
    low, high = np.percentile(real, [10, 90])
    return {
        "inputs": int(real.size),
        "min": float(real.min()),
        "median": float(np.median(real)),
        "mean": float(real.mean()),
        "max": float(real.max()),
        "p10": float(low),
        "p90": float(high),
        "spread": float(high / low) if low > 0 else math.nan,
    }


def gate_report(
    records: Records,
    out: str | os.PathLike[str],
    *,
    threshold: float = COMMON_THRESHOLD,
    bins: int = 10,
    formats: tuple[str, ...] = ("png", "pdf"),
    dpi: int = 120,
) -> GateReport:
    """Write the tables, figures and ``report.md`` of a gate-graph recording.

    Args:
        records: the records of one gated network (:attr:`Records.kind` ``"gate-graph"``; a
            routing-space recording reads the same way, its cells as points).
        out: the report folder (created).
        threshold: an option used by more than this share of the inputs is always used.
        bins: bins of the value histograms over [0, 1].
        formats: matplotlib output formats.
        dpi: raster resolution.

    Returns:
        A :class:`GateReport`; its ``summary`` holds ``network``, ``images``, ``points``,
        ``options``, ``threshold``, ``always``/``sometimes``/``never`` (option counts), ``kept``
        (``{point: options}`` always used), ``cost`` (:func:`cost_summary`, None without costs)
        and ``top_correlation`` (the strongest row of ``statistics.csv``, None without one).

    Raises:
        ValueError: ``threshold`` outside [0, 1) or ``bins`` below 1.
        OSError: the report folder cannot be written (the message names it); the folder holds
            what it held before.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), not {threshold}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, not {bins}")
    out = Path(out)
    graph = records.graph
    decisions, images = decision_matrix(records.decisions), records.images  # read once
    usage = option_usage(decisions)
    frames = {
        "usage": usage,
        "distribution": value_distribution(decisions, bins=bins),
        "cost": input_cost(images, graph),
        "statistics": decisions_vs_statistics(decisions, images, graph=graph),
    }
    plan = common_plan(decisions, graph, threshold=threshold)
    with staged_folder(out) as staging:
        report = GateReport(staging, plan=plan)
        for name, frame in frames.items():
            frame.to_csv(staging / f"{name}.csv", index=False, float_format="%.6g")
            report.tables[name] = f"{name}.csv"
        (staging / "common.yaml").write_text(
            yaml.safe_dump(plan.to_dict(), sort_keys=False), encoding="utf-8"
        )
        report.tables["common"] = "common.yaml"
        report.summary = _summary(records, graph, plan, frames, threshold)
        _write_figures(report, records, frames, threshold, formats, dpi)
        _write_markdown(report, records, graph, frames, threshold)
    report.out = out
    return report


def _summary(
    records: Records,
    graph: GateGraph,
    plan: CommonPlan,
    frames: dict[str, pd.DataFrame],
    threshold: float,
) -> dict[str, Any]:
    stats = frames["statistics"].dropna(subset=["rho"])
    top = None
    if not stats.empty:
        row = stats.iloc[0]
        top = {
            "point": str(row["point"]),
            "option": str(row["option"]),
            "statistic": str(row["statistic"]),
            "rho": float(row["rho"]),
            "inputs": int(row["inputs"]),
        }
    return {
        "network": graph.name,
        "images": len(records.images),
        "points": len(graph),
        "options": sum(len(p.options) for p in graph),
        "threshold": threshold,
        "always": sum(len(o) for o in plan.always.values()),
        "sometimes": sum(len(o) for o in plan.sometimes.values()),
        "never": sum(len(o) for o in plan.never.values()),
        "kept": {p: list(o) for p, o in plan.keep().items()},
        "cost": cost_summary(frames["cost"]),
        "top_correlation": top,
    }


def _write_figures(
    report: GateReport,
    records: Records,
    frames: dict[str, pd.DataFrame],
    threshold: float,
    formats: tuple[str, ...],
    dpi: int,
) -> None:
    from dynviz.plots import gates as plots  # deferred: matplotlib is slow to import
    from dynviz.plots.mpl import cost_histogram

    label = records.label
    ax = plots.plot_value_distribution(
        frames["distribution"], title=f"{label}: value per input at each gate point"
    )
    report.figures["value_distribution"] = save_figure(
        ax.figure, report.out, "value_distribution", formats, dpi
    )
    ax = plots.plot_option_usage(
        frames["usage"], threshold=threshold, title=f"{label}: inputs that ran each option"
    )
    report.figures["option_usage"] = save_figure(
        ax.figure, report.out, "option_usage", formats, dpi
    )
    if report.summary["cost"] is not None:
        ax = cost_histogram(frames["cost"], hue=None, title=f"{label}: real cost per input")
        report.figures["cost_histogram"] = save_figure(
            ax.figure, report.out, "cost_histogram", formats, dpi
        )


# --------------------------------------------------------------------------------- markdown
def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float | np.floating):
        return "n/a" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _percent(share: float) -> str:
    return "n/a" if not math.isfinite(share) else f"{100 * share:.1f}%"


def _facts(records: Records, graph: GateGraph) -> list[list[Any]]:
    sidecar = records.sidecar
    ckpt = sidecar.checkpoint
    weights = "untrained"
    if ckpt is not None:
        weights = f"`{ckpt.path}` (sha256 {(ckpt.sha256 or '?')[:12]}...)"
    facts = [
        ["records", f"`{records.path}`" if records.path else records.label],
        ["network", graph.name],
        ["builder", f"`{sidecar.builder}`" if sidecar.builder else "not recorded"],
        ["weights", weights],
        ["parameters", f"{sidecar.params:,}" if sidecar.params is not None else "n/a"],
        ["data", sidecar.data_label],
        ["images", len(records.images)],
        ["input sizes", ", ".join(f"{h}x{w}" for h, w in sidecar.input_sizes) or "n/a"],
        ["gate points", f"{len(graph)} ({sum(len(p.options) for p in graph)} options)"],
        ["cost per input known", "yes" if graph.has_costs else "no (the graph gives no costs)"],
        ["recorded", sidecar.created or "n/a"],
        ["dynviz", sidecar.dynviz_version or "n/a"],
    ]
    if records.skipped:
        facts.append(["skipped", records.skipped_note])
    return facts


def _write_markdown(
    report: GateReport,
    records: Records,
    graph: GateGraph,
    frames: dict[str, pd.DataFrame],
    threshold: float,
) -> None:
    plan = report.plan
    assert plan is not None
    lines = [f"# Gate analysis: {records.label}", ""]
    lines += _table(["fact", "value"], _facts(records, graph)) + [""]

    lines += ["## Points and options", ""]
    lines += [
        "Usage is the share of all inputs that ran the option; the value is what the gate "
        "computed for it (a probability or a router weight), over the inputs that reached the "
        "point.",
        "",
    ]
    usage = frames["usage"].set_index(["point", "option"])
    rows = []
    for point in graph:
        for option in point.options:
            key = (point.name, option.name)
            got = usage.loc[key] if key in usage.index else None
            rows.append(
                [
                    point.name,
                    point.kind.value,
                    option.name,
                    _percent(float(got["usage"])) if got is not None else "n/a",
                    float(got["value_mean"]) if got is not None else math.nan,
                    float(got["value_median"]) if got is not None else math.nan,
                    format_macs(option.macs / GIGA) if option.macs is not None else "n/a",
                ]
            )
    header = ["point", "kind", "option", "usage", "mean value", "median value", "cost"]
    lines += _table(header, rows) + [""]

    summary = report.summary
    lines += [f"## Common plan (threshold {100 * threshold:g}%)", ""]
    lines += [
        f"Always: used by more than {100 * threshold:g}% of the inputs; never: by none. "
        f"{summary['always']} option(s) always used, {summary['sometimes']} sometimes, "
        f"{summary['never']} never (of {summary['options']}). `dynviz extract` writes the plan; "
        "`--lossless` also keeps the sometimes-used options.",
        "",
    ]
    rows = [
        [
            p.name,
            ", ".join(plan.always[p.name]) or "-",
            ", ".join(plan.sometimes[p.name]) or "-",
            ", ".join(plan.never[p.name]) or "-",
        ]
        for p in graph
    ]
    lines += _table(["point", "always", "sometimes", "never"], rows) + [""]

    lines += ["## Cost per input", ""]
    cost = summary["cost"]
    if cost is None:
        lines += ["Unknown: the gate graph gives no cost for some option or no base cost.", ""]
    else:
        spread = "n/a" if math.isnan(cost["spread"]) else f"{cost['spread']:.3g}x"
        rows = [
            [
                format_macs(cost["min"]),
                format_macs(cost["median"]),
                format_macs(cost["mean"]),
                format_macs(cost["max"]),
                spread,
                format_macs((graph.all_run_macs or math.nan) / GIGA),
            ]
        ]
        header = ["min", "median", "mean", "max", "spread (p90/p10)", "every option running"]
        lines += _table(header, rows) + [
            "",
            f"Real cost: base plus the options that ran ({MAC_NOTE}).",
            "",
        ]

    lines += ["## Decisions and input statistics", ""]
    stats = frames["statistics"].dropna(subset=["rho"]).head(TOP_CORRELATIONS)
    if stats.empty:
        lines += ["No correlation: the records have no input statistic, or too few inputs.", ""]
    else:
        lines += [
            f"Spearman's rho of each option's value against each input statistic, the "
            f"{len(stats)} strongest (all in `statistics.csv`).",
            "",
        ]
        rows = [
            [r.point, r.option, r.statistic, float(r.rho), int(r.inputs)]
            for r in stats.itertuples(index=False)
        ]
        lines += _table(["point", "option", "statistic", "rho", "inputs"], rows) + [""]

    lines += ["## Figures", ""]
    for name, files in report.figures.items():
        image = next((f for f in files if f.endswith((".png", ".svg"))), None)
        if image is not None:
            lines += [f"![{name}]({image})", ""]
        lines += [f"- {name}: " + ", ".join(f"[{f}]({f})" for f in files), ""]
    lines += ["## Tables", ""]
    lines += [f"- {name}: [{file}]({file})" for name, file in report.tables.items()]
    (report.out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
