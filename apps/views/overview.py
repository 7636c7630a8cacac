"""Overview: the runs and records in the folder, the Table-1-style comparison of the records,
and training curves."""

from __future__ import annotations

from pathlib import Path

import _state
import pandas as pd
import streamlit as st

ctx = _state.context()
catalog = ctx.catalog

st.title("Overview")
st.caption(f"Runs and records found in `{catalog.root}`. Costs in {_state.GMACS}.")

if not catalog.runs and not catalog.records:
    st.info(
        "Nothing found here. Train with `dynviz train MODEL --data SPEC --out runs/NAME`, "
        "record with `dynviz record runs/NAME --out records/NAME`, or run `dynviz demo`; "
        "then point the sidebar at that folder."
    )
    st.stop()

# ---------------------------------------------------------------------- Table 1 comparison
st.subheader("Models compared (Table 1 style)")
if ctx.usable:
    paths, mtimes = ctx.all_records()
    try:
        table = _state.table1(paths, mtimes)
    except (ValueError, OSError) as err:  # RecordError is a ValueError
        st.error(f"Cannot read the records: {err}")
    else:
        shown = table.rename(
            columns={
                "model": "model",
                "images": "images",
                "miou": "mIoU",
                "pixel_accuracy": "pixel acc.",
                "real_gmacs_mean": "real GMACs avg",
                "real_gmacs_max": "real max",
                "real_gmacs_min": "real min",
                "expected_gmacs_mean": "expected GMACs avg",
                "params": "params",
            }
        )
        columns = [
            "model",
            "images",
            "mIoU",
            "pixel acc.",
            "real GMACs avg",
            "real max",
            "real min",
            "expected GMACs avg",
            "params",
            "routing",
            "weights",
            "data",
        ]
        st.dataframe(
            shown[columns],
            hide_index=True,
            width="stretch",
            column_config={
                "mIoU": st.column_config.NumberColumn(
                    format="%.4f", help="data-set mIoU (summed confusion)"
                ),
                "pixel acc.": st.column_config.NumberColumn(format="%.4f"),
                "real GMACs avg": st.column_config.NumberColumn(
                    format="%.4g", help="executed cost per image, averaged (paper: GFLOPs Avg)"
                ),
                "real max": st.column_config.NumberColumn(format="%.4g"),
                "real min": st.column_config.NumberColumn(format="%.4g"),
                "expected GMACs avg": st.column_config.NumberColumn(
                    format="%.4g", help="Eq. 7-8 with the images' alphas"
                ),
                "params": st.column_config.NumberColumn(format="localized"),
            },
        )
        st.download_button(
            "Download the table (CSV)",
            table.to_csv(index=False),
            file_name="table1.csv",
            mime="text/csv",
            icon=":material/download:",
        )
else:
    st.caption("No records: `dynviz record` writes the per-image tables this comparison needs.")

# ------------------------------------------------------------------------- runs and records
left, right = st.columns(2)
with left:
    st.subheader("Training runs")
    rows = []
    for run in catalog.runs:
        config = _state.load_run_config(run, _state.stamp(Path(run) / "config.yaml"))
        metrics = _state.load_metrics(run, _state.stamp(Path(run) / "metrics.jsonl"))
        model = (config.get("model") or {}).get("name", "?")
        route = (config.get("route") or {}).get("name")
        iters = int(metrics["iter"].max()) if "iter" in metrics else None
        miou = (
            float(metrics["val_miou"].max())
            if "val_miou" in metrics and metrics["val_miou"].notna().any()
            else None
        )
        rows.append(
            {
                "run": catalog.label(run),
                "model": route or model,
                "iterations": iters,
                "best val mIoU": miou,
                "checkpoint": any(Path(run).glob("checkpoint_*.pt")),
            }
        )
    if rows:
        st.dataframe(
            pd.DataFrame(rows),
            hide_index=True,
            width="stretch",
            column_config={"best val mIoU": st.column_config.NumberColumn(format="%.4f")},
        )
    else:
        st.caption("No training runs here.")
with right:
    st.subheader("Records")
    rows = []
    for path in ctx.usable:
        sidecar = _state.load_records(path, _state.stamp(path)).sidecar
        rows.append(
            {
                "records": catalog.label(path),
                "name": sidecar.name,
                "images": sidecar.num_images,
                "data": sidecar.data,
                "split": sidecar.split,
                "sizes": ", ".join(f"{h}x{w}" for h, w in sidecar.input_sizes),
            }
        )
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    else:
        st.caption("No records here.")

# ---------------------------------------------------------------------------- curves
st.subheader("Training curves")
runs_with_metrics = [r for r in catalog.runs if (Path(r) / "metrics.jsonl").is_file()]
if not runs_with_metrics:
    st.caption("No `metrics.jsonl` found.")
    st.stop()
labels = [catalog.label(r) for r in runs_with_metrics]
frames = []
for run, label in zip(runs_with_metrics, labels, strict=True):
    frame = _state.load_metrics(run, _state.stamp(Path(run) / "metrics.jsonl"))
    if not frame.empty and "iter" in frame:
        frames.append(frame.assign(run=label))
metrics = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
numeric = [
    c
    for c in metrics.columns
    if c not in ("iter", "run", "kind") and pd.api.types.is_numeric_dtype(metrics[c])
]
preferred = ["loss", "ce_loss", "budget_loss", "expected_cost_ratio", "val_miou", "lr"]
options = [c for c in preferred if c in numeric] + [c for c in numeric if c not in preferred]
if not options:
    st.caption("The metrics files hold no numeric series yet.")
    st.stop()
c1, c2 = st.columns([2, 3])
chosen_runs = c1.multiselect("Runs", labels, default=labels[:4], key="overview_runs")
chosen = c2.multiselect(
    "Series",
    options,
    default=[c for c in options if c in ("loss", "val_miou")][:2] or options[:1],
    key="overview_series",
)
for series in chosen:
    data = metrics[metrics["run"].isin(chosen_runs)][["iter", "run", series]].dropna()
    if data.empty:
        continue
    st.markdown(f"**{series}**")
    st.line_chart(
        data, x="iter", y=series, color="run", height=240, x_label="iteration", y_label=series
    )
