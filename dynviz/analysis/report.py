"""The route-analysis report of one or more records folders (what ``dynviz analyze`` writes).

Several records are several models, labelled by their sidecar name (or folder name when names
repeat). :func:`analyze` writes into the report folder:

* CSV tables: per-path activation probability, its distribution (Fig. 5), per-layer, per-scale
  and per-cell views, the Table 1 cost statistics, routing versus scale per image, and its
  summary (correlations, per-regime means);
* each model's routing-space graph with per-path probability and mean alpha, as GraphML and
  node-link JSON (``space_<model>.graphml`` / ``.json``);
* figures as PNG and PDF (matplotlib): ``fig5_probability``, ``heatmap_<model>``,
  ``space_<model>``, ``cost_histogram``, ``routing_vs_scale``;
* the same figures as plotly HTML (one shared ``plotly.min.js``, works offline), unless
  ``html=False`` or plotly is missing;
* ``report.md`` linking everything.

It sits above :mod:`dynviz.analysis` (tables), :mod:`dynviz.model.graph` and :mod:`dynviz.plots`
(figures); the command line is :mod:`dynviz.commands.analyze`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dynviz.analysis import (
    activation_probability,
    aug_costs,
    cell_probability,
    cost_statistics,
    probability_distribution,
    probability_matrix,
    routing_vs_scale,
    scale_summary,
)
from dynviz.analysis.adaptivity import RouteAdaptivity, route_adaptivity
from dynviz.labels import readable, readable_columns
from dynviz.record import (
    Records,
    combine_records,
    label_frames,
    path_cost_frame,
    record_labels,
)
from dynviz.rules import COMMON_THRESHOLD
from dynviz.units import MAC_NOTE, mac_unit

__all__ = ["Report", "analyze", "records_path_costs", "routing_figure", "slug", "table1"]

logger = logging.getLogger(__name__)


def slug(text: str) -> str:
    """A file-name-safe version of a label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


@dataclass
class Report:
    """What :func:`analyze` wrote (paths relative to the report folder)."""

    out: Path
    tables: dict[str, str] = field(default_factory=dict)
    figures: dict[str, list[str]] = field(default_factory=dict)
    html: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def _save(fig: Any, out: Path, stem: str, formats: tuple[str, ...], dpi: int) -> list[str]:
    names = []
    for fmt in formats:
        name = f"{stem}.{fmt}"
        fig.savefig(out / name, dpi=dpi, bbox_inches="tight")
        names.append(name)
    return names


def records_path_costs(rec: Records) -> pd.DataFrame | None:
    """Per-path MACs (:func:`dynviz.record.path_cost_frame`) at the records' first input size,
    for the cost shares of :func:`dynviz.analysis.routing_vs_scale`; None without a size."""
    sizes = list(rec.sidecar.input_sizes)
    if not sizes:
        sizes = rec.images[["height", "width"]].drop_duplicates().to_numpy().tolist()
    if not sizes:
        return None
    if len(sizes) > 1:
        logger.info("%s: %d input sizes; cost shares use %s", rec.label, len(sizes), sizes[0])
    return path_cost_frame(
        rec.config, (int(sizes[0][0]), int(sizes[0][1])), route=rec.sidecar.route
    )


def table1(records: list[Records]) -> pd.DataFrame:
    """The Table-1-style comparison of records: :func:`~dynviz.analysis.cost_statistics` per
    model plus its parameters, how it was routed, its data and its weights."""
    labels = record_labels(records)
    images = label_frames([r.images for r in records], labels)
    stats = cost_statistics(images)
    info = []
    for rec in records:
        sidecar = rec.sidecar
        info.append(
            {
                "params": sidecar.params,
                "routing": "dynamic (gates)"
                if sidecar.routing == "dynamic"
                else f"{sidecar.routing} {sidecar.route_name or 'route'}",
                "data": sidecar.data_label,
                "weights": f"iteration {sidecar.checkpoint.iteration}"
                if sidecar.checkpoint
                else "untrained",
            }
        )
    return pd.concat([stats.reset_index(drop=True), pd.DataFrame(info)], axis=1)


def analyze(
    records: list[Records],
    out: str | Path,
    *,
    threshold: float = COMMON_THRESHOLD,
    bins: int = 10,
    html: bool = True,
    formats: tuple[str, ...] = ("png", "pdf"),
    dpi: int = 120,
) -> Report:
    """Write the tables, figures and ``report.md`` of one or more records.

    Args:
        records: records of one or more models.
        out: the report folder (created).
        threshold: the common-network threshold drawn on Fig. 5 and counted in the summary.
        bins: bins of the Fig. 5 histogram.
        html: also write plotly HTML figures (skipped with a warning when plotly is missing).
        formats: matplotlib output formats.
        dpi: raster resolution.

    Returns:
        A :class:`Report` listing the files.
    """
    from matplotlib.figure import Figure

    from dynviz.model.graph import space_graph, to_graphml, to_json
    from dynviz.plots import mpl as plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out)
    gates, images = combine_records(records)
    labels = list(gates["model"].cat.categories)

    # ---- tables
    per_path = activation_probability(gates)
    per_vs = [
        routing_vs_scale(r.gates, r.images, path_costs=records_path_costs(r)).assign(model=label)
        for r, label in zip(records, labels, strict=True)
    ]
    vs = pd.concat(per_vs, ignore_index=True)
    vs["model"] = vs["model"].astype(pd.CategoricalDtype(labels, ordered=True))
    vs = vs[["model"] + [c for c in vs.columns if c != "model"]]
    summary = scale_summary(vs)
    costs = cost_statistics(images)
    tables = {
        "activation_probability": per_path,
        "probability_distribution": probability_distribution(gates, bins=bins),
        "layer_probability": activation_probability(gates, by=("layer",)),
        "scale_probability": activation_probability(gates, by=("scale",)),
        "direction_probability": activation_probability(gates, by=("direction",)),
        "cell_probability": cell_probability(gates),
        "cost_statistics": costs,
        "routing_vs_scale": vs,
        "scale_correlations": summary.correlations,
        "scale_by_regime": summary.by_regime,
    }
    augmented = aug_costs(images)
    if not augmented.empty:  # records made with --aug: the cost of each variant
        tables["aug_costs"] = augmented
    for name, frame in tables.items():
        frame.to_csv(out / f"{name}.csv", index=False, float_format="%.6g")
        report.tables[name] = f"{name}.csv"
    adaptivity = {}
    for rec, label in zip(records, labels, strict=True):
        if rec.meta.get("dynamic", True) and not rec.meta.get("forced_route"):
            adaptivity[label] = route_adaptivity(rec.gates, rec.images).to_dict()
    (out / "adaptivity.json").write_text(json.dumps(adaptivity, indent=2) + "\n", encoding="utf-8")
    report.tables["adaptivity (JSON)"] = "adaptivity.json"
    report.summary["adaptivity"] = adaptivity
    common = (
        per_path.assign(common=per_path["p"] > threshold)
        .groupby("model", observed=True)["common"]
        .agg(["sum", "size"])
    )
    report.summary["common_paths"] = {
        str(k): (int(v["sum"]), int(v["size"])) for k, v in common.iterrows()
    }
    report.summary["active_threshold"] = {  # a path was open at alpha above it
        label: float(rec.config.active_threshold)
        for rec, label in zip(records, labels, strict=True)
    }

    # ---- matplotlib figures
    ax = plots.probability_histogram(
        per_path,
        bins=bins,
        threshold=threshold,
        title="Distribution of path activation probability",
    )
    report.figures["fig5_probability"] = _save(ax.figure, out, "fig5_probability", formats, dpi)
    fig = Figure(figsize=(11.0, 3.8), dpi=100, layout="constrained")
    by_layer, by_scale = fig.subplots(1, 2, width_ratios=[2, 1], sharey=True)
    plots.probability_violins(
        per_path, x="layer", ax=by_layer, title="Fig. 5 per layer", xlabel="layer"
    )
    plots.probability_violins(
        per_path, x="scale", ax=by_scale, title="Fig. 5 per scale", xlabel="scale"
    )
    report.figures["fig5_layer_scale"] = _save(fig, out, "fig5_layer_scale", formats, dpi)
    ax = plots.cost_histogram(images, title="Real cost per image")
    report.figures["cost_histogram"] = _save(ax.figure, out, "cost_histogram", formats, dpi)
    report.figures["routing_vs_scale"] = _save(
        routing_figure(vs), out, "routing_vs_scale", formats, dpi
    )
    graphs = {}
    for rec, label in zip(records, labels, strict=True):
        name = slug(label)
        matrix = probability_matrix(rec.gates)
        ax = plots.probability_heatmap(matrix, title=f"{label}: share of images running each cell")
        report.figures[f"heatmap_{name}"] = _save(ax.figure, out, f"heatmap_{name}", formats, dpi)
        model_paths = per_path[per_path["model"] == label]
        graphs[label] = space_graph(
            rec.config, probability=model_paths, mean_alpha=model_paths, route=rec.sidecar.route
        )
        to_graphml(graphs[label], out / f"space_{name}.graphml")
        (out / f"space_{name}.json").write_text(
            json.dumps(to_json(graphs[label])) + "\n", encoding="utf-8"
        )
        report.tables[f"space_{name} (GraphML)"] = f"space_{name}.graphml"
        report.tables[f"space_{name} (node-link JSON)"] = f"space_{name}.json"
        ax = plots.space_diagram(
            graphs[label],
            threshold=threshold,
            title=f"{label}: paths shaded by activation probability",
        )
        report.figures[f"space_{name}"] = _save(ax.figure, out, f"space_{name}", formats, dpi)

    # ---- plotly figures
    if html:
        try:
            from dynviz.plots import interactive
        except ImportError:
            logger.warning("plotly is not installed: no HTML figures (pip install plotly)")
        else:
            pages = {
                "fig5_probability": interactive.probability_histogram(
                    per_path, bins=bins, threshold=threshold
                ),
                "probability_violin": interactive.probability_violin(per_path),
                "cost_histogram": interactive.cost_histogram(images),
                "routing_vs_scale": interactive.routing_scatter(vs),
            }
            for rec, label in zip(records, labels, strict=True):
                name = slug(label)
                pages[f"heatmap_{name}"] = interactive.probability_heatmap(
                    probability_matrix(rec.gates),
                    title=f"{label}: share of images running each cell",
                )
                pages[f"space_{name}"] = interactive.space_figure(
                    graphs[label], threshold=threshold, title=f"{label}: routing space"
                )
            for name, fig in pages.items():
                fig.write_html(out / f"{name}.html", include_plotlyjs="directory", full_html=True)
                report.html[name] = f"{name}.html"
    _write_report(report, records, labels, costs, summary, threshold)
    return report


def routing_figure(vs: pd.DataFrame) -> Any:
    """The two-panel routing-versus-scale figure: fine-scale share against mean object area
    (scatter), and per regime (box plots)."""
    from matplotlib.figure import Figure

    from dynviz.plots import mpl as plots

    fig = Figure(figsize=(10.0, 4.4), dpi=100, layout="constrained")
    left, right = fig.subplots(1, 2)
    many = vs["model"].nunique() > 1
    x = "stat_mean_object_area" if "stat_mean_object_area" in vs.columns else "real_gmacs"
    plots.routing_scatter(
        vs,
        x=x,
        y="fine_share",
        hue="model" if many else "regime",  # model colours match the box plots
        style="regime" if many else None,
        logx=x.startswith("stat_"),
        ax=left,
        title="Active paths at 1/4 vs object size",
        xlabel="mean object area (share of the image)",
        ylabel="share of active paths at 1/4",
        legend_below=True,
    )
    metric = "fine_cost_share" if "fine_cost_share" in vs.columns else "fine_share"
    plots.routing_box(
        vs,
        y=metric,
        by="regime",
        hue="model",
        ax=right,
        title="Backbone cost at 1/4 by regime",
        ylabel="share of real backbone cost at 1/4"
        if metric == "fine_cost_share"
        else "share of active paths at 1/4",
    )
    return fig


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


def _write_report(
    report: Report,
    records: list[Records],
    labels: list[str],
    costs: pd.DataFrame,
    summary: Any,
    threshold: float,
) -> None:
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
    for label in labels:
        name = slug(label)
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
