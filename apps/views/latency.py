"""Latency next to MACs: every node of a routing space timed on this machine beside its MACs,
and the estimated time of static routes beside their MACs. Equal MACs per cell across scales
hide large differences in time; the paper's budget counts only MACs."""

from __future__ import annotations

import json

import _state
import pandas as pd
import streamlit as st

from dynviz.plots.interactive import latency_bars
from dynviz.units import mac_unit

ctx = _state.context()

st.title("Latency next to MACs")
device = _state.inference_device()

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
space_name = json.loads(config_json).get("name", name)
st.caption(
    f"Each node of the `{space_name}` space (cell operation, gate, up and down transforms, "
    f"decoder lateral) timed at batch 1 on this machine's {device.upper()}, where the explorer "
    "runs the networks, beside its MACs: the median of interleaved repeats and their quartiles. "
    f"The same table on the command line: `dynviz flops {space_name} --size {height} {width} "
    "--time`; a latency-weighted budget: `dynviz train ... --budget-cost latency`."
)


@st.fragment
def measurement(config_json: str, height: int, width: int, device: str, space_name: str) -> None:
    """The measure button and what it measured, a fragment: pressing the button reruns only
    this part of the page (the space and size pickers above stay as they are)."""
    wanted = (config_json, height, width, device)
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
        return

    routes = _state.routes_of_space(config_json, ctx.records, ctx.catalog.runs)
    nodes, times = _state.latency_tables(config_json, height, width, routes, device)
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
            ["scale", "component", "mmacs", "ms", "ms_q1", "ms_q3", "gmacs_per_s"]
        ],
        hide_index=True,
        width="stretch",
        column_config={
            "mmacs": st.column_config.NumberColumn("MMACs", format="%.4g"),
            "ms": st.column_config.NumberColumn("ms (median)", format="%.4g"),
            "ms_q1": st.column_config.NumberColumn(
                "ms, 1st quartile", format="%.4g", help="spread of the repeats"
            ),
            "ms_q3": st.column_config.NumberColumn("ms, 3rd quartile", format="%.4g"),
            "gmacs_per_s": st.column_config.NumberColumn(
                "GMAC/s", format="%.3g", help="the node's MACs over its median time"
            ),
        },
    )

    st.subheader("Static routes: estimated time against MACs")
    if len(times) == 1:
        st.caption(
            f"No static route of the `{space_name}` space to compare: the zoo's special cases are "
            "routes of layer16, and no training run or records of this space hold a static route "
            "or a common network."
        )
    else:
        route_unit = mac_unit(pd.DataFrame(times)["gmacs"])
        st.dataframe(
            pd.DataFrame(times).assign(gmacs=lambda t: route_unit(t["gmacs"])),
            hide_index=True,
            width="stretch",
            column_config={
                "gmacs": st.column_config.NumberColumn(route_unit.label, format="%.4g"),
                "ms": st.column_config.NumberColumn("estimated ms", format="%.4g"),
                "gmacs_ratio": st.column_config.NumberColumn(
                    "MACs / every path open",
                    format="%.3f",
                    help="the static all-open network: no gates",
                ),
                "time_ratio": st.column_config.NumberColumn(
                    "time / every path open", format="%.3f"
                ),
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


measurement(config_json, height, width, device, space_name)
