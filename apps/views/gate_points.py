"""Gates: the decision points of any gated network (or of the routing space, whose cells are the
points), how often each option ran, and the per-input values of each point's options (Fig. 5 of
the paper, for any gate graph)."""

from __future__ import annotations

import _gates
import _state
import streamlit as st

from dynviz.plots.interactive import usage_heatmap, usage_histogram, value_bars
from dynviz.rules import COMMON_THRESHOLD
from dynviz.units import format_macs, mac_unit

ctx = _state.context()
records = _state.records_or_stop(ctx)
path, mtime = ctx.records, _state.stamp(ctx.records)
facts = _gates.graph_facts(path, mtime)

st.title("Gates")
st.caption(
    f"Records `{ctx.catalog.label(path)}` ({records.label}): the gate graph '{facts.name}' "
    f"({facts.text}) over {facts.inputs} inputs. An option's usage is the share of all inputs "
    "that ran it; its value is what the gate gave it (a run probability, a router weight, a "
    "path's alpha)."
)
if facts.kind == "routing-space":
    st.caption(
        "Routing-space records read as a gate graph: each cell `L{layer}/s{stride}` is a point, "
        "its paths up, keep and down are its options."
    )

usage = _gates.usage(path, mtime)
cols = st.columns(4)
cols[0].metric("Gate points", f"{len(facts.points)}", help=facts.text)
cols[1].metric("Options", f"{len(usage)}")
cols[2].metric("Inputs", f"{facts.inputs}")
cols[3].metric(
    "Every option running",
    format_macs(facts.all_run_gmacs) if facts.has_costs else "-",
    help="base cost plus every option of every point, per input"
    if facts.has_costs
    else "unknown: the graph gives no cost for " + ", ".join(facts.missing_costs[:6]),
)

st.subheader("Usage per point and option")
st.plotly_chart(
    usage_heatmap(usage, title=f"Share of inputs that ran each option ({facts.name})"),
    width="stretch",
    key="gates_heatmap",
)
unit = mac_unit(usage["gmacs"].dropna().tolist())
table = usage.assign(usage=100 * usage["usage"], gmacs=unit(usage["gmacs"]))
st.dataframe(
    table[
        [
            "point",
            "kind",
            "option",
            "usage",
            "inputs",
            "value_mean",
            "value_q25",
            "value_median",
            "value_q75",
            *(["gmacs"] if usage["gmacs"].notna().any() else []),
        ]
    ],
    hide_index=True,
    width="stretch",
    key="gates_usage_table",
    column_config={
        "usage": st.column_config.NumberColumn(
            "usage (%)", format="%.1f", help="share of all inputs that ran the option"
        ),
        "inputs": st.column_config.NumberColumn(help="inputs that reached the point"),
        "value_mean": st.column_config.NumberColumn("value mean", format="%.3f"),
        "value_q25": st.column_config.NumberColumn("q25", format="%.3f"),
        "value_median": st.column_config.NumberColumn("median", format="%.3f"),
        "value_q75": st.column_config.NumberColumn("q75", format="%.3f"),
        "gmacs": st.column_config.NumberColumn(
            unit.label,
            format="%.4g",
            help="the option's cost per input when it runs (empty: unknown)",
        ),
    },
)
st.download_button(
    "Download the usage (CSV)",
    usage.to_csv(index=False),
    file_name=f"{facts.name}-usage.csv".replace("/", "_"),
    mime="text/csv",
    icon=":material/download:",
    key="gates_usage_csv",
)

st.subheader("Distributions")
st.plotly_chart(
    usage_histogram(usage, threshold=COMMON_THRESHOLD), width="stretch", key="gates_usage_histogram"
)
st.caption(
    f"Options right of the line are used by more than {100 * COMMON_THRESHOLD:g}% of the "
    "inputs (the common paths); options at 0 by none. See Common paths for another threshold."
)
c1, c2 = st.columns([3, 1])
point = c1.selectbox("Gate point", list(facts.points["point"]), key="gates_point")
bins = c2.slider("Bins", 4, 20, 10, key="gates_bins")
st.plotly_chart(
    value_bars(_gates.distribution(path, mtime, int(bins)), point=point),
    width="stretch",
    key="gates_values",
)

with st.expander("The gate graph", icon=":material/account_tree:"):
    st.dataframe(facts.points, hide_index=True, width="stretch", key="gates_graph")
    if facts.base_macs is not None:
        st.caption(f"Base cost (every input, whatever the decisions): {facts.base_macs:.4g} MACs.")
