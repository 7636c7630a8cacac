"""Plotly figures of gate attribution (:mod:`dynviz.model.attribution`): pure builders.

* :func:`attribution_map_figure`: one map over its image, diverging colours centred at zero;
* :func:`attribution_grid_figure`: every node and path of an image on the layer x scale grid,
  coloured by its logit; each point carries ``customdata = [layer, scale_index, direction]`` so
  that a click (Streamlit ``on_select``) picks a node or a path;
* :func:`attribution_size_scatter`: object area against attribution, one colour per class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dynviz.plots.style import PALETTE

__all__ = ["attribution_grid_figure", "attribution_map_figure", "attribution_size_scatter"]

TEMPLATE = "plotly_white"
DIVERGING = "RdBu_r"  # red opens (positive contribution), blue closes


def attribution_map_figure(
    image: np.ndarray,
    values: np.ndarray,
    *,
    title: str | None = None,
    opacity: float = 0.6,
) -> go.Figure:
    """``values`` (``(H, W)``, already upsampled to the image) over ``image`` (``(H, W, 3)``
    uint8): a heatmap with a diverging scale centred at zero (symmetric limits)."""
    if values.shape != image.shape[:2]:
        raise ValueError(f"map {values.shape} and image {image.shape[:2]} differ in size")
    bound = float(np.abs(values).max()) or 1.0
    fig = go.Figure()
    fig.add_trace(go.Image(z=image, hoverinfo="skip"))
    fig.add_trace(
        go.Heatmap(
            z=values,
            zmid=0.0,
            zmin=-bound,
            zmax=bound,
            colorscale=DIVERGING,
            opacity=opacity,
            colorbar={"title": {"text": "contribution<br>to the logit"}},
            hovertemplate="x %{x}, y %{y}<br>contribution %{z:.4g}<extra></extra>",
        )
    )
    height, width = values.shape
    fig.update_layout(
        template=TEMPLATE,
        title=title,
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        height=max(260, min(520, int(420 * height / max(width, 1)) + 80)),
    )
    fig.update_xaxes(visible=False, range=[-0.5, width - 0.5])
    fig.update_yaxes(visible=False, range=[height - 0.5, -0.5], scaleanchor="x")
    return fig


_SYMBOLS = {"keep": "circle", "up": "triangle-up", "down": "triangle-down"}
_STEP = {"keep": 0, "up": -1, "down": 1}


def attribution_grid_figure(
    frame: pd.DataFrame,
    *,
    selected: tuple[int, int, str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """The paths of :meth:`dynviz.model.attribution.ImageAttribution.frame` on the layer x scale
    grid: one marker per path, halfway along its edge (keep: right, up: right and up a scale, down:
    right and down), coloured by its logit (diverging, centred at zero); closed paths are hollow.
    ``selected`` ``(layer, scale_index, direction)`` is ringed."""
    fig = go.Figure()
    if frame.empty:
        return fig
    bound = float(frame["logit"].abs().max()) or 1.0
    x = frame["layer"].to_numpy(float) + 0.5
    y = frame["scale_index"].to_numpy(float) + 0.5 * frame["direction"].map(_STEP).to_numpy(float)
    for layer, scale in frame[["layer", "scale_index"]].drop_duplicates().itertuples(index=False):
        for d in frame[(frame["layer"] == layer) & (frame["scale_index"] == scale)]["direction"]:
            fig.add_shape(
                type="line",
                x0=layer,
                y0=scale,
                x1=layer + 1,
                y1=scale + _STEP[d],
                line={"color": "#cccccc", "width": 1},
                layer="below",
            )
    nodes = frame[["layer", "scale_index", "scale"]].drop_duplicates()
    fig.add_trace(
        go.Scatter(
            x=nodes["layer"],
            y=nodes["scale_index"],
            mode="markers",
            marker={"size": 9, "color": "#8C8C8C"},
            customdata=np.stack(
                [nodes["layer"], nodes["scale_index"], np.full(len(nodes), "")], axis=1
            ),
            hovertemplate="layer %{customdata[0]}, scale index %{customdata[1]}<extra>node</extra>",
            selected={"marker": {"opacity": 1.0}},
            unselected={"marker": {"opacity": 1.0}},
            name="node",
            showlegend=False,
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y,
            mode="markers",
            marker={
                "size": 13,
                "symbol": [
                    _SYMBOLS[d] + ("" if a else "-open")
                    for d, a in zip(frame["direction"], frame["active"], strict=True)
                ],
                "color": frame["logit"],
                "cmin": -bound,
                "cmax": bound,
                "colorscale": DIVERGING,
                "line": {"width": 1, "color": "#444444"},
                "colorbar": {"title": {"text": "logit"}},
            },
            customdata=np.stack([frame["layer"], frame["scale_index"], frame["direction"]], axis=1),
            text=[
                f"layer {r.layer}, 1/{r.scale}, {r.direction}<br>logit {r.logit:.3f}, "
                f"alpha {r.alpha:.3f}"
                for r in frame.itertuples()
            ],
            hovertemplate="%{text}<extra></extra>",
            selected={"marker": {"opacity": 1.0}},
            unselected={"marker": {"opacity": 1.0}},  # a click must not fade the others
            name="path",
            showlegend=False,
        )
    )
    if selected is not None:
        layer, scale, d = selected
        fig.add_trace(
            go.Scatter(
                x=[layer + 0.5],
                y=[scale + 0.5 * _STEP.get(d, 0)],
                mode="markers",
                marker={"size": 22, "symbol": "circle-open", "color": "#000000"},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    # every row a path reaches is labelled, also one that only a down path leads to
    strides = dict(zip(nodes["scale_index"], nodes["scale"], strict=False))
    stride_of = {int(i): int(s) // 2 ** int(i) for i, s in strides.items()}  # the 1/4 stride
    base = next(iter(stride_of.values()), 4)
    reached = frame["scale_index"] + frame["direction"].map(_STEP).fillna(0).astype(int)
    for index in range(int(min(reached.min(), min(strides))), int(reached.max()) + 1):
        strides.setdefault(index, base * 2**index)
    fig.update_layout(
        template=TEMPLATE,
        title=title,
        height=300,
        margin={"l": 50, "r": 10, "t": 40 if title else 10, "b": 40},
        clickmode="event+select",
        dragmode=False,
    )
    fig.update_xaxes(title="layer", dtick=1)
    fig.update_yaxes(
        title="scale",
        autorange="reversed",
        tickvals=sorted(strides),
        ticktext=[f"1/{strides[s]}" for s in sorted(strides)],
    )
    return fig


def attribution_size_scatter(
    objects: pd.DataFrame,
    *,
    value: str = "lift",
    logx: bool = True,
    title: str | None = None,
    class_names: Sequence[str] = (),
) -> go.Figure:
    """Objects of :func:`dynviz.analysis.attribution.object_attribution` (one path group): ``area``
    against ``value``, one colour per class (named by ``class_names`` where given), with a zero
    line."""
    fig = go.Figure()
    for i, (cls, part) in enumerate(objects.groupby("class", sort=True)):
        fig.add_trace(
            go.Scatter(
                x=part["area"],
                y=part[value],
                mode="markers",
                name=class_names[cls] if 0 <= cls < len(class_names) else f"class {cls}",
                marker={"color": PALETTE[i % len(PALETTE)], "size": 7, "opacity": 0.8},
                text=part["image_id"].astype(str),
                hovertemplate="%{text}<br>area %{x}<br>" + value + " %{y:.4g}<extra></extra>",
            )
        )
    fig.add_hline(y=0.0, line={"color": "#888888", "width": 1, "dash": "dot"})
    fig.update_layout(
        template=TEMPLATE,
        title=title,
        xaxis_title="object area (pixels)",
        yaxis_title=value,
        legend_title_text="",
        margin={"l": 60, "r": 20, "t": 50 if title else 20, "b": 50},
    )
    if logx:
        fig.update_xaxes(type="log")
    return fig
