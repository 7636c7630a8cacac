"""Routing versus scale: does an image's route follow the size of its objects? Per image, the
share of open paths (and of cost) at each scale against the image's object-scale statistics,
with correlations and per-regime means."""

from __future__ import annotations

import math

import _attribution
import _gates
import _state
import pandas as pd
import streamlit as st

from dynviz.analysis.adaptivity import paper_cost_range
from dynviz.analysis.routes import ROUTING_METRICS
from dynviz.labels import readable, readable_columns
from dynviz.plots.interactive import routing_scatter
from dynviz.units import format_macs, mac_unit

ctx = _gates.routing_records(_state.context())  # no gate-graph records
_state.records_or_stop(ctx)
catalog = ctx.catalog

st.title("Routing versus scale")
st.caption(
    "Dynamic routing should send images of small objects along fine (high-resolution) "
    "paths and images of large objects to coarse ones. Each point is an image."
)


def adaptivity_table(figures, unit) -> pd.DataFrame:  # noqa: ANN001 - RouteAdaptivity, MacUnit
    """The adaptivity figures as rows (a table never cuts a label, as metrics do)."""

    def percent(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{100 * value:.0f}%"

    low, high = figures.classifier_interval
    paper_low, paper_high = paper_cost_range()
    rho_low, rho_high = figures.scale_correlation_interval
    rho = figures.scale_correlation
    regimes = ", ".join(f"{k} {format_macs(v, unit)}" for k, v in figures.regime_gmacs.items())
    return pd.DataFrame(
        [
            (
                "cost spread",
                f"{figures.cost_spread:.2f}x",
                "",
                f"dearest tenth of the {figures.images} images "
                f"({format_macs(figures.dearest_tenth_gmacs, unit)}) over the cheapest tenth "
                f"({format_macs(figures.cheapest_tenth_gmacs, unit)})",
            ),
            (
                "dearest over cheapest image",
                "n/a" if math.isnan(figures.cost_range) else f"{figures.cost_range:.2f}x",
                "",
                "the extremes, as the paper's Table 1 gives them (its budgeted networks: "
                f"{paper_low:.2f}-{paper_high:.2f}x)",
            ),
            (
                "scale regimes apart",
                "n/a"
                if math.isnan(figures.regime_difference)
                else f"+{100 * figures.regime_difference:.0f}%",
                "",
                f"dearest regime's mean cost over the cheapest's ({regimes})",
            ),
            (
                "regime from the route",
                percent(figures.classifier_accuracy),
                "" if math.isnan(low) else f"{100 * low:.0f}-{100 * high:.0f}%",
                f"nearest-centroid classifier on the active paths, {figures.folds}-fold "
                f"cross-validated; chance {percent(figures.chance)}",
            ),
            (
                "cost against largest object",
                "n/a" if math.isnan(rho) else f"rho {rho:+.2f}",
                "" if math.isnan(rho_low) else f"{rho_low:+.2f} to {rho_high:+.2f}",
                "Spearman rank correlation of the per-image real cost with the area of the "
                "image's largest object",
            ),
        ],
        columns=["figure", "value", "95% interval", "what it measures"],
    )


labels = ctx.labels()
chosen = st.multiselect(
    "Models (records)", labels, default=[catalog.label(ctx.records)], key="scale_models"
)
if not chosen:
    st.info("Pick at least one records folder.")
    st.stop()
paths = tuple(ctx.usable[labels.index(label)] for label in chosen)
mtimes = tuple(_state.stamp(p) for p in paths)
per_image = _state.routing_vs_scale(paths, mtimes)

st.subheader("Do the routes adapt to the image?")
for path, label in zip(paths, chosen, strict=True):
    figures = _state.adaptivity(path, _state.stamp(path))
    if figures is None:
        continue
    unit = mac_unit([figures.cheapest_tenth_gmacs, figures.dearest_tenth_gmacs])
    st.markdown(f"**{label}**")
    st.dataframe(
        adaptivity_table(figures, unit),
        hide_index=True,
        width="stretch",
        key=f"adaptivity_{label}",
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
drawn = _state.drawn_points(per_image)
st.plotly_chart(
    routing_scatter(
        drawn,
        x=x,
        y=y,
        logx=logx,
        symbol="model" if len(paths) > 1 else None,
        xlabel=readable(x),
        ylabel=readable(y),
    ),
    width="stretch",
    key="scale_scatter",
)
if len(drawn) < len(per_image):
    st.caption(
        f"Drawn: {len(drawn):,} of the {len(per_image):,} images, a sample that stays the same "
        "on every visit; the tables below and the download use every image."
    )

summary = _state.scale_summary(paths, mtimes)
left, right = st.columns(2)
with left:
    st.subheader("By scale regime")
    by_regime = summary.by_regime
    if "real_gmacs" in by_regime.columns:
        regime_unit = mac_unit(by_regime["real_gmacs"])
        by_regime = by_regime.assign(real_gmacs=regime_unit(by_regime["real_gmacs"])).rename(
            columns={"real_gmacs": f"real cost ({regime_unit.label})"}
        )
    shown = by_regime.rename(columns=readable_columns(list(by_regime.columns)))
    st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        column_config={
            c: st.column_config.NumberColumn(format="%.3f")
            for c in shown.columns
            if c != "images" and pd.api.types.is_float_dtype(shown[c])
        },
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
    "Share of active paths at 1/4: of the open paths, those starting at 1/4; mean scale of "
    "active paths: their average depth in scale (0 = 1/4); share of backbone cost at 1/4: of "
    "the image's backbone cost, the part spent at 1/4. Empty correlations: a constant column "
    "or fewer than 3 images."
)
st.download_button(
    "Download per-image table (CSV)",
    lambda: per_image.to_csv(index=False),  # written on click, not every rerun
    file_name="routing_vs_scale.csv",
    mime="text/csv",
    icon=":material/download:",
)
_attribution.scale_section(ctx.records)  # attribution mass against object size per class
