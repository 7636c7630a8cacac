"""Plotly versions of the records figures: ``f(data, *, ...) -> go.Figure``.

Pure builders for the report's HTML, notebooks and the Streamlit explorer: nothing is shown or
written here (call ``fig.write_html`` or ``st.plotly_chart``). Probability violins use
``spanmode="hard"`` so the density never spills outside [0, 1].
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dynviz.labels import readable
from dynviz.plots.style import DIRECTION_COLORS, PALETTE
from dynviz.rules import COMMON_THRESHOLD
from dynviz.units import mac_unit

__all__ = [
    "cost_histogram",
    "latency_bars",
    "option_order",
    "probability_heatmap",
    "probability_histogram",
    "probability_violin",
    "routing_scatter",
    "space_figure",
    "usage_heatmap",
    "usage_histogram",
    "value_bars",
]

logger = logging.getLogger(__name__)

TEMPLATE = "plotly_white"


def _groups(data: pd.DataFrame, key: str | None) -> list[tuple[str, pd.DataFrame]]:
    if key is None or key not in data.columns:
        return [("", data)]
    return [(str(k), g) for k, g in data.groupby(key, observed=True, sort=False)]


def _layout(fig: go.Figure, *, title: str | None, x: str, y: str) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE,
        title=title,
        xaxis_title=x,
        yaxis_title=y,
        legend_title_text="",
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig


def _path_label(frame: pd.DataFrame) -> list[str]:
    return [
        f"layer {layer}, 1/{scale}, {d}"
        for layer, scale, d in zip(
            frame["layer"], frame["scale"], frame["direction"].astype(str), strict=True
        )
    ]


def probability_histogram(
    data: pd.DataFrame,
    *,
    x: str = "p",
    color: str | None = "model",
    bins: int = 10,
    threshold: float | None = COMMON_THRESHOLD,
    title: str | None = "Distribution of path activation probability",
) -> go.Figure:
    """Fig. 5: share of paths per activation-probability bin, grouped bars per model."""
    fig = go.Figure()
    edges = np.linspace(0, 1, bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    for i, (name, group) in enumerate(_groups(data, color)):
        counts, _ = np.histogram(group[x].to_numpy(np.float64), bins=edges)
        share = 100 * counts / max(int(counts.sum()), 1)
        fig.add_bar(
            x=centers,
            y=share,
            name=name or "paths",
            width=(1 / bins) * 0.9 / max(len(_groups(data, color)), 1),
            marker_color=PALETTE[i % len(PALETTE)],
            customdata=np.stack([edges[:-1], edges[1:], counts], -1),
            hovertemplate="p in [%{customdata[0]:.2f}, %{customdata[1]:.2f}]: "
            "%{customdata[2]} paths (%{y:.1f}%)<extra>%{fullData.name}</extra>",
        )
    fig.update_layout(barmode="group")
    if threshold is not None:
        fig.add_vline(
            x=threshold,
            line_dash="dash",
            line_color="#555",
            annotation_text=f"{100 * threshold:g}%",
            annotation_position="top left",
        )
    fig.update_xaxes(range=[0, 1])
    return _layout(fig, title=title, x="activation probability of a path", y="share of paths (%)")


def probability_violin(
    data: pd.DataFrame,
    *,
    x: str = "layer",
    y: str = "p",
    color: str | None = "model",
    title: str | None = "Path activation probability per layer",
) -> go.Figure:
    """Per-path activation probabilities as violins per layer (``spanmode="hard"``)."""
    fig = go.Figure()
    groups = _groups(data, color)
    for i, (name, group) in enumerate(groups):
        fig.add_violin(
            x=group[x].astype(str),
            y=group[y],
            name=name or "paths",
            spanmode="hard",
            points="all",
            pointpos=0,
            jitter=0.3,
            marker={"size": 4},
            line_color=PALETTE[i % len(PALETTE)],
            scalemode="width",
            text=_path_label(group),
            hovertemplate="%{text}: p = %{y:.3f}<extra>%{fullData.name}</extra>",
        )
    fig.update_layout(violinmode="group" if len(groups) > 1 else "overlay")
    fig.update_yaxes(range=[-0.02, 1.02])
    return _layout(fig, title=title, x=x, y="activation probability")


def probability_heatmap(
    matrix: pd.DataFrame, *, title: str | None = None, label: str = "p"
) -> go.Figure:
    """A layer x scale heatmap (``dynviz.analysis.probability_matrix``), fine scales on top."""
    z = matrix.to_numpy(np.float64).T  # (scales, layers)
    text = [["" if math.isnan(v) else f"{v:.2f}" for v in row] for row in z]
    fig = go.Figure(
        go.Heatmap(
            z=np.where(np.isnan(z), None, z).tolist(),
            x=[str(v) for v in matrix.index],
            y=[f"1/{v}" for v in matrix.columns],
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            text=text,
            texttemplate="%{text}",
            colorbar={"title": {"text": label}},
            hovertemplate="layer %{x}, scale %{y}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title=title, x="layer", y="scale")


def cost_histogram(
    data: pd.DataFrame,
    *,
    x: str = "real_gmacs",
    color: str | None = "model",
    bins: int = 20,
    title: str | None = "Cost per image",
) -> go.Figure:
    """Histogram of per-image cost (``x`` in GMACs), overlaid per model; the axis shows the
    prefix of the data (:func:`dynviz.units.mac_unit`: GMACs at paper sizes)."""
    fig = go.Figure()
    unit = mac_unit(data[x].dropna().tolist())
    for i, (name, group) in enumerate(_groups(data, color)):
        fig.add_histogram(
            x=unit(group[x]),
            name=name or "images",
            nbinsx=bins,
            opacity=0.6,
            marker_color=PALETTE[i % len(PALETTE)],
        )
    fig.update_layout(barmode="overlay")
    kind = "real" if x.startswith("real") else "expected"
    return _layout(fig, title=title, x=f"{kind} cost per image ({unit.label})", y="images")


def routing_scatter(
    data: pd.DataFrame,
    *,
    x: str = "stat_mean_object_area",
    y: str = "fine_share",
    color: str | None = "regime",
    symbol: str | None = "model",
    logx: bool = True,
    title: str | None = "Routing versus object scale",
    xlabel: str | None = None,
    ylabel: str | None = None,
) -> go.Figure:
    """Per-image routing measure against an object-scale statistic (hover: the image id); the
    axes are labelled ``xlabel``/``ylabel`` (default: the column names, readable)."""
    fig = go.Figure()
    symbols = ("circle", "square", "diamond", "triangle-up", "x", "cross")
    colors = [name for name, _ in _groups(data, color)]
    for j, (symbol_name, styled) in enumerate(_groups(data, symbol)):
        for name, group in _groups(styled, color):
            values = group[group[x] > 0] if logx else group
            label = " / ".join(v for v in (symbol_name, name) if v) or "images"
            add = fig.add_scattergl if len(data) > 5000 else fig.add_scatter  # WebGL for many
            add(
                x=values[x],
                y=values[y],
                mode="markers",
                name=label,
                marker={
                    "color": PALETTE[colors.index(name) % len(PALETTE)],
                    "symbol": symbols[j % len(symbols)],
                    "size": 7,
                    "opacity": 0.8,
                },
                text=values["image_id"].astype(str) if "image_id" in values else None,
                hovertemplate="%{text}<br>%{x:.4g}, %{y:.3f}<extra>%{fullData.name}</extra>",
            )
    if logx:
        fig.update_xaxes(type="log")
    return _layout(fig, title=title, x=xlabel or readable(x), y=ylabel or readable(y))


def latency_bars(
    rows: pd.DataFrame, *, title: str | None = "Achieved MAC rate per node and scale"
) -> go.Figure:
    """GMAC/s of each component at each scale (``dynviz.inference.latency.latency_rows`` as a frame
    with ``stride``, ``component``, ``mmacs``, ``ms``): equal MACs, unequal time."""
    fig = go.Figure()
    for i, (component, group) in enumerate(rows.groupby("component", sort=False)):
        fig.add_bar(
            x=[f"1/{s}" for s in group["stride"]],
            y=group["mmacs"] / group["ms"],  # MMACs per ms = GMAC/s
            name=str(component),
            marker_color=PALETTE[i % len(PALETTE)],
            customdata=np.stack([group["mmacs"], group["ms"]], axis=1),
            hovertemplate="%{customdata[0]:.1f} MMACs in %{customdata[1]:.2f} ms: "
            "%{y:.1f} GMAC/s<extra>%{fullData.name}</extra>",
        )
    fig.update_layout(barmode="group")
    return _layout(fig, title=title, x="scale (stride)", y="GMAC/s")


def space_figure(
    graph: Any,
    *,
    edge_attr: str | None = "probability",
    threshold: float | None = COMMON_THRESHOLD,
    title: str | None = "Routing space",
    highlight: Any = (),
    highlight_name: str = "differs",
) -> go.Figure:
    """The routing space on the paper's grid; edge opacity and width follow ``edge_attr``, and
    edges at or below ``threshold`` are dotted. Hover an edge's midpoint for its values.

    ``highlight``: ``(layer, stride, direction)`` of paths to mark with a wide yellow band
    (e.g. the paths where two images' routes differ), named ``highlight_name`` in the legend.
    """
    fig = go.Figure()
    pos = {n: a["pos"] for n, a in graph.nodes(data=True) if "pos" in a}
    marked = {(int(layer), int(stride), str(d)) for layer, stride, d in highlight}
    band_x: list[float | None] = []
    band_y: list[float | None] = []
    for u, v, attrs in graph.edges(data=True):
        key = (int(attrs.get("layer", -9)), int(attrs.get("scale", 0)), str(attrs.get("direction")))
        if key in marked and u in pos and v in pos:
            band_x += [pos[u][0], pos[v][0], None]
            band_y += [pos[u][1], pos[v][1], None]
    if band_x:
        fig.add_scatter(
            x=band_x,
            y=band_y,
            mode="lines",
            name=highlight_name,
            hoverinfo="skip",
            line={"color": "rgba(255, 200, 0, 0.55)", "width": 14},
        )
    mid_x, mid_y, mid_text = [], [], []
    for u, v, attrs in graph.edges(data=True):
        if u not in pos or v not in pos:
            continue
        value = attrs.get(edge_attr) if edge_attr else None
        shade = 1.0 if value is None else float(value)
        dashed = threshold is not None and value is not None and shade <= threshold
        (x0, y0), (x1, y1) = pos[u], pos[v]
        fig.add_scatter(
            x=[x0, x1],
            y=[y0, y1],
            mode="lines",
            showlegend=False,
            hoverinfo="skip",
            opacity=0.15 + 0.85 * shade,
            line={
                "color": DIRECTION_COLORS.get(str(attrs.get("direction")), "#666"),
                "width": 1 + 4 * shade,
                "dash": "dot" if dashed else "solid",
            },
        )
        mid_x.append((x0 + x1) / 2)
        mid_y.append((y0 + y1) / 2)
        parts = [
            f"{k}: {attrs[k]:.3g}" if isinstance(attrs[k], float) else f"{k}: {attrs[k]}"
            for k in ("direction", "probability", "mean_alpha", "alpha", "macs")
            if k in attrs
        ]
        mid_text.append(f"{u} -> {v}<br>" + "<br>".join(parts))
    fig.add_scatter(
        x=mid_x,
        y=mid_y,
        mode="markers",
        marker={"size": 6, "opacity": 0},
        text=mid_text,
        hovertemplate="%{text}<extra></extra>",
        showlegend=False,
    )
    nodes = [(n, a) for n, a in graph.nodes(data=True) if "pos" in a]
    fig.add_scatter(
        x=[a["pos"][0] for _, a in nodes],
        y=[a["pos"][1] for _, a in nodes],
        mode="markers",
        showlegend=False,
        marker={
            "size": [14 if a.get("kind") != "cell" else 10 for _, a in nodes],
            "symbol": ["square" if a.get("kind") != "cell" else "circle" for _, a in nodes],
            "color": "white",
            "line": {"color": "#333", "width": 1.5},
        },
        text=[str(n) for n, _ in nodes],
        hovertemplate="%{text}<extra></extra>",
    )
    for direction in ("keep", "up", "down"):
        fig.add_scatter(
            x=[None],
            y=[None],
            mode="lines",
            name=direction,
            line={"color": DIRECTION_COLORS[direction], "width": 3},
        )
    if edge_attr is not None:  # what width, opacity and dots mean
        what = edge_attr.replace("_", " ")
        legend = [
            (f"wide, dark: high {what}", 5, 1.0, "solid"),
            (f"thin, faint: low {what}", 1, 0.3, "solid"),
        ]
        if threshold is not None:
            legend.append((f"dotted: {what} <= {threshold:g}", 1.5, 0.6, "dot"))
        for name, width, opacity, dash in legend:
            fig.add_scatter(
                x=[None],
                y=[None],
                mode="lines",
                name=name,
                opacity=opacity,
                line={"color": "#555", "width": width, "dash": dash},
            )
    strides = sorted({a["scale"] for _, a in nodes if a.get("kind") == "cell"})
    fig.update_yaxes(
        tickvals=[-math.log2(s) for s in strides], ticktext=[f"1/{s}" for s in strides]
    )
    return _layout(fig, title=title, x="layer", y="scale")


# ------------------------------------------------------------------ any gate graph (issue 27)
def option_order(frame: pd.DataFrame) -> list[str]:
    """The option names of a (point, option) frame in an order every point keeps (the routing
    space's up, keep, down even where a point's first options lack up)."""
    order: list[str] = []
    for _, group in frame.groupby("point", sort=False):
        names = list(group["option"])
        for i, name in enumerate(names):
            if name not in order:
                after = [order.index(n) for n in names[i + 1 :] if n in order]
                order.insert(min(after, default=len(order)), name)
    return order


def usage_heatmap(frame: pd.DataFrame, *, title: str) -> go.Figure:
    """Share of inputs that ran each option: one row per point (the graph's order), one column
    per option name."""
    points = list(dict.fromkeys(frame["point"]))
    options = option_order(frame)
    grid = (
        frame.pivot(index="point", columns="option", values="usage")
        .reindex(index=points, columns=options)
        .to_numpy(np.float64)
        * 100
    )
    text = [["" if np.isnan(v) else f"{v:.0f}%" for v in row] for row in grid]
    fig = go.Figure(
        go.Heatmap(
            z=grid,
            x=options,
            y=points,
            zmin=0,
            zmax=100,
            colorscale="Blues",
            text=text,
            texttemplate="%{text}" if len(points) * len(options) <= 400 else None,
            hovertemplate="%{y} / %{x}: %{z:.1f}% of inputs ran it<extra></extra>",
            colorbar={"title": {"text": "% of inputs"}},
        )
    )
    fig.update_xaxes(type="category", side="top")
    fig.update_yaxes(type="category", autorange="reversed")
    height = int(min(max(240, 26 * len(points) + 140), 1800))
    fig.update_layout(height=height)
    return _layout(fig, title=title, x="option", y="gate point")


def usage_histogram(
    frame: pd.DataFrame, *, threshold: float = COMMON_THRESHOLD, bins: int = 10
) -> go.Figure:
    """Fig. 5 for any gate graph: the share of options per usage bin (the share of inputs that
    ran the option), with the common-path threshold marked."""
    edges = np.linspace(0, 1, bins + 1)
    counts, _ = np.histogram(frame["usage"].to_numpy(np.float64), bins=edges)
    share = 100 * counts / max(int(counts.sum()), 1)
    fig = go.Figure(
        go.Bar(
            x=(edges[:-1] + edges[1:]) / 2,
            y=share,
            width=0.9 / bins,
            marker_color=PALETTE[0],
            customdata=np.stack([edges[:-1], edges[1:], counts], -1),
            hovertemplate="used by [%{customdata[0]:.2f}, %{customdata[1]:.2f}] of the inputs: "
            "%{customdata[2]} options (%{y:.1f}%)<extra></extra>",
        )
    )
    fig.add_vline(
        x=threshold,
        line_dash="dash",
        line_color="#555",
        annotation_text=f"{100 * threshold:g}%",
        annotation_position="top left",
    )
    fig.update_xaxes(range=[0, 1])
    return _layout(
        fig,
        title="Distribution of option usage (Fig. 5 for any gate graph)",
        x="share of inputs that ran the option",
        y="share of options (%)",
    )


def value_bars(frame: pd.DataFrame, *, point: str) -> go.Figure:
    """The per-input values of one point's options, as shares of inputs per bin of [0, 1]."""
    rows = frame[frame["point"] == point]
    fig = go.Figure()
    options = list(dict.fromkeys(rows["option"]))
    bins = int(rows["bin"].max()) + 1 if len(rows) else 10
    for i, option in enumerate(options):
        part = rows[rows["option"] == option]
        fig.add_bar(
            x=(part["low"] + part["high"]) / 2,
            y=100 * part["share"],
            name=option,
            width=0.9 / bins / max(len(options), 1),
            marker_color=PALETTE[i % len(PALETTE)],
            customdata=np.stack([part["low"], part["high"]], -1),
            hovertemplate="value in [%{customdata[0]:.2f}, %{customdata[1]:.2f}]: %{y:.1f}% of "
            "the inputs that reached the point<extra>%{fullData.name}</extra>",
        )
    fig.update_layout(barmode="group", height=360)
    fig.update_xaxes(range=[0, 1])
    return _layout(
        fig,
        title=f"Values at {point}",
        x="the option's value (gate probability or router weight)",
        y="share of inputs (%)",
    )
