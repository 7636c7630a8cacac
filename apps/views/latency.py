"""Latency next to MACs: every node of a routing space timed on this machine beside its MACs,
and the estimated time of static routes beside their MACs. Equal MACs per cell across scales
hide large differences in time; the paper's budget counts only MACs."""

from __future__ import annotations

import json

import _state
import pandas as pd
import streamlit as st

from dynviz.plots.interactive import latency_bars

ctx = _state.context()

st.title("Latency next to MACs")
st.caption(
    "Each node of the network (cell operation, gate, up and down transforms, decoder "
    "lateral) timed on this machine at batch 1, beside its MACs. The same command-line "
    "table: `dynviz flops MODEL --time`; a latency-weighted budget: "
    "`dynviz train ... --budget-cost latency`."
)

spaces = dict(_state.zoo_spaces())
default_size = (512, 1024)
if ctx.records:
    records = _state.load_records(ctx.records, _state.stamp(ctx.records))
    label = f"the selected records ({records.label})"
    spaces = {label: _state.config_json(records), **spaces}
    if records.sidecar.input_size:
        default_size = records.sidecar.input_size
names = list(spaces)
c1, c2, c3 = st.columns([3, 1, 1])
name = c1.selectbox(
    "Routing space",
    names,
    index=names.index("layer16") if not ctx.records and "layer16" in names else 0,
    key="latency_space",
)
height = int(c2.number_input("Height", 32, 2048, default_size[0], step=32, key="latency_h"))
width = int(c3.number_input("Width", 32, 4096, default_size[1], step=32, key="latency_w"))
config_json = spaces[name]
wanted = (config_json, height, width)

if st.button(
    "Measure on this machine",
    icon=":material/timer:",
    key="latency_measure",
    help="Each component is timed at each scale: a few seconds.",
):
    st.session_state["latency_measured"] = wanted
if st.session_state.get("latency_measured") != wanted:
    config = json.loads(config_json)
    st.info(
        f"Press the button to time the nodes of `{config.get('name')}` at "
        f"{height}x{width} (batch 1, a few seconds; kept for this session)."
    )
    st.stop()

routes = _state.routes_of_space(config_json, ctx.records)
nodes, times = _state.latency_tables(config_json, height, width, routes)
ops = nodes[nodes["component"] == "op"]
cols = st.columns(3)
if len(ops) > 1:
    slow, fast = ops.loc[ops["ms"].idxmax()], ops.loc[ops["ms"].idxmin()]
    cols[0].metric(
        "Cell op, slowest / fastest scale (time)",
        f"{slow['ms'] / fast['ms']:.2f}x",
        help=f"1/{slow['stride']} against 1/{fast['stride']}",
    )
    cols[1].metric("The same scales (MACs)", f"{slow['mmacs'] / fast['mmacs']:.2f}x")
cols[2].metric(
    "All open, estimated",
    f"{float(times.iloc[0]['ms']):.4g} ms",
    help="the sum of the nodes' times, laid out as the paper counts MACs",
)

st.plotly_chart(latency_bars(nodes), width="stretch", key="latency_bars")
st.dataframe(
    nodes.assign(scale=nodes["stride"].map(lambda s: f"1/{s}"))[
        ["scale", "component", "mmacs", "ms", "gmacs_per_s"]
    ],
    hide_index=True,
    width="stretch",
    column_config={
        "mmacs": st.column_config.NumberColumn("MMACs", format="%.1f"),
        "ms": st.column_config.NumberColumn("ms", format="%.3f"),
        "gmacs_per_s": st.column_config.NumberColumn("GMAC/s", format="%.1f"),
    },
)

st.subheader("Static routes: estimated time against MACs")
if len(times) == 1:
    st.caption(
        "No special case or common network of this space to compare (the special cases "
        "are routes of layer16; the common network needs records of this space)."
    )
else:
    st.dataframe(
        pd.DataFrame(times),
        hide_index=True,
        width="stretch",
        column_config={
            "gmacs": st.column_config.NumberColumn("GMACs", format="%.4g"),
            "ms": st.column_config.NumberColumn("estimated ms", format="%.4g"),
            "gmacs_ratio": st.column_config.NumberColumn("GMACs / all open", format="%.3f"),
            "time_ratio": st.column_config.NumberColumn("time / all open", format="%.3f"),
            "time_per_macs": st.column_config.NumberColumn(
                "time ratio / GMACs ratio",
                format="%.2f",
                help="above 1: the route spends its MACs where they are slow (fine scales)",
            ),
        },
    )
    st.caption(
        "Estimated from the node table (per-call overheads included), so small inputs "
        "favour routes with few nodes; `dynviz bench` measures whole forwards."
    )
