"""Routing versus scale: does an image's route follow the size of its objects? Per image, the
share of open paths (and of cost) at each scale against the image's object-scale statistics,
with correlations and per-regime means."""

from __future__ import annotations

import _attribution
import _state
import streamlit as st

from dynviz.analysis import scale_summary
from dynviz.analysis.routes import ROUTING_METRICS
from dynviz.plots.interactive import routing_scatter

ctx = _state.context()
_state.records_or_stop(ctx)
catalog = ctx.catalog

st.title("Routing versus scale")
st.caption(
    "Dynamic routing should send images of small objects along fine (high-resolution) "
    "paths and images of large objects to coarse ones. Each point is an image."
)

labels = ctx.labels()
chosen = st.multiselect(
    "Models (records)", labels, default=[catalog.label(ctx.records)], key="scale_models"
)
if not chosen:
    st.info("Pick at least one records folder.")
    st.stop()
paths = tuple(ctx.usable[labels.index(label)] for label in chosen)
per_image = _state.routing_vs_scale(paths, tuple(_state.stamp(p) for p in paths))

stats = [c for c in per_image.columns if c.startswith("stat_")]
if not stats:
    st.info(
        "These records hold no object-scale statistics (real data without instance "
        "masks); the synthetic data sets have them."
    )
    st.stop()
metrics = [m for m in ROUTING_METRICS if m in per_image.columns]
metrics += [c for c in per_image.columns if c.startswith(("share_s", "cost_share_s"))]
c1, c2, c3 = st.columns([2, 2, 1])
x = c1.selectbox(
    "Object-scale statistic",
    stats,
    index=stats.index("stat_mean_object_area") if "stat_mean_object_area" in stats else 0,
    format_func=lambda s: s.removeprefix("stat_").replace("_", " "),
    key="scale_x",
)
y = c2.selectbox(
    "Routing measure", metrics, format_func=lambda s: s.replace("_", " "), key="scale_y"
)
logx = c3.toggle("Log x", value=bool((per_image[x] > 0).all()), key="scale_logx")
st.plotly_chart(
    routing_scatter(per_image, x=x, y=y, logx=logx, symbol="model" if len(paths) > 1 else None),
    width="stretch",
    key="scale_scatter",
)

summary = scale_summary(per_image)
left, right = st.columns(2)
with left:
    st.subheader("By scale regime")
    st.dataframe(summary.by_regime, hide_index=True, width="stretch")
with right:
    st.subheader("Correlations")
    st.dataframe(
        summary.correlations.dropna(subset=["pearson", "spearman"], how="all"),
        hide_index=True,
        width="stretch",
        column_config={
            "pearson": st.column_config.NumberColumn(format="%.3f"),
            "spearman": st.column_config.NumberColumn(format="%.3f"),
        },
    )
st.caption(
    "fine share: share of open paths starting at 1/4; mean scale index: the average "
    "depth in scale of the open paths (0 = 1/4); fine cost share: share of the backbone "
    "cost spent at 1/4. NaN correlations: a constant column or fewer than 3 images."
)
st.download_button(
    "Download per-image table (CSV)",
    lambda: per_image.to_csv(index=False),  # written on click, not every rerun
    file_name="routing_vs_scale.csv",
    mime="text/csv",
    icon=":material/download:",
)
_attribution.scale_section(ctx.records)  # attribution mass against object size per class
