"""Common paths: the options of any gate graph used by more than a threshold of the inputs
(always), by none (never) and the rest (sometimes); the plan as YAML, and the cost of a static
network that keeps the common options where the graph gives costs."""

from __future__ import annotations

import _gates
import _state
import streamlit as st

from dynviz.rules import COMMON_THRESHOLD
from dynviz.units import format_macs

ctx = _state.context()
records = _state.records_or_stop(ctx)
path, mtime = ctx.records, _state.stamp(ctx.records)
facts = _gates.graph_facts(path, mtime)

st.title("Common paths")
st.caption(
    f"Records `{ctx.catalog.label(path)}` ({records.label}): the gate graph '{facts.name}' "
    f"({facts.text}) over {facts.inputs} inputs. An option used by more than the threshold "
    "share of inputs is always used, one no input used is never used, the rest sometimes."
)

threshold = st.slider(
    "Threshold (share of inputs)",
    0.0,
    0.99,
    COMMON_THRESHOLD,
    0.01,
    key="gates_common_threshold",
    help="The paper keeps what more than 95% of the images use.",
)
result = _gates.plan(path, mtime, float(threshold))

cols = st.columns(3)
cols[0].metric(
    "Always used", f"{result.counts['always']}", help=f"options used by more than {threshold:.0%}"
)
cols[1].metric("Sometimes", f"{result.counts['sometimes']}")
cols[2].metric("Never used", f"{result.counts['never']}", help="options no input used")

st.dataframe(
    result.table,
    hide_index=True,
    width="stretch",
    key="gates_common_table",
    column_config={
        "always": st.column_config.TextColumn(help=f"used by more than {threshold:.0%} of inputs"),
        "sometimes": st.column_config.TextColumn(help="used by some inputs"),
        "never": st.column_config.TextColumn(help="used by no input"),
    },
)

st.subheader("Cost of the kept options")
if result.keep_gmacs is not None:
    recorded = _gates.costs(path, mtime)["real_gmacs"].mean()
    cols = st.columns(3)
    cols[0].metric(
        "Common paths",
        format_macs(result.keep_gmacs),
        help="base cost plus the always-used options: a static network of the common paths",
    )
    cols[1].metric(
        "Without the never-used options",
        format_macs(result.lossless_gmacs),
        help="base cost plus every option some input used: the recorded inputs decide as before",
    )
    cols[2].metric("Recorded average", format_macs(recorded), help="the inputs' real cost")
    if facts.all_run_gmacs:
        st.caption(
            f"Every option running costs {format_macs(facts.all_run_gmacs)} per input; the "
            f"common paths are {100 * result.keep_gmacs / facts.all_run_gmacs:.1f}% of it."
        )
elif facts.kind == "routing-space":
    st.info(
        "A cell of the routing space runs when any of its paths does, so its options carry no "
        "cost of their own: Common networks extracts these records' common network with its "
        "cost.",
        icon=":material/info:",
    )
else:
    st.info(
        f"The gate graph '{facts.name}' gives no cost for "
        + ", ".join(f"`{m}`" for m in facts.missing_costs[:8])
        + (" and more" if len(facts.missing_costs) > 8 else "")
        + ": the cost of the kept options is not known.",
        icon=":material/info:",
    )

st.subheader("The plan")
st.download_button(
    "Download the plan (YAML)",
    result.yaml,
    file_name=f"{facts.name}-common-{round(100 * threshold)}.yaml".replace("/", "_"),
    mime="application/x-yaml",
    icon=":material/download:",
    key="gates_common_yaml",
)
with st.expander("YAML", icon=":material/code:"):
    st.code(result.yaml, language="yaml")
