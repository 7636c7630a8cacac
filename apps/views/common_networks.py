"""Common networks: the paths active in more than a threshold of the images (Sec. 4.3 of the
paper, Common-A/B/C of Table 1), drawn on the grid with their parameters and cost, and exported
as a route spec that ``dynviz train`` retrains as a static network."""

from __future__ import annotations

import _state
import streamlit as st

from dynviz.rules import COMMON_THRESHOLD
from dynviz.units import format_macs

ctx = _state.context()
records = _state.records_or_stop(ctx)
path, mtime = ctx.records, _state.stamp(ctx.records)

st.title("Common networks")
st.caption(
    f"Records `{ctx.catalog.label(path)}` ({records.label}, {len(records.images)} "
    "images). Paths active in more than the threshold share of images are kept, then "
    "paths that leave dangling cells are removed; the result is a static network."
)

if records.sidecar.routing != "dynamic":
    st.info(
        "These records ran a fixed route, so every image took the same paths: the common "
        "network is that route."
    )

threshold = st.slider(
    "Threshold (share of images)",
    0.0,
    0.99,
    COMMON_THRESHOLD,
    0.01,
    key="common_threshold",
    help="The paper keeps paths with activation probability above 95%.",
)
height, width = records.sidecar.input_size or (
    int(records.images.iloc[0]["height"]),
    int(records.images.iloc[0]["width"]),
)
result = _state.common_network(path, mtime, float(threshold), height, width)

if result.error:
    st.error(result.error, icon=":material/block:")
    st.stop()

cols = st.columns(4)
cols[0].metric("Open paths", f"{result.paths}", help=f"in {result.cells} cells")
cols[1].metric(
    "Parameters",
    f"{result.params:,}",
    delta=f"{100 * (result.params / result.dynamic_params - 1):+.1f}% vs all paths",
    delta_color="off",
)
cols[2].metric(
    f"Cost at {height}x{width}",
    format_macs(result.gmacs),
    delta=f"{100 * (result.gmacs / result.dynamic_gmacs - 1):+.1f}% vs all open",
    delta_color="off",
    help=f"against the dynamic model with every path open, gates included "
    f"({format_macs(result.dynamic_gmacs)}); the Latency page's static all-open network has "
    "no gates and costs less",
)
cols[3].metric(
    "Cost at 1024x2048",
    format_macs(result.gmacs_paper),
    help="the paper's input size (Cityscapes)",
)
st.plotly_chart(result.figure, width="stretch", key="common_figure")
if result.notes:
    st.caption(result.notes)

slug = f"common-{round(100 * threshold)}"
st.download_button(
    "Download the route spec (YAML)",
    result.yaml,
    file_name=f"{records.label}-{slug}.yaml",
    mime="application/x-yaml",
    icon=":material/download:",
    key="common_download",
)
st.caption(
    "Retrain it as a static network: `dynviz train FILE.yaml --data SPEC --out RUN`; "
    "or build it with `dynviz.build_model('FILE.yaml')`."
)
with st.expander("Route spec"):
    st.code(result.yaml, language="yaml")
