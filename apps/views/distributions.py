"""Distributions: the paper's Fig. 5 (distribution of path activation probabilities) and the
alpha distributions, filtered by model, layer, scale and direction."""

from __future__ import annotations

import _gates
import _state
import streamlit as st

from dynviz.analysis import coarsen_histogram
from dynviz.record import DIRECTIONS
from dynviz.rules import COMMON_THRESHOLD

ctx = _gates.routing_records(_state.context())  # no gate-graph records
_state.records_or_stop(ctx)
catalog = ctx.catalog

st.title("Distributions")

labels = ctx.labels()
default = [catalog.label(ctx.records)] if ctx.records else labels[:1]
chosen = st.multiselect("Models (records)", labels, default=default, key="dist_models")
if not chosen:
    st.info("Pick at least one records folder.")
    st.stop()
paths = tuple(ctx.usable[labels.index(label)] for label in chosen)
stats = _state.combined_path_statistics(paths, tuple(_state.stamp(p) for p in paths))
paths_all = stats.per_path
st.caption(
    "A path's activation probability is the share of images in which it was open "
    f"({stats.threshold_text()}, the records' active threshold), as in Fig. 5 of the paper. "
    "Paths above the common-network threshold form the common network."
)

layers = sorted(int(v) for v in paths_all["layer"].unique())
strides = sorted(int(v) for v in paths_all["scale"].unique())
c1, c2, c3, c4 = st.columns([2, 3, 2.2, 1])
layer_range = (
    c1.slider("Layers", layers[0], layers[-1], (layers[0], layers[-1]), key="dist_layers")
    if len(layers) > 1
    else (layers[0], layers[0])
)
scales = c2.pills(
    "Scales",
    strides,
    selection_mode="multi",
    default=strides,
    format_func=lambda s: f"1/{s}",
    key="dist_scales",
)
directions = c3.pills(
    "Directions",
    list(DIRECTIONS),
    selection_mode="multi",
    default=list(DIRECTIONS),
    key="dist_directions",
)
bins = c4.number_input("Bins", 5, 50, 10, key="dist_bins")
threshold = st.slider(
    "Common-network threshold", 0.0, 0.99, COMMON_THRESHOLD, 0.01, key="dist_threshold"
)


filters = (
    (int(layer_range[0]), int(layer_range[1])),
    tuple(int(s) for s in scales),
    tuple(str(d) for d in directions),
)
per_path = _state.matching_paths(paths_all, *filters)
if per_path.empty:
    st.warning("No path matches these filters.")
    st.stop()

summary = (
    per_path.groupby("model", observed=True)
    .agg(
        paths=("p", "size"),
        never=("p", lambda p: int((p == 0).sum())),
        always=("p", lambda p: int((p == 1).sum())),
        common=("p", lambda p: int((p > threshold).sum())),
    )
    .reset_index()
)
st.dataframe(
    summary.rename(
        columns={"never": "never open", "always": "always open", "common": f"above {threshold:g}"}
    ),
    hide_index=True,
    width="content",
)

histogram_figure, by_layer, by_scale = _state.distribution_figures(
    paths, tuple(_state.stamp(p) for p in paths), *filters, int(bins), float(threshold)
)
st.plotly_chart(histogram_figure, width="stretch", key="fig5")
st.download_button(
    "Download per-path probabilities (CSV)",
    per_path.to_csv(index=False),
    file_name="activation_probability.csv",
    mime="text/csv",
    icon=":material/download:",
)

left, right = st.columns(2)
with left:
    st.plotly_chart(by_layer, width="stretch", key="violin_layer")
with right:
    st.plotly_chart(by_scale, width="stretch", key="violin_scale")

st.subheader("Alpha distributions")
by = st.radio("Split by", ["direction", "scale", "layer"], horizontal=True, key="dist_alpha_by")
if by == "layer":  # one series per model: a histogram per layer and model is unreadable
    per_layer = (
        per_path.groupby(["model", "layer"], observed=True)
        .agg(mean_alpha=("mean_alpha", "mean"), p=("p", "mean"))
        .reset_index()
    )
    left, right = st.columns(2)
    left.line_chart(
        per_layer,
        x="layer",
        y="mean_alpha",
        color="model",
        height=300,
        x_label="layer",
        y_label="mean alpha of the layer's paths",
    )
    right.line_chart(
        per_layer,
        x="layer",
        y="p",
        color="model",
        height=300,
        x_label="layer",
        y_label="mean activation probability",
    )
    st.caption(
        "Per layer, averaged over its paths (and images): the mean alpha, and the share of "
        "images in which a path of the layer is open. Split by direction or scale for the "
        "alpha histograms."
    )
    st.stop()
histogram = coarsen_histogram(_state.matching_paths(stats.histogram, *filters), by=(by,))
names = histogram[by].astype(str)
if by == "scale":
    names = "1/" + names
histogram = histogram.assign(
    alpha=histogram["bin_left"].map("{:.2f}".format),
    group=histogram["model"].astype(str) + " / " + names,
    share=100 * histogram["fraction"],
)
st.bar_chart(
    histogram,
    x="alpha",
    y="share",
    color="group",
    stack=False,
    height=340,
    x_label="gate alpha (bins of 0.05, by their lower edge)",
    y_label="share of gate values (%)",
)
st.caption(
    "The gates' own alphas, also where the records' active threshold closed the path "
    f"(a path was open at {stats.threshold_text()}); 0 for cells that received no input."
)
