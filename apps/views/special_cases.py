"""Special cases: the static networks of Fig. 3 / Table 1 (FCN-32s, U-Net, DeepLabV3, HRNetV2,
Auto-DeepLab) modeled in the routing space, drawn on the same grid, with their costs and, where
records or runs of them are found, their accuracy."""

from __future__ import annotations

from pathlib import Path

import _state
import streamlit as st

ctx = _state.context()
catalog = ctx.catalog

st.title("Special cases")
st.caption(
    "The static architectures of the paper's Fig. 3 as routes of the Layer16 space "
    f"(`models/*.yaml`), counted with the paper's rules. Costs in {_state.GMACS}."
)

sizes = {"1024x2048 (the paper's Cityscapes)": _state.PAPER_SIZE}
if ctx.records:
    records = _state.load_records(ctx.records, _state.stamp(ctx.records))
    first = records.sidecar.input_size
    if first:
        sizes[f"{first[0]}x{first[1]} (the selected records)"] = first
choice = st.radio("Input size", list(sizes), horizontal=True, key="special_size")
height, width = sizes[choice]

table = _state.special_cases(height, width)
if table.empty:
    st.info("No special cases in the model zoo (`models/`).")
    st.stop()
st.dataframe(
    table.drop(columns=["notes"]),
    hide_index=True,
    width="stretch",
    column_config={
        "params (M)": st.column_config.NumberColumn(format="%.2f"),
        "GMACs": st.column_config.NumberColumn(
            format="%.4g", help=f"static network at {height}x{width}"
        ),
        "paper params (M)": st.column_config.NumberColumn(format="%.1f"),
        "paper GFLOPs": st.column_config.NumberColumn(format="%.1f", help="Table 1, at 1024x2048"),
        "paper mIoU": st.column_config.NumberColumn(format="%.1f", help="Table 1, Cityscapes val"),
    },
)

runs = catalog.runs
measured = _state.measured_accuracy(
    *ctx.all_records(), runs, tuple(_state.stamp(Path(r) / "config.yaml") for r in runs)
)
found = measured[measured["model"].isin(table["model"])]
st.subheader("Measured accuracy")
if found.empty:
    st.caption(
        "No records or training runs of these networks here. Train one with "
        "`dynviz train fcn32s --data SPEC --out runs/fcn32s` and record it with "
        "`dynviz record runs/fcn32s --out records/fcn32s`."
    )
else:
    st.dataframe(
        found,
        hide_index=True,
        width="stretch",
        column_config={
            "mIoU": st.column_config.NumberColumn(format="%.4f"),
            "real GMACs": st.column_config.NumberColumn(format="%.4g"),
        },
    )
    if not found["trained"].all():
        st.caption("Untrained records measure the pipeline, not the architecture.")

st.subheader("Routes")
columns = st.columns(2)
for i, row in enumerate(table.itertuples(index=False)):
    with columns[i % 2]:
        st.plotly_chart(
            _state.special_case_figure(row.model, height, width),
            width="stretch",
            key=f"special_{row.model}",
        )
        st.caption(f"{row[1]:.2f} M params, {row[2]:.4g} GMACs. {row.notes}")
