"""Special cases: the static networks of Fig. 3 / Table 1 (FCN-32s, U-Net, DeepLabV3, HRNetV2,
Auto-DeepLab) modeled in the routing space, drawn on the same grid, with their costs and, where
records or runs of them are found, their accuracy."""

from __future__ import annotations

from pathlib import Path

import _state
import streamlit as st

from dynviz.plots.mpl import cost_accuracy
from dynviz.units import MAC_NOTE, format_macs, mac_unit

ctx = _state.context()
catalog = ctx.catalog

st.title("Special cases")
st.caption(
    "The static architectures of the paper's Fig. 3 as routes of the Layer16 space "
    f"(`models/*.yaml`), counted with the paper's rules ({MAC_NOTE})."
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
zoo_unit = mac_unit(table["GMACs"])
st.dataframe(
    table.drop(columns=["notes"]).assign(GMACs=zoo_unit(table["GMACs"])),
    hide_index=True,
    width="stretch",
    column_config={
        "params (M)": st.column_config.NumberColumn(format="%.2f"),
        "GMACs": st.column_config.NumberColumn(
            zoo_unit.label, format="%.4g", help=f"static network at {height}x{width}"
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
found = measured[measured["model"].isin(table["model"]) | (measured["kind"] == "special case")]
compared = _state.compare_rows(catalog.tables, tuple(_state.stamp(t) for t in catalog.tables))
st.subheader("Special cases trained here")
if not compared.empty and (compared["kind"] == "special case").any():
    unit = mac_unit(compared["gmacs_max"])
    st.caption(
        "From the Table-1 comparison in this folder (`dynviz compare` / `dynviz demo`): every "
        "network evaluated on the same validation images, beside the dynamic models of "
        f"similar cost. Costs in {unit.label}."
    )
    _state.compare_dataframe(compared, unit, key="special_compare")
    for table_path in sorted(set(compared["table"])):
        method, against, points = _state.dynamic_against_each(table_path, _state.stamp(table_path))
        if against.empty:
            continue
        st.markdown(f"**{method} against every other network** (`{table_path}`)")
        cost_unit = mac_unit(against["gmacs"])
        st.dataframe(
            against.assign(
                gmacs=cost_unit(against["gmacs"]),
                interval=[
                    f"{lo:+.1f} to {hi:+.1f}"
                    for lo, hi in zip(against["low"], against["high"], strict=True)
                ],
            )[["network", "kind", "gmacs", "mIoU (%)", "difference", "interval", "verdict"]].rename(
                columns={
                    "gmacs": f"cost ({cost_unit.label})",
                    "difference": f"{method} minus it (points)",
                    "interval": "95% interval",
                }
            ),
            hide_index=True,
            width="stretch",
            key=f"against_{table_path}",
            column_config={
                f"cost ({cost_unit.label})": st.column_config.NumberColumn(format="%.3f"),
                "mIoU (%)": st.column_config.NumberColumn(format="%.1f"),
                f"{method} minus it (points)": st.column_config.NumberColumn(format="%+.1f"),
            },
        )
        st.pyplot(cost_accuracy(points, reference=method).figure, width="content")
        st.caption(
            "Paired percentile bootstrap over the comparison's images (the same draws for both "
            "networks); a verdict of better or worse only where the 95% interval excludes "
            "zero. In the figure each bar is the network's mIoU as the interval puts it "
            f"relative to {method} (the star)."
        )
if found.empty and (compared.empty or not (compared["kind"] == "special case").any()):
    st.caption(
        "No records or training runs of these networks here. Train one with "
        "`dynviz train fcn32s --data SPEC --out runs/fcn32s` and record it with "
        "`dynviz record runs/fcn32s --out records/fcn32s`, or run `dynviz demo`, which trains "
        "U-Net-like and FCN-like routes of its space."
    )
elif not found.empty:
    st.caption(
        "Training runs and records of special cases: a run's mIoU is its last evaluation "
        "(on its first `--eval-limit` validation images); records cover every recorded image."
    )
    unit = mac_unit(found["real GMACs"].dropna())
    st.dataframe(
        found.assign(**{"real GMACs": unit(found["real GMACs"])}).rename(
            columns={"real GMACs": f"real cost ({unit.label})"}
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "mIoU": st.column_config.NumberColumn(format="%.4f"),
            f"real cost ({unit.label})": st.column_config.NumberColumn(format="%.4g"),
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
        st.caption(f"{row[1]:.2f} M params, {format_macs(row[2])}. {row.notes}")
