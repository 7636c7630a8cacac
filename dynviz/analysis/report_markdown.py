"""The ``report.md`` of the route-analysis report (:func:`dynviz.analysis.report.analyze`):
the models, their Table 1 costs, route adaptivity, Fig. 5, routing versus scale and the list of
files, as Markdown."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from dynviz.analysis.adaptivity import RouteAdaptivity
from dynviz.labels import readable, readable_columns
from dynviz.units import MAC_NOTE, mac_unit

if TYPE_CHECKING:
    from dynviz.analysis.report import Report
    from dynviz.record import Records

__all__ = ["write_markdown"]


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}g}"
    return str(value)


def _markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = [
        "| " + " | ".join(_fmt(v, digits) for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([head, rule, *rows])


def _countings(records: list[Records], labels: list[str]) -> str:
    """``"paper"`` when every records folder shares one counting, else per model."""
    countings = [rec.sidecar.counting.value for rec in records]
    if len(set(countings)) == 1:
        return countings[0]
    return ", ".join(f"{c} ({label})" for c, label in zip(countings, labels, strict=True))


def write_markdown(
    report: Report,
    records: list[Records],
    labels: list[str],
    names: list[str],
    costs: pd.DataFrame,
    summary: Any,
    threshold: float,
) -> None:
    """Write ``report.md`` into ``report.out``, linking the files ``report`` lists.

    Args:
        report: what :func:`~dynviz.analysis.report.analyze` wrote, with its summary.
        records: the records, one per model.
        labels: their model labels.
        names: the file-name stems of the labels (``heatmap_<name>.png``).
        costs: the Table 1 cost statistics.
        summary: the routing-versus-scale summary (:func:`dynviz.analysis.scale_summary`).
        threshold: the common-network threshold.
    """
    lines = ["# Route analysis", ""]
    lines += [
        "| model | records | images | data | checkpoint |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for rec, label in zip(records, labels, strict=True):
        ckpt = rec.sidecar.checkpoint
        sha = ((ckpt.sha256 if ckpt else None) or "")[:12]
        lines.append(
            f"| {label} | `{rec.path}` | {len(rec.images)} | {rec.sidecar.data_label} | "
            f"{sha + '...' if sha else 'untrained'} |"
        )
    damaged = [rec.skipped_note for rec in records if rec.skipped]
    if damaged:  # the figures below leave those images out: say so where they are read
        lines += ["", *(f"**Not in this report:** {note}." for note in damaged)]
    cost_columns = [c for c in costs.columns if c.endswith(("_mean", "_max", "_min"))]
    cost_columns = [c for c in cost_columns if "gmacs" in c]
    unit = mac_unit(costs[cost_columns].to_numpy().ravel())
    lines += [
        "",
        "## Cost and accuracy (Table 1 columns)",
        "",
        f"Real and expected cost per image in {unit.label} ({MAC_NOTE}). mIoU is data-set "
        "level (summed confusion matrices).",
        "",
        f"Counting: {_countings(records, labels)} (`dynviz record --counting`; official: as "
        "the official code's counters report).",
        "",
    ]
    shown = costs.copy()
    shown["miou"] = 100 * shown["miou"]
    shown[cost_columns] = unit(shown[cost_columns])
    shown = shown.drop(columns=["miou_image_mean", "pixel_accuracy"]).rename(
        columns={
            "miou": "mIoU (%)",
            "real_gmacs_mean": f"real {unit.label} avg",
            "real_gmacs_max": "real max",
            "real_gmacs_min": "real min",
            "expected_gmacs_mean": f"expected {unit.label} avg",
            "expected_gmacs_max": "expected max",
            "expected_gmacs_min": "expected min",
        }
    )
    lines += [_markdown(shown), ""]
    adaptivity = report.summary.get("adaptivity") or {}
    if adaptivity:
        lines += ["## Do the routes adapt to the image?", ""]
        for label, figures in adaptivity.items():
            lines += [f"**{label}**", ""]
            lines += [f"- {line}" for line in RouteAdaptivity(**figures).sentences()]
            lines.append("")
    if "aug_costs" in report.tables:
        augmented = pd.read_csv(report.out / report.tables["aug_costs"])
        lines += [
            "## Test-time augmentation",
            "",
            "Records made with `--aug` hold one row per image and variant (the tables above "
            "count each variant as an image). Real GMACs of each variant and of the whole "
            "augmented image (the row without a scale), and the variant's share of it:",
            "",
            _markdown(augmented),
            "",
        ]
    rules = report.summary.get("active_threshold") or {}
    lines += [
        "## Activation probability (Fig. 5)",
        "",
        "A path's activation probability is the share of images in which it was open: "
        + "; ".join(f"{label}, alpha > {t:g}" for label, t in rules.items())
        + " (the records' active threshold; the records keep the gates' own alphas beside).",
        "",
        "![Fig. 5](fig5_probability.png)",
        "",
        "![Fig. 5 per layer and scale](fig5_layer_scale.png)",
        "",
    ]
    for label, (kept, total) in report.summary["common_paths"].items():
        lines.append(
            f"- {label}: {kept} of {total} paths are active in more than "
            f"{100 * threshold:g}% of images (before pruning dangling cells)."
        )
    lines.append("")
    for label, name in zip(labels, names, strict=True):
        lines += [
            f"### {label}",
            "",
            f"![cells of {label}](heatmap_{name}.png)",
            "",
            f"![routing space of {label}](space_{name}.png)",
            "",
        ]
    lines += [
        "## Cost per image",
        "",
        "![cost histogram](cost_histogram.png)",
        "",
        "## Routing versus object scale",
        "",
        "![routing vs scale](routing_vs_scale.png)",
        "",
    ]
    corr = summary.correlations
    focus = corr[
        (corr["metric"].isin(["fine_share", "fine_cost_share", "mean_scale_index"]))
        & (corr["stat"].isin(["stat_mean_object_area", "stat_small_fraction"]))
    ]
    if not focus.empty:
        focus = focus.assign(
            metric=focus["metric"].map(readable), stat=focus["stat"].map(readable)
        ).rename(columns=readable_columns(list(focus.columns)))
        lines += ["Correlation over images:", "", _markdown(focus, 3), ""]
    if not summary.by_regime.empty:
        by_regime = summary.by_regime.copy()
        if "real_gmacs" in by_regime.columns:
            regime_unit = mac_unit(by_regime["real_gmacs"])
            by_regime["real_gmacs"] = regime_unit(by_regime["real_gmacs"])
            by_regime = by_regime.rename(columns={"real_gmacs": f"real cost ({regime_unit.label})"})
        by_regime = by_regime.rename(columns=readable_columns(list(by_regime.columns)))
        lines += ["Mean per scene regime:", "", _markdown(by_regime, 3), ""]
    lines += ["## Files", ""]
    lines += [f"- [{name}]({file})" for name, file in report.tables.items()]
    for name, files in report.figures.items():
        lines.append(
            f"- {name}: "
            + ", ".join(f"[{f.rsplit('.', 1)[-1]}]({f})" for f in files)
            + (f", [html]({report.html[name]})" if name in report.html else "")
        )
    for name, file in report.html.items():
        if name not in report.figures:
            lines.append(f"- {name}: [html]({file})")
    (report.out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
