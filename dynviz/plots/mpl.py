"""Matplotlib figures of records analyses, in seaborn's style: ``f(data, *, ax=None, ...) -> Axes``.

Each function draws into ``ax`` (default: a new :class:`matplotlib.figure.Figure`, no pyplot, so
no GUI backend is needed) and returns it; none calls ``plt.show()`` or saves files. Inputs are
the frames of :mod:`dynviz.analysis`. Costs are shown with the prefix of their data
(:mod:`dynviz.units`). The module is one figure family in one style, hence its length (over 500
lines): each function is independent of the others.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from dynviz.plots.style import DIRECTION_COLORS, PALETTE
from dynviz.rules import COMMON_THRESHOLD
from dynviz.units import mac_unit

__all__ = [
    "cost_accuracy",
    "cost_histogram",
    "new_axes",
    "probability_heatmap",
    "probability_histogram",
    "probability_violins",
    "routing_box",
    "routing_scatter",
    "space_diagram",
    "training_curves",
]

logger = logging.getLogger(__name__)


def new_axes(figsize: tuple[float, float] = (6.0, 4.0), *, dpi: int = 100) -> Axes:
    """Axes on a fresh :class:`Figure` (not registered with pyplot)."""
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    return fig.subplots()


def _groups(data: pd.DataFrame, hue: str | None) -> list[tuple[str, pd.DataFrame]]:
    if hue is None or hue not in data.columns:
        return [("", data)]
    return [(str(k), g) for k, g in data.groupby(hue, observed=True, sort=False)]


def _finish(ax: Axes, *, title: str | None, legend: bool, loc: str = "best") -> Axes:
    if title:
        ax.set_title(title)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, fontsize="small", loc=loc)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def probability_histogram(
    data: pd.DataFrame,
    *,
    x: str = "p",
    hue: str | None = "model",
    bins: int = 10,
    threshold: float | None = COMMON_THRESHOLD,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """The distribution of path activation probabilities (the paper's Fig. 5).

    Args:
        data: one row per path (``dynviz.analysis.activation_probability``), with ``hue``
            telling models apart.
        x: the probability column.
        hue: the model column (side-by-side bars per bin), or None.
        bins: equal-width bins over [0, 1].
        threshold: draw the common-network threshold as a dashed line (None: no line).
        ax: where to draw (default: a new figure).
        title: axes title.

    Returns:
        The Axes.
    """
    ax = ax if ax is not None else new_axes()
    groups = _groups(data, hue)
    values = [g[x].to_numpy(np.float64) for _, g in groups]
    weights = [np.full(len(v), 100.0 / max(len(v), 1)) for v in values]
    labels = [name for name, _ in groups]
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(groups))]
    ax.hist(
        values,
        bins=np.linspace(0, 1, bins + 1),
        weights=weights,
        label=labels,
        color=colors,
        edgecolor="white",
        linewidth=0.5,
    )
    if threshold is not None:
        ax.axvline(
            threshold,
            color="0.3",
            linestyle="--",
            linewidth=1,
            label=f"common-network threshold ({100 * threshold:g}%)",
        )
    ax.set_xlim(0, 1)
    ax.set_xlabel("activation probability of a path (share of images)")
    ax.set_ylabel("share of paths (%)")
    return _finish(
        ax, title=title, legend=len(groups) > 1 or threshold is not None, loc="upper center"
    )


def probability_heatmap(
    matrix: pd.DataFrame,
    *,
    ax: Axes | None = None,
    cmap: str = "viridis",
    annotate: bool = True,
    title: str | None = None,
    label: str = "activation probability",
) -> Axes:
    """A layer x scale heatmap (``dynviz.analysis.probability_matrix``), fine scales on top.

    Args:
        matrix: index ``layer``, columns strides; NaN where no cell exists.
        ax: where to draw.
        cmap: colormap over [0, 1].
        annotate: write each value in its cell.
        title: axes title.
        label: colorbar label.
    """
    ax = ax if ax is not None else new_axes((max(4.0, 0.55 * len(matrix) + 2), 3.2))
    values = matrix.to_numpy(np.float64).T  # (scales, layers)
    image = ax.imshow(
        np.ma.masked_invalid(values),
        cmap=cmap,
        vmin=0,
        vmax=1,
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_xticks(range(len(matrix.index)), [str(v) for v in matrix.index])
    ax.set_yticks(range(len(matrix.columns)), [f"1/{v}" for v in matrix.columns])
    ax.set_xlabel("layer")
    ax.set_ylabel("scale")
    if annotate and values.size <= 400:
        for (row, col), v in np.ndenumerate(values):
            if not math.isnan(v):
                ax.text(
                    col,
                    row,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v < 0.6 else "black",
                )
    ax.figure.colorbar(image, ax=ax, label=label, shrink=0.9)
    if title:
        ax.set_title(title)
    return ax


def cost_histogram(
    data: pd.DataFrame,
    *,
    x: str = "real_gmacs",
    hue: str | None = "model",
    bins: int = 20,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Histogram of per-image cost (``x`` in GMACs), one translucent series per model; the axis
    shows the prefix of the data (:func:`dynviz.units.mac_unit`: GMACs at paper sizes)."""
    ax = ax if ax is not None else new_axes()
    groups = _groups(data, hue)
    finite = data[x].to_numpy(np.float64)
    finite = finite[np.isfinite(finite)]
    unit = mac_unit(finite.tolist())
    finite = unit(finite)
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5 * abs(low or 1) * 0.01, high + 0.5 * abs(high or 1) * 0.01
    edges = np.linspace(low, high, bins + 1)
    for i, (name, group) in enumerate(groups):
        color = PALETTE[i % len(PALETTE)]
        ax.hist(
            unit(group[x].to_numpy(np.float64)),
            bins=edges,
            color=to_rgba(color, 0.55),
            edgecolor=color,
            linewidth=0.8,
            label=name or None,
        )
        ax.axvline(unit(float(group[x].mean())), color=color, linestyle="--", linewidth=1)
    kind = "real" if x.startswith("real") else "expected"
    ax.set_xlabel(f"{kind} cost per image ({unit.label})")
    ax.set_ylabel("images")
    return _finish(ax, title=title, legend=len(groups) > 1)


def routing_scatter(
    data: pd.DataFrame,
    *,
    x: str = "stat_mean_object_area",
    y: str = "fine_share",
    hue: str | None = "regime",
    style: str | None = None,
    logx: bool = True,
    ax: Axes | None = None,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    legend_below: bool = False,
) -> Axes:
    """Per-image routing measure against an object-scale statistic.

    Args:
        data: ``dynviz.analysis.routing_vs_scale`` output.
        x: the statistic (log axis by default: object areas span decades).
        y: the routing measure.
        hue: colour groups (the regime by default).
        style: marker groups (e.g. ``model``).
        logx: log-scale x.
        ax: where to draw.
        title: axes title.
        xlabel: x label (default: from ``x``).
        ylabel: y label (default: from ``y``).
        legend_below: put the legend under the axes (never over the points).
    """
    ax = ax if ax is not None else new_axes()
    markers = ("o", "s", "^", "D", "v", "P")
    styles = _groups(data, style)
    hues = [name for name, _ in _groups(data, hue)]
    for j, (style_name, styled) in enumerate(styles):
        for hue_name, group in _groups(styled, hue):
            color = PALETTE[hues.index(hue_name) % len(PALETTE)] if hue_name in hues else None
            label = " / ".join(v for v in (style_name, hue_name) if v) or None
            values = group[[x, y]].astype("float64")
            if logx:
                values = values[values[x] > 0]
            ax.scatter(
                values[x],
                values[y],
                s=18,
                alpha=0.75,
                color=color,
                marker=markers[j % len(markers)],
                label=label,
                linewidths=0,
            )
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel or x.removeprefix("stat_").replace("_", " "))
    ax.set_ylabel(ylabel or y.replace("_", " "))
    if legend_below:
        _finish(ax, title=title, legend=False)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(
                handles,
                labels,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.18),
                ncol=min(3, len(handles)),
                frameon=False,
                fontsize="small",
            )
        return ax
    return _finish(ax, title=title, legend=True, loc="best" if len(data) <= 500 else "upper right")


def routing_box(
    data: pd.DataFrame,
    *,
    y: str = "fine_share",
    by: str = "regime",
    hue: str | None = "model",
    ax: Axes | None = None,
    title: str | None = None,
    ylabel: str | None = None,
) -> Axes:
    """Box plots of a routing measure per group (regime), side by side per model."""
    ax = ax if ax is not None else new_axes()
    categories = [str(c) for c in pd.unique(data[by].astype(str))]
    order = [c for c in ("tiny", "mixed", "huge") if c in categories]
    categories = order + sorted(c for c in categories if c not in order)
    groups = _groups(data, hue)
    width = 0.8 / max(len(groups), 1)
    for i, (name, group) in enumerate(groups):
        color = PALETTE[i % len(PALETTE)]
        series = [
            group.loc[group[by].astype(str) == c, y].dropna().to_numpy(np.float64)
            for c in categories
        ]
        positions = [k - 0.4 + width * (i + 0.5) for k in range(len(categories))]
        keep = [(p, s) for p, s in zip(positions, series, strict=True) if s.size]
        if not keep:
            continue
        parts = ax.boxplot(
            [s for _, s in keep],
            positions=[p for p, _ in keep],
            widths=width * 0.85,
            patch_artist=True,
            showfliers=True,
            flierprops={"markersize": 3, "markerfacecolor": color, "markeredgecolor": color},
        )
        for box in parts["boxes"]:
            box.set(facecolor=to_rgba(color, 0.45), edgecolor=color)
        for key in ("whiskers", "caps", "medians"):
            for line in parts[key]:
                line.set(color=color)
        ax.plot([], [], color=color, linewidth=6, alpha=0.6, label=name or None)
    ax.set_xticks(range(len(categories)), categories)
    ax.set_xlabel(by.replace("_", " "))
    ax.set_ylabel(ylabel or y.replace("_", " "))
    return _finish(ax, title=title, legend=len(groups) > 1)


def probability_violins(
    data: pd.DataFrame,
    *,
    x: str = "layer",
    y: str = "p",
    hue: str | None = "model",
    ax: Axes | None = None,
    title: str | None = None,
    xlabel: str | None = None,
) -> Axes:
    """Fig. 5 split by layer (or scale): the per-path activation probabilities of each group as
    a violin with its points, side by side per model (``activation_probability`` rows)."""
    ax = ax if ax is not None else new_axes((7.0, 3.6))
    levels = sorted(pd.unique(data[x]))
    groups = _groups(data, hue)
    width = 0.8 / max(len(groups), 1)
    rng = np.random.default_rng(0)  # jitter of the points, reproducible
    for i, (name, group) in enumerate(groups):
        color = PALETTE[i % len(PALETTE)]
        positions, series = [], []
        for k, level in enumerate(levels):
            values = group.loc[group[x] == level, y].dropna().to_numpy(np.float64)
            if values.size:
                positions.append(k - 0.4 + width * (i + 0.5))
                series.append(values)
        if not series:
            continue
        spread = [s for s in series if np.ptp(s) > 0]
        if spread:
            parts = ax.violinplot(
                spread,
                positions=[p for p, s in zip(positions, series, strict=True) if np.ptp(s) > 0],
                widths=width * 0.9,
                showextrema=False,
            )
            for body in parts["bodies"]:
                body.set(facecolor=to_rgba(color, 0.35), edgecolor=color)
        for position, values in zip(positions, series, strict=True):
            jitter = rng.uniform(-0.25, 0.25, values.size) * width
            ax.scatter(position + jitter, values, s=6, color=color, linewidths=0)
        ax.plot([], [], color=color, linewidth=6, alpha=0.6, label=name or None)
    names = [f"1/{v}" if x == "scale" else str(v) for v in levels]
    ax.set_xticks(range(len(levels)), names)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel("activation probability of a path")
    return _finish(ax, title=title, legend=len(groups) > 1, loc="lower left")


def space_diagram(
    graph: Any,
    *,
    edge_attr: str | None = "probability",
    threshold: float | None = COMMON_THRESHOLD,
    ax: Axes | None = None,
    title: str | None = None,
    node_labels: bool = False,
) -> Axes:
    """The routing space on the paper's grid (x = layer, y = scale), edges shaded by
    ``edge_attr`` (dashed below ``threshold``).

    Args:
        graph: a digraph from ``dynviz.model.graph.space_graph`` or ``route_graph``.
        edge_attr: edge attribute in [0, 1] for opacity and width (None: all solid).
        threshold: edges whose value is at most this are dashed.
        ax: where to draw.
        title: axes title.
        node_labels: write cell names.
    """
    layers = int(graph.graph.get("num_layers", 4))
    ax = ax if ax is not None else new_axes((max(5.0, 0.45 * layers + 2.5), 3.4))
    pos = {n: a["pos"] for n, a in graph.nodes(data=True) if "pos" in a}
    strides = sorted({a["scale"] for _, a in graph.nodes(data=True) if a.get("kind") == "cell"})
    for u, v, attrs in graph.edges(data=True):
        if u not in pos or v not in pos:
            continue
        value = attrs.get(edge_attr) if edge_attr else None
        value = 1.0 if value is None else float(value)
        color = DIRECTION_COLORS.get(str(attrs.get("direction")), "0.4")
        dashed = threshold is not None and edge_attr is not None and value <= threshold
        (x0, y0), (x1, y1) = pos[u], pos[v]
        ax.plot(
            [x0, x1],
            [y0, y1],
            color=color,
            alpha=0.15 + 0.85 * value,
            linewidth=0.6 + 2.4 * value,
            linestyle="--" if dashed else "-",
            solid_capstyle="round",
            zorder=1,
        )
    cells = [(n, a) for n, a in graph.nodes(data=True) if a.get("kind") == "cell"]
    ax.scatter(
        [a["pos"][0] for _, a in cells],
        [a["pos"][1] for _, a in cells],
        s=36,
        color="white",
        edgecolor="0.2",
        linewidths=1,
        zorder=2,
    )
    for name in ("stem", "decoder"):
        if name in pos:
            x, y = pos[name]
            ax.scatter([x], [y], s=70, marker="s", color="0.85", edgecolor="0.2", zorder=2)
            ax.annotate(
                name,
                (x, y),
                textcoords="offset points",
                xytext=(0, -13),
                ha="center",
                fontsize="x-small",
            )
    if node_labels:
        for _, a in cells:
            ax.annotate(
                f"{a['layer']}",
                a["pos"],
                textcoords="offset points",
                xytext=(0, 5),
                ha="center",
                fontsize=6,
            )
    ax.set_yticks([-math.log2(s) for s in strides], [f"1/{s}" for s in strides])
    ax.set_xticks(range(0, layers + 1, max(1, layers // 8)))
    ax.set_xlabel("layer")
    ax.set_ylabel("scale")
    for direction in ("keep", "up", "down"):
        ax.plot([], [], color=DIRECTION_COLORS[direction], linewidth=2, label=direction)
    if edge_attr is not None:
        what = edge_attr.replace("_", " ")
        ax.plot([], [], color="0.3", linewidth=3, label=f"wide, dark: high {what}")
        ax.plot([], [], color="0.3", linewidth=1, alpha=0.3, label=f"thin, faint: low {what}")
        if threshold is not None:
            ax.plot(
                [],
                [],
                color="0.3",
                linestyle="--",
                linewidth=1,
                label=f"dashed: {what} <= {threshold:g}",
            )
    return _finish(ax, title=title, legend=True, loc="lower left")


def cost_accuracy(
    data: pd.DataFrame,
    *,
    reference: str | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """mIoU against cost, one labelled point per network, with the interval of each network's
    mIoU as the reference's minus the difference interval (so a bar that crosses the
    reference's level means "no clear difference").

    Args:
        data: one row per network: ``method``, ``kind``, ``cost`` (any unit), ``miou`` (%),
            and optionally ``low``, ``high`` (the network's mIoU interval, %) and ``unit`` (the
            cost's unit label).
        reference: the network the intervals are relative to (drawn as a star, with a dotted
            line at its mIoU).
        ax: where to draw.
        title: axes title.
    """
    ax = ax if ax is not None else new_axes((6.4, 4.2))
    kinds = sorted(str(k) for k in data["kind"].unique())
    for row in data.itertuples(index=False):
        color = PALETTE[kinds.index(str(row.kind)) % len(PALETTE)]
        own = row.method == reference
        low, high = getattr(row, "low", float("nan")), getattr(row, "high", float("nan"))
        if not own and np.isfinite(low) and np.isfinite(high):
            ax.errorbar(
                row.cost,
                row.miou,
                yerr=[[row.miou - low], [high - row.miou]],
                fmt="none",
                ecolor=color,
                elinewidth=1.2,
                capsize=3,
            )
        ax.scatter(
            row.cost,
            row.miou,
            s=90 if own else 36,
            marker="*" if own else "o",
            color=color,
            zorder=3,
            label=str(row.kind),
        )
        ax.annotate(
            str(row.method),
            (row.cost, row.miou),
            xytext=(5, 4),
            textcoords="offset points",
            fontsize="small",
        )
        if own:
            ax.axhline(row.miou, color=color, linestyle=":", linewidth=1)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    unit = str(data["unit"].iloc[0]) if "unit" in data.columns and len(data) else "GMACs"
    ax.set_xlabel(f"real cost per image ({unit})")
    ax.set_ylabel("mIoU (%)")
    ax.margins(x=0.15, y=0.12)
    if unique:
        ax.legend(unique.values(), unique.keys(), fontsize="small", loc="lower right")
    if title:
        ax.set_title(title)
    return ax


def training_curves(
    data: pd.DataFrame,
    *,
    y: str,
    x: str = "iter",
    hue: str | None = "run",
    ax: Axes | None = None,
    title: str | None = None,
    xlabel: str = "iteration",
    ylabel: str | None = None,
) -> Axes:
    """A training series against the iteration, one line per run (``hue``), its legend beside
    the axes; a run with a single value is drawn as a point (no line)."""
    ax = ax if ax is not None else new_axes((9.0, 2.6))
    for i, (name, group) in enumerate(_groups(data, hue)):
        group = group.sort_values(x)
        ax.plot(
            group[x].to_numpy(np.float64),
            group[y].to_numpy(np.float64),
            color=PALETTE[i % len(PALETTE)],
            linewidth=1.4,
            marker="o" if len(group) == 1 else None,
            markersize=4,
            label=name or None,
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel or y)
    ax.grid(True, linewidth=0.4, alpha=0.5)
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.spines[["top", "right"]].set_visible(False)
    return ax
