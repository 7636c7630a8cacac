"""Routing versus scale: does an image's route follow the size of its objects? Per image, the
share of open paths (and of cost) at each scale against the image's object-scale statistics,
with correlations and per-regime means."""

from __future__ import annotations

import _attribution
import _state
import streamlit as st

from dynviz.analysis import scale_summary
from dynviz.analysis.routes import ROUTING_METRICS
from dynviz.labels import readable, readable_columns
from dynviz.plots.interactive import routing_scatter
from dynviz.units import format_macs, mac_unit

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

st.subheader("Do the routes adapt to the image?")
for path, label in zip(paths, chosen, strict=True):
    figures = _state.adaptivity(path, _state.stamp(path))
    if figures is None:
        continue
    unit = mac_unit([figures.cheapest_tenth_gmacs, figures.dearest_tenth_gmacs])
    st.markdown(f"**{label}**")
    cols = st.columns(5)
    cols[0].metric(
        "Cost, dearest / cheapest tenth",
        f"{figures.cost_spread:.2f}x",
        help=f"mean real cost of the dearest tenth of the {figures.images} images "
        f"({format_macs(figures.dearest_tenth_gmacs, unit)}) over that of the cheapest tenth "
        f"({format_macs(figures.cheapest_tenth_gmacs, unit)})",
    )
    cols[1].metric(
        "Regime mean cost, dearest vs cheapest",
        "n/a"
        if figures.regime_difference != figures.regime_difference
        else f"+{100 * figures.regime_difference:.0f}%",
        help="mean real cost per scale regime: "
        + ", ".join(f"{k} {format_macs(v, unit)}" for k, v in figures.regime_gmacs.items()),
    )
    cols[2].metric(
        "Regime predicted from the route",
        "n/a"
        if figures.classifier_accuracy != figures.classifier_accuracy
        else f"{100 * figures.classifier_accuracy:.0f}%",
        help=f"nearest-centroid classifier on the image's active paths, {figures.folds}-fold "
        "cross-validated",
    )
    cols[3].metric(
        "Chance",
        "n/a" if figures.chance != figures.chance else f"{100 * figures.chance:.0f}%",
        help="always guessing the most frequent regime",
    )
    rho = figures.scale_correlation
    cols[4].metric(
        "Cost vs largest object",
        "n/a" if rho != rho else f"rho {rho:+.2f}",
        help="Spearman rank correlation of the per-image real cost with the area of the "
        "image's largest object",
    )
    st.caption(" ".join(figures.sentences()))

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
    format_func=readable,
    key="scale_x",
)
y = c2.selectbox("Routing measure", metrics, format_func=readable, key="scale_y")
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
    by_regime = summary.by_regime
    if "real_gmacs" in by_regime.columns:
        regime_unit = mac_unit(by_regime["real_gmacs"])
        by_regime = by_regime.assign(real_gmacs=regime_unit(by_regime["real_gmacs"])).rename(
            columns={"real_gmacs": f"real cost ({regime_unit.label})"}
        )
    st.dataframe(
        by_regime.rename(columns=readable_columns(list(by_regime.columns))),
        hide_index=True,
        width="stretch",
    )
with right:
    st.subheader("Correlations")
    correlations = summary.correlations.dropna(subset=["pearson", "spearman"], how="all")
    correlations = correlations.assign(
        metric=correlations["metric"].map(readable), stat=correlations["stat"].map(readable)
    )
    st.dataframe(
        correlations.rename(columns=readable_columns(list(correlations.columns))),
        hide_index=True,
        width="stretch",
        column_config={
            "Pearson r": st.column_config.NumberColumn(format="%.3f"),
            "Spearman rho": st.column_config.NumberColumn(format="%.3f"),
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
