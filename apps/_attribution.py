"""Why this route: the gate attribution panel of the Route explorer and the attribution-versus-
object-size section of the Routing vs scale page. Both only call :mod:`dynviz.model.attribution`,
:mod:`dynviz.analysis.attribution` and :mod:`dynviz.plots.attribution`; the pages each add one
call."""

from __future__ import annotations

from typing import Any

import _state
import numpy as np
import pandas as pd
import streamlit as st

from dynviz.model.attribution import TOP_FRACTION, AttributionError

_DIRECTIONS = ("keep", "up", "down")
_MAX_IMAGES = 200


# ------------------------------------------------------------------------------ computing
@st.cache_data(show_spinner="Attributing the gates...", max_entries=32)
def image_attribution(path: str, mtime: float, image: np.ndarray) -> Any:
    """:func:`dynviz.model.attribution.attribute` of the records' model on ``image``."""
    from dynviz.model.attribution import attribute

    model, _ = _state.records_model(path, mtime)
    return attribute(model, image)


@st.cache_data(show_spinner="Attributing the gates on the records' images...", max_entries=16)
def object_table(path: str, mtime: float, count: int) -> pd.DataFrame:
    """:func:`dynviz.analysis.attribution.records_object_attribution` of the first ``count``
    images."""
    from dynviz.analysis.attribution import records_object_attribution

    records = _state.load_records(path, mtime)
    model, _ = _state.records_model(path, mtime)
    sidecar = records.sidecar
    dataset = _state.load_dataset(str(sidecar.data), str(sidecar.split or "val"))
    images = records.images.iloc[:count]
    sizes = [(int(h), int(w)) for h, w in zip(images["height"], images["width"], strict=True)]
    return records_object_attribution(
        model, dataset, images["image_id"].astype(str).tolist(), sizes=sizes
    )


def _why_not(path: str, mtime: float) -> str:
    """Why the records' model cannot be attributed, or ``""``."""
    model, info = _state.records_model(path, mtime)
    if model is None:
        return info.note or "No model for these records."
    if _state.forced_route(path, mtime) is not None:
        return "These records forced a route onto the model: no gate chose it."
    if not model.is_dynamic:
        return "This model has no gates (a static network): its route is fixed, not chosen."
    return ""


# ------------------------------------------------------------------------- Route explorer
def panel(path: str, mtime: float, image: np.ndarray | None, *, key: str) -> None:
    """Behind a toggle, the attribution of one image's gates: a clickable grid of its paths
    coloured by logit, a node and path picker, the chosen path's map over the image, its logit,
    alpha and the share of its attribution held by the top 10% of locations."""
    if not st.toggle(
        "Why this route? Gate attribution maps",
        key=f"attr_on_{key}",
        help="Split each gate's logit exactly over the locations of its input: where in the "
        "image the evidence for opening (red) or closing (blue) each path lies.",
    ):
        return
    st.subheader("Why this route", anchor=False)
    reason = _why_not(path, mtime)
    if reason:
        st.info(reason, icon=":material/info:")
        return
    if image is None:
        st.info("No image to attribute.")
        return
    from dynviz.plots.attribution import attribution_grid_figure, attribution_map_figure

    try:
        attr = image_attribution(path, mtime, image)
    except AttributionError as err:
        st.error(str(err))
        return
    frame = attr.frame()
    if frame.empty:
        st.info("No gate ran on this image.")
        return
    nodes = list(attr.nodes)
    node_key, dir_key, click_key = f"attr_node_{key}", f"attr_dir_{key}", f"attr_click_{key}"
    if st.session_state.get(node_key) not in nodes:
        st.session_state[node_key] = nodes[0]
    grid_key = f"attr_grid_{key}"
    # a click on the grid (its selection state, set before this run) picks a node or a path
    _apply_click(st.session_state.get(grid_key), nodes, node_key, dir_key, click_key)
    grid, pick = st.columns([3, 2])
    with grid:
        current = st.session_state[node_key]
        selected = (current[0], current[1], str(st.session_state.get(dir_key) or ""))
        st.plotly_chart(
            attribution_grid_figure(frame, selected=selected),
            width="stretch",
            key=grid_key,
            on_select="rerun",
            selection_mode="points",
        )
        st.caption(
            "Click a node or a path to see its map. Markers: the paths of every gate that "
            "ran, coloured by logit (red opens); hollow: closed."
        )
    with pick:
        node = st.selectbox(
            "Node",
            nodes,
            key=node_key,
            format_func=lambda n: f"layer {n[0]}, 1/{attr.stride[n[1]]}",
        )
        gate = attr.node(*node)
        labels = [d.label for d in gate.directions]
        if st.session_state.get(dir_key) not in labels:
            st.session_state[dir_key] = labels[0]
        direction = st.radio("Path", labels, key=dir_key, horizontal=True)
        j = gate.index(direction)
        a, b = st.columns(2)
        a.metric("Logit", f"{gate.logits[j]:.4g}", help="G before tanh, as the network computed")
        b.metric("Alpha", f"{gate.alpha[j]:.3f}", help="max(0, tanh(G)), after the threshold")
        st.metric(
            f"Top {TOP_FRACTION:.0%} share",
            _state.fmt_number(gate.top_share(direction), 3),
            help=f"share of the map's absolute mass in its top {TOP_FRACTION:.0%} of "
            f"locations ({TOP_FRACTION:.0%}: spread evenly; 1: a few locations decide)",
        )
        st.caption(
            f"bias {gate.bias[j]:.4g} + mean(map) {gate.maps[j].mean():.4g} = logit "
            f"(off by {abs(gate.reconstructed[j] - gate.logits[j]):.1e}); map "
            f"{gate.map_size[0]}x{gate.map_size[1]} at the gate's resolution, node "
            f"{gate.node_size[0]}x{gate.node_size[1]}."
        )
    st.plotly_chart(
        attribution_map_figure(
            image,
            attr.upsampled(node[0], node[1], direction),
            title=f"layer {node[0]}, 1/{attr.stride[node[1]]}, {direction}: where the logit "
            "comes from",
        ),
        width="stretch",
        key=f"attr_map_{key}",
    )
    with st.expander("This image's summary: which regions open the down and up paths"):
        regions = attr.region_maps()
        for column, (name, region) in zip(st.columns(len(regions)), regions.items(), strict=True):
            with column:
                st.plotly_chart(
                    attribution_map_figure(image, region, title=f"{name} paths (mean map)"),
                    width="stretch",
                    key=f"attr_region_{name}_{key}",
                )
        st.dataframe(attr.summary(), hide_index=True, width="stretch")


def _apply_click(state: Any, nodes: list, node_key: str, dir_key: str, click_key: str) -> None:
    """A new click on the grid (``state``: the chart's selection state) picks its node (and
    path), before the grid and the pickers are drawn."""
    selection = state.get("selection") if hasattr(state, "get") else None
    points = (selection.get("points") if hasattr(selection, "get") else None) or []
    if not points:
        return
    data = points[0].get("customdata")
    if not data or len(data) < 2:
        return
    click = (int(data[0]), int(data[1]), str(data[2]) if len(data) > 2 else "")
    if st.session_state.get(click_key) == click:
        return  # the same selection as before: keep what the pickers say now
    st.session_state[click_key] = click
    if (click[0], click[1]) in nodes:
        st.session_state[node_key] = (click[0], click[1])
        if click[2] in _DIRECTIONS:
            st.session_state[dir_key] = click[2]


# ------------------------------------------------------------------------ Routing vs scale
def scale_section(path: str | None) -> None:
    """Attribution against object size per class: do tiny objects open the fine paths?"""
    if path is None:
        return
    from dynviz.analysis.attribution import attribution_vs_size
    from dynviz.plots.attribution import attribution_size_scatter

    st.subheader("Attribution versus object size", anchor=False)
    mtime = _state.stamp(path)
    reason = _why_not(path, mtime)
    if reason:
        st.info(reason, icon=":material/info:")
        return
    records = _state.load_records(path, mtime)
    if not records.sidecar.data:
        st.info("The records do not name their data set: no images to attribute.")
        return
    total = len(records.images)
    count = int(
        st.number_input(
            "Images to attribute",
            min_value=1,
            max_value=min(total, _MAX_IMAGES),
            value=min(total, 20),
            key="attr_scale_count",
            help="The first images of the records; each runs the model once.",
        )
    )
    try:
        objects = object_table(path, mtime, count)
    except (AttributionError, OSError) as err:
        st.error(str(err))
        return
    if objects.empty:
        st.info("No objects in these images.")
        return
    c1, c2, c3 = st.columns(3)
    scales = sorted(objects["scale_index"].unique().tolist())
    strides = dict(zip(objects["scale_index"], objects["scale"], strict=False))
    scale = c1.selectbox(
        "Paths leaving scale",
        scales,
        format_func=lambda s: f"1/{strides[s]}",
        key="attr_scale_scale",
    )
    directions = [
        d for d in _DIRECTIONS if d in set(objects[objects["scale_index"] == scale]["direction"])
    ]
    direction = c2.selectbox("Direction", directions, key="attr_scale_direction")
    value = c3.selectbox(
        "Measure",
        ["lift", "density", "mass"],
        key="attr_scale_value",
        help="lift: mean contribution on the object minus over the image (> 0: the object "
        "pushes these paths open); density: mean contribution on the object; mass: the "
        "object's part of the mean logit",
    )
    part = objects[(objects["scale_index"] == scale) & (objects["direction"] == direction)]
    pooled = attribution_vs_size(part.assign(**{"class": -1}), value=value)
    rho = float(pooled["spearman"].iloc[0]) if len(pooled) else float("nan")
    st.metric(
        f"Spearman of area with {value}, all classes",
        _state.fmt_number(rho, 3),
        help="< 0: the smaller the object, the more it pushes these paths open",
    )
    names = list(records.sidecar.class_names)
    st.plotly_chart(
        attribution_size_scatter(part, value=value, class_names=names),
        width="stretch",
        key="attr_scale_scatter",
    )
    table = attribution_vs_size(objects, value=value)
    table = table.assign(
        **{
            "class": [names[c] if 0 <= c < len(names) else str(c) for c in table["class"]],
            "scale": "1/" + table["scale"].astype(str),
        }
    ).drop(columns=["scale_index"])
    st.dataframe(
        table.rename(
            columns={
                "scale": "paths leaving",
                "spearman": f"Spearman rho (area, {value})",
                "small_mean": f"mean {value}, objects below the class median",
                "large_mean": f"mean {value}, objects above it",
            }
        ),
        hide_index=True,
        width="stretch",
        column_config={
            f"Spearman rho (area, {value})": st.column_config.NumberColumn(format="%.3f"),
            f"mean {value}, objects below the class median": st.column_config.NumberColumn(
                format="%.4f"
            ),
            f"mean {value}, objects above it": st.column_config.NumberColumn(format="%.4f"),
        },
    )
    st.caption(
        "Each point is an object; its attribution is the mean over layers of the maps of the "
        "paths leaving the chosen scale in the chosen direction, upsampled to the image. "
        "Spearman < 0: the smaller the object, the more it pushes these paths open. Data sets "
        "without instance masks count each class region as one object."
    )
