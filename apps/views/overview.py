"""Overview: the runs and records in the folder, the Table-1-style comparison of the records,
and training curves.

The first page a visitor sees, so it is drawn with what every page loads (issue 26: within 2 s
of the server answering): its small tables are Markdown tables (``_state.markdown_table``), not
data grids, and its training curves pictures drawn on the server (``_state.curve_picture``)
until the visitor asks for interactive charts; the grids' and the charts' scripts took the
first drawing about 0.6 s to load on two busy cores."""

from __future__ import annotations

from pathlib import Path

import _state
import pandas as pd
import streamlit as st

from dynviz.labels import readable
from dynviz.units import MAC_NOTE, mac_unit

ctx = _state.context()
catalog = ctx.catalog

st.title("Overview")
st.caption(f"Runs and records found in `{catalog.root}`. Costs in MACs ({MAC_NOTE}).")

if not catalog.runs and not catalog.records:
    st.info(
        "Nothing found here. Train with `dynviz train MODEL --data SPEC --out runs/NAME`, "
        "record with `dynviz record runs/NAME --out records/NAME`, or run `dynviz demo`; "
        "then point the sidebar at that folder."
    )
    st.stop()

# ---------------------------------------------------------------------- Table 1 comparison
compared = _state.compare_rows(catalog.tables, tuple(_state.stamp(t) for t in catalog.tables))
if not compared.empty:
    st.subheader("Table 1: every network compared")
    for table_path, rows in compared.groupby("table", sort=True):
        unit = mac_unit(rows["gmacs_max"])
        st.caption(
            f"`{catalog.label(str(Path(table_path).parent))}/table1.csv` (`dynviz compare`): "
            f"dynamic models, the common network and the special cases evaluated on the same "
            f"{int(rows['images'].iloc[0])} validation images, batch 1 with closed paths "
            f"skipped. Costs in {unit.label}; real avg: the executed cost per image (the "
            "paper's GFLOPs Avg); mIoU: the data-set mIoU on those images."
        )
        _state.show_table(_state.compare_markdown(rows, unit))

st.subheader("Recorded models (Table 1 columns from the records)")
if ctx.usable:
    paths, mtimes = ctx.all_records()
    try:
        table = _state.table1(paths, mtimes)
    except (ValueError, OSError) as err:  # RecordError is a ValueError
        st.error(f"Cannot read the records: {err}")
    else:
        cost_columns = [c for c in table.columns if c.startswith(("real_gmacs", "expected_gmacs"))]
        unit = mac_unit(table[cost_columns].to_numpy().ravel())
        shown = table.assign(**{c: unit(table[c]) for c in cost_columns}).rename(
            columns={
                "miou": "mIoU",
                "pixel_accuracy": "pixel acc.",
                "real_gmacs_mean": f"real {unit.label} avg",
                "real_gmacs_max": "real max",
                "real_gmacs_min": "real min",
                "expected_gmacs_mean": f"expected {unit.label} avg",
            }
        )
        columns = [
            "model",
            "images",
            "mIoU",
            "pixel acc.",
            f"real {unit.label} avg",
            "real max",
            "real min",
            f"expected {unit.label} avg",
            "params",
            "routing",
            "weights",
            "data",
        ]
        st.caption(
            "Only networks with records (`dynviz record`) appear here; the comparison above, "
            "when there is one, covers every trained network. mIoU: the data-set mIoU over "
            f"every recorded image; real {unit.label} avg: the executed cost per image, "
            "averaged (the paper's GFLOPs Avg); expected: Eq. 7-8 with the images' alphas."
        )
        _state.show_table(
            _state.markdown_table(
                shown[columns],
                {
                    "mIoU": "%.4f",
                    "pixel acc.": "%.4f",
                    f"real {unit.label} avg": "%.4g",
                    "real max": "%.4g",
                    "real min": "%.4g",
                    f"expected {unit.label} avg": "%.4g",
                    "params": "localized",
                },
            )
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
        evals = (
            metrics.dropna(subset=["val_miou"])
            if "val_miou" in metrics
            else pd.DataFrame(columns=["val_miou"])
        )
        rows.append(
            {
                "run": catalog.label(run),
                "model": route or model,
                "iterations": iters,
                "last val mIoU": float(evals["val_miou"].iloc[-1]) if len(evals) else None,
                "on images": int(evals["val_images"].iloc[-1])
                if len(evals) and "val_images" in evals
                else None,
                "checkpoint": any(Path(run).glob("checkpoint_*.pt")),
            }
        )
    if rows:
        runs = pd.DataFrame(rows).astype({"iterations": "Int64", "on images": "Int64"})
        _state.show_table(_state.markdown_table(runs, {"last val mIoU": "%.4f"}))
        st.caption(
            "A run's val mIoU is the training's quick check on its first `--eval-limit` "
            "validation images (on images: how many); the tables above evaluate every "
            "validation image, so their mIoU differs."
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
        _state.show_table(_state.markdown_table(pd.DataFrame(rows)))
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
c1, c2, c3 = st.columns([4, 6, 2], vertical_alignment="bottom")
chosen_runs = c1.multiselect("Runs", labels, default=labels, key="overview_runs")
chosen = c2.multiselect(
    "Series",
    options,
    default=[c for c in options if c in ("loss", "val_miou")][:2] or options[:1],
    format_func=lambda c: f"{readable(c)} ({c})" if readable(c) != c.replace("_", " ") else c,
    key="overview_series",
)
# The curves are pictures drawn on the server until asked for as charts: the charting code
# (vega-lite, about 1.5 MB of scripts) took the first page 0.6 s to load and compile.
interactive = c3.toggle(
    "Interactive",
    value=False,
    key="overview_interactive",
    help="Draw the curves as charts with zoom and each value on hover (the first loads the "
    "charting code: about a second).",
)
for series in chosen:
    data = metrics[metrics["run"].isin(chosen_runs)][["iter", "run", series]].dropna()
    if data.empty:
        continue
    st.markdown(f"**{series}**")
    points = data.groupby("run")["iter"].nunique()
    if points.max() <= 1:  # one value per run (e.g. one evaluation at the end): no line to draw
        at = sorted({int(i) for i in data["iter"]})
        when = f"iteration {at[0]}" if len(at) == 1 else "iterations " + ", ".join(map(str, at))
        st.caption(
            f"One value per run (logged once, at the run's end: {when}): shown as values, not "
            "as a curve."
        )
        _state.show_table(
            _state.markdown_table(data.rename(columns={"iter": "iteration"}), {series: "%.4f"})
        )
        continue
    if interactive:
        st.line_chart(
            data, x="iter", y=series, color="run", height=240, x_label="iteration", y_label=series
        )
    else:
        st.image(
            _state.curve_picture(data, series),
            width="stretch",
            alt=f"{series} against the iteration, one line per run",
        )
    if points.min() <= 1:  # a line chart draws no single point: list those
        singles = data[data["run"].isin(points[points <= 1].index)]
        st.caption(
            "Runs with a single value (no line): "
            + ", ".join(f"{r.run} {r[3]:.4g} at iteration {r.iter}" for r in singles.itertuples())
        )
