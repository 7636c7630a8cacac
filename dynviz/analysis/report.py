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
* ``report.md`` linking everything (:mod:`dynviz.analysis.report_markdown`).

The files are written into a hidden folder inside the report folder (``.report-*.tmp``) and
renamed into place once all are written: a failed write (a full or read-only disk) leaves the
previous report as it was and no half-written file; the next run removes a hidden folder that a
killed one left.

It sits above :mod:`dynviz.analysis` (tables), :mod:`dynviz.model.graph` and :mod:`dynviz.plots`
(figures); the command line is :mod:`dynviz.commands.analyze`.
"""

from __future__ import annotations

import json
import logging
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
from dynviz.analysis.adaptivity import records_adaptivity
from dynviz.analysis.report_markdown import write_markdown
from dynviz.record import (
    Records,
    combine_records,
    label_frames,
    path_cost_frame,
    record_labels,
)
from dynviz.rules import COMMON_THRESHOLD
from dynviz.support.staging import staged_folder

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


def save_figure(fig: Any, out: Path, stem: str, formats: tuple[str, ...], dpi: int) -> list[str]:
    """Write ``fig`` as ``out/stem.<fmt>`` for each format; the file names written."""
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

    Raises:
        OSError: the report folder cannot be written (read-only, full); the message names it,
            and the folder holds what it held before.
    """
    out = Path(out)
    with staged_folder(out) as staging:
        report = Report(staging)
        gates, images = combine_records(records)
        labels = list(gates["model"].cat.categories)
        tables = _write_tables(report, records, labels, gates, images, bins)
        _summarise(report, records, labels, tables.per_path, threshold)
        graphs = _write_figures(report, records, labels, tables, threshold, bins, formats, dpi)
        if html:
            _write_html(report, records, labels, tables, graphs, threshold, bins)
        names = [slug(label) for label in labels]
        write_markdown(report, records, labels, names, tables.costs, tables.summary, threshold)
    report.out = out
    return report


@dataclass(frozen=True)
class _Tables:
    """The frames the report's figures are drawn from."""

    per_path: pd.DataFrame  # activation probability per model and path
    vs: pd.DataFrame  # routing versus scale per model and image
    costs: pd.DataFrame  # Table 1 cost statistics
    summary: Any  # dynviz.analysis.scale_summary of ``vs``
    images: pd.DataFrame  # per-image rows of every model


def _write_tables(
    report: Report,
    records: list[Records],
    labels: list[str],
    gates: pd.DataFrame,
    images: pd.DataFrame,
    bins: int,
) -> _Tables:
    """Write the CSV tables and ``adaptivity.json``; record them in ``report``."""
    out = report.out
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
        adapts = records_adaptivity(rec)
        if adapts is not None:
            adaptivity[label] = adapts.to_dict()
    (out / "adaptivity.json").write_text(json.dumps(adaptivity, indent=2) + "\n", encoding="utf-8")
    report.tables["adaptivity (JSON)"] = "adaptivity.json"
    report.summary["adaptivity"] = adaptivity
    return _Tables(per_path=per_path, vs=vs, costs=costs, summary=summary, images=images)


def _summarise(
    report: Report,
    records: list[Records],
    labels: list[str],
    per_path: pd.DataFrame,
    threshold: float,
) -> None:
    """The common paths (probability above ``threshold``) and active threshold per model."""
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


def _write_figures(
    report: Report,
    records: list[Records],
    labels: list[str],
    tables: _Tables,
    threshold: float,
    bins: int,
    formats: tuple[str, ...],
    dpi: int,
) -> dict[str, Any]:
    """Write the matplotlib figures and each model's routing-space graph files.

    Returns:
        The routing-space graph of each model label.
    """
    from matplotlib.figure import Figure  # deferred: matplotlib is slow to import

    from dynviz.model.graph import space_graph, to_graphml, to_json
    from dynviz.plots import mpl as plots

    out, per_path = report.out, tables.per_path
    ax = plots.probability_histogram(
        per_path,
        bins=bins,
        threshold=threshold,
        title="Distribution of path activation probability",
    )
    report.figures["fig5_probability"] = save_figure(
        ax.figure, out, "fig5_probability", formats, dpi
    )
    fig = Figure(figsize=(11.0, 3.8), dpi=100, layout="constrained")
    by_layer, by_scale = fig.subplots(1, 2, width_ratios=[2, 1], sharey=True)
    plots.probability_violins(
        per_path, x="layer", ax=by_layer, title="Fig. 5 per layer", xlabel="layer"
    )
    plots.probability_violins(
        per_path, x="scale", ax=by_scale, title="Fig. 5 per scale", xlabel="scale"
    )
    report.figures["fig5_layer_scale"] = save_figure(fig, out, "fig5_layer_scale", formats, dpi)
    ax = plots.cost_histogram(tables.images, title="Real cost per image")
    report.figures["cost_histogram"] = save_figure(ax.figure, out, "cost_histogram", formats, dpi)
    report.figures["routing_vs_scale"] = save_figure(
        routing_figure(tables.vs), out, "routing_vs_scale", formats, dpi
    )
    graphs = {}
    for rec, label in zip(records, labels, strict=True):
        name = slug(label)
        matrix = probability_matrix(rec.gates)
        ax = plots.probability_heatmap(matrix, title=f"{label}: share of images running each cell")
        report.figures[f"heatmap_{name}"] = save_figure(
            ax.figure, out, f"heatmap_{name}", formats, dpi
        )
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
        report.figures[f"space_{name}"] = save_figure(ax.figure, out, f"space_{name}", formats, dpi)
    return graphs


def _write_html(
    report: Report,
    records: list[Records],
    labels: list[str],
    tables: _Tables,
    graphs: dict[str, Any],
    threshold: float,
    bins: int,
) -> None:
    """Write the plotly HTML figures (skipped with a warning when plotly is missing)."""
    try:
        from dynviz.plots import interactive  # deferred: plotly is optional and slow to import
    except ImportError:
        logger.warning("plotly is not installed: no HTML figures (pip install plotly)")
        return
    per_path = tables.per_path
    pages = {
        "fig5_probability": interactive.probability_histogram(
            per_path, bins=bins, threshold=threshold
        ),
        "probability_violin": interactive.probability_violin(per_path),
        "cost_histogram": interactive.cost_histogram(tables.images),
        "routing_vs_scale": interactive.routing_scatter(tables.vs),
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
        fig.write_html(report.out / f"{name}.html", include_plotlyjs="directory", full_html=True)
        report.html[name] = f"{name}.html"


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
