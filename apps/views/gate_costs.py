"""Cost and statistics: the real cost of each input where the gate graph gives costs, and each
option's decisions against the inputs' statistics (Spearman's rho, and one chosen pair drawn)."""

from __future__ import annotations

import _gates
import _state
import numpy as np
import streamlit as st

from dynviz.plots.interactive import cost_histogram, routing_scatter
from dynviz.units import mac_unit

ctx = _state.context()
records = _state.records_or_stop(ctx)
path, mtime = ctx.records, _state.stamp(ctx.records)
facts = _gates.graph_facts(path, mtime)

st.title("Cost and statistics")
st.caption(
    f"Records `{ctx.catalog.label(path)}` ({records.label}): the gate graph '{facts.name}' "
    f"({facts.text}) over {facts.inputs} inputs."
)

# ---------------------------------------------------------------------------- cost
st.subheader("Real cost per input")
costs = _gates.costs(path, mtime)
known = costs.dropna(subset=["real_gmacs"])
if known.empty:
    st.info(
        f"The gate graph '{facts.name}' gives no cost for "
        + ", ".join(f"`{m}`" for m in facts.missing_costs[:8])
        + (" and more" if len(facts.missing_costs) > 8 else "")
        + ": no input's real cost is known.",
        icon=":material/info:",
    )
else:
    unit = mac_unit(known["real_gmacs"].tolist())
    cols = st.columns(4)
    for col, label, value in zip(
        cols[:3],
        ("Average", "Smallest", "Largest"),
        (known["real_gmacs"].mean(), known["real_gmacs"].min(), known["real_gmacs"].max()),
        strict=True,
    ):
        col.metric(f"{label} ({unit.label})", f"{unit(value):.4g}")
    share = known["share_of_all"].mean()
    cols[3].metric(
        "Of every option running",
        f"{100 * share:.1f}%" if np.isfinite(share) else "-",
        help="average real cost over the cost with every option of every point running",
    )
    st.plotly_chart(
        cost_histogram(known, color=None, title="Real cost per input"),
        width="stretch",
        key="gates_cost_histogram",
    )
    st.caption(
        "Real cost: the MACs each input ran, closed paths skipped (a cell runs when any of its "
        "paths does)."
        if facts.kind == "routing-space"
        else "Real cost: the base cost plus the options that ran for the input (MACs); expected "
        "cost weighs each option's cost by its value."
    )

# ----------------------------------------------------------------------- statistics
st.subheader("Decisions against input statistics")
names = _gates.statistics(path, mtime)
if not names:
    st.info(
        "The records hold no input statistics (`stat_*` columns: the data set gives none).",
        icon=":material/info:",
    )
    st.stop()
rho = _gates.correlations(path, mtime)
shown = rho.assign(statistic=[_gates.stat_label(s) for s in rho["statistic"]])
st.dataframe(
    shown,
    hide_index=True,
    width="stretch",
    height=300,
    key="gates_rho_table",
    column_config={
        "rho": st.column_config.NumberColumn(
            "Spearman rho",
            format="%.3f",
            help="rank correlation of the option's value with the statistic; empty when either "
            "side is constant or fewer than 5 inputs reached the point",
        ),
        "inputs": st.column_config.NumberColumn(help="inputs with both values"),
    },
)
top = rho.dropna(subset=["rho"])
first = top.iloc[0] if len(top) else rho.iloc[0]
points = list(facts.points["point"])
c1, c2, c3 = st.columns(3)
point = c1.selectbox(
    "Gate point", points, index=points.index(first["point"]), key="gates_stat_point"
)
options = list(records.graph[point].option_names)
option = c2.selectbox(
    "Option",
    options,
    index=options.index(first["option"]) if first["option"] in options else 0,
    key="gates_stat_option",
)
statistic = c3.selectbox(
    "Statistic",
    names,
    index=names.index(first["statistic"]),
    format_func=_gates.stat_label,
    key="gates_stat_statistic",
)
frame = _gates.decision_points(path, mtime, point, option, statistic)
if frame.empty:
    st.info(f"No input reached `{point}`.", icon=":material/info:")
    st.stop()
drawn = _state.drawn_points(frame)
column = "stat_" + statistic
st.plotly_chart(
    routing_scatter(
        drawn,
        x=column,
        y="value",
        color="ran",
        symbol=None,
        logx=False,
        title=f"{point} / {option} against {_gates.stat_label(statistic)}",
        xlabel=_gates.stat_label(statistic),
        ylabel=f"value of {option} at {point}",
    ),
    width="stretch",
    key="gates_stat_scatter",
)
pair = rho[(rho["point"] == point) & (rho["option"] == option) & (rho["statistic"] == statistic)]
value = float(pair["rho"].iloc[0]) if len(pair) else float("nan")
st.caption(
    f"Spearman rho {value:.3f} over {len(frame)} inputs"
    if np.isfinite(value)
    else f"No rank correlation over {len(frame)} inputs (a constant side or too few inputs)."
)
if len(drawn) < len(frame):
    st.caption(f"{len(drawn)} of {len(frame)} inputs drawn (a fixed sample); rho uses them all.")
