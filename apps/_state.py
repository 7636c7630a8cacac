"""Shared state and cached loaders of the explorer.

The cache split of the Streamlit demos: ``st.cache_resource`` for models and data sets (one shared
object per process, used read-only), ``st.cache_data`` for frames, results and figures (a pickled
copy per call). Cached functions read only their arguments; files are keyed by path *and*
modification time, so rewritten records or a growing ``metrics.jsonl`` are read again. Both
caches are the server's, shared by every session: eight people on one explorer read the records
once (``scripts/explorer_load.py`` measures it). Two exceptions to the split, for what every
page run would otherwise pay again: the records themselves (:func:`load_records`, 10^7 gate rows
at 100,000 images) and the plotly figures the pages show unchanged (:func:`special_case_figure`,
:func:`common_network`, :func:`distribution_figures`) are ``cache_resource``: unpickling a figure
re-validates every trace.

:func:`sidebar` draws the shared sidebar (``explorer.py`` calls it on every page) and stores the
:class:`Context` that pages read with :func:`context`. Everything computed here is a call into
``dynviz``; the app does no tensor math.

Start-up (issue 26): ``dynviz app`` calls :func:`preload` in the server process before it
listens, so the first page of the first session finds everything it needs in these caches (the
modules imported, every records folder read, the sidebar's and the Overview's tables made); the
imports the first page does without (altair, matplotlib for the Overview's training curves)
follow on a thread while the visitor's browser loads the page's scripts. The
gate-row summaries of the records shown first (:func:`summarised`) are made on a background
thread a few seconds later (:func:`summarise_in_background`), not on the first page's time; a
page that needs them sooner makes them itself (Streamlit computes a cached value once, whoever
asks first). Without the preload (``streamlit run``, ``AppTest``, the bench) and for records
selected later, the sidebar makes them when the records are first selected, as before.

The module runs to about 900 lines: every page's cached call is here, so that the cache keys
and the one-object-per-process rule are read in one place; the pages only lay out.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch

from dynviz.analysis import (
    CommonNetError,
    activation_probability,
    alpha_histogram,
    compare,
    extract_common,
    summarize_common,
)
from dynviz.analysis import routing_vs_scale as _routing_vs_scale
from dynviz.analysis import scale_summary as _scale_summary
from dynviz.analysis.adaptivity import records_adaptivity
from dynviz.analysis.report import records_path_costs
from dynviz.analysis.report import table1 as _table1
from dynviz.analysis.runs import (
    Catalog,
    find_folders,
    modified_time,
    read_compare_table,
    read_metrics,
    read_run_config,
)
from dynviz.analysis.runs import measured_accuracy as _measured_accuracy
from dynviz.analysis.runs import records_model as _records_model
from dynviz.analysis.runs import records_problem as _records_problem
from dynviz.data import DataError, build_dataset
from dynviz.data.palette import legend_entries, palette_for_spec
from dynviz.explorer import APP_DIR_ENV
from dynviz.inference.latency import latency_rows, measure_node_latency_isolated, route_times
from dynviz.model import RoutingSpaceConfig
from dynviz.model.cost import cost_table
from dynviz.model.route import Route
from dynviz.model.zoo import load_spec, routing_spaces, special_case_routes, special_case_table
from dynviz.plots.interactive import probability_histogram, probability_violin, space_figure
from dynviz.record import label_frames, read_records, record_labels
from dynviz.record.uploads import ImageView, read_upload, recorded_view, route_image
from dynviz.rules import COMMON_THRESHOLD

PAPER_SIZE = (1024, 2048)  # Cityscapes, where the paper's numbers are counted
_MAX_DEPTH = 6
_MAX_DIRS = 5000
BACKGROUND = "dynviz-"
"""Name prefix of the explorer's own threads (:func:`preload` when ``dynviz app`` runs it,
:func:`summarise_in_background`): they call the cached functions outside any session."""

logger = logging.getLogger("dynviz.explorer")


class _SessionlessWarnings(logging.Filter):
    """Drop Streamlit's warnings that a cached function ran outside a session ("missing
    ScriptRunContext", "No runtime found") when the explorer's own threads (:data:`BACKGROUND`)
    do it on purpose; everyone else's still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.threadName or "").startswith(BACKGROUND)


for _name in (
    "streamlit.runtime.scriptrunner_utils.script_run_context",
    "streamlit.runtime.caching.cache_data_api",
):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, _SessionlessWarnings) for f in _logger.filters):
        _logger.addFilter(_SessionlessWarnings())


# ------------------------------------------------------------------------------ discovery
@st.cache_data(ttl=60, show_spinner="Searching the folder...")
def discover(root: str, max_depth: int = _MAX_DEPTH, max_dirs: int = _MAX_DIRS) -> Catalog:
    """``dynviz.analysis.runs.find_folders``: the runs and records folders under ``root``."""
    return find_folders(root, max_depth=max_depth, max_dirs=max_dirs)


def stamp(path: str | Path) -> float:
    """``dynviz.analysis.runs.modified_time`` (part of cache keys)."""
    return modified_time(path)


# --------------------------------------------------------------------------------- frames
@st.cache_resource(show_spinner="Reading records...", max_entries=8)
def load_records(path: str, mtime: float) -> Any:
    """``dynviz.record.read_records(path)``, shared and read-only (the gate rows of 100,000
    images are 10^7 rows: no copy per call); ``mtime`` only keys the cache."""
    return read_records(path)


@st.cache_data(show_spinner=False, max_entries=256)
def records_problem(path: str, mtime: float) -> str:
    """Why a records folder cannot be shown ("" when it can)."""
    try:
        records = load_records(path, mtime)
    except (ValueError, OSError, KeyError) as err:  # RecordError is a ValueError
        return str(err) or type(err).__name__
    return _records_problem(path, records)


def _labels(paths: tuple[str, ...], mtimes: tuple[float, ...]) -> list[str]:
    return record_labels([load_records(p, m) for p, m in zip(paths, mtimes, strict=True)])


@st.cache_data(show_spinner=False, max_entries=16)
def combined_images(paths: tuple[str, ...], mtimes: tuple[float, ...]) -> pd.DataFrame:
    """The image rows of several records folders with a ``model`` column."""
    frames = [load_records(p, m).images for p, m in zip(paths, mtimes, strict=True)]
    return label_frames(frames, _labels(paths, mtimes))


@dataclass(frozen=True)
class PathStatistics:
    """What the pages need of a records folder's gate rows, computed once: per-path activation
    probabilities (``activation_probability``), per-path histograms (20 bins) of the gates' own
    alphas, and the active thresholds of the records (a path was open at alpha above it)."""

    per_path: pd.DataFrame
    histogram: pd.DataFrame
    thresholds: tuple[float, ...] = (0.0,)

    def threshold_text(self) -> str:
        """``alpha > t`` for the records' threshold(s), as captions state the active rule."""
        values = sorted(set(self.thresholds))
        return " or ".join(f"alpha > {t:g}" for t in values)


ALPHA_BINS = 20


@st.cache_data(show_spinner="Summarising the routes...", max_entries=32)
def path_statistics(path: str, mtime: float) -> PathStatistics:
    """Per-path statistics of one records folder (small frames: the pages filter these instead
    of the gate rows)."""
    records = load_records(path, mtime)
    gates = records.gates
    return PathStatistics(
        activation_probability(gates),
        alpha_histogram(
            gates, bins=ALPHA_BINS, by=("layer", "scale", "direction"), value="gate_alpha"
        ),
        (float(records.config.active_threshold),),
    )


@st.cache_data(show_spinner=False, max_entries=16)
def combined_path_statistics(paths: tuple[str, ...], mtimes: tuple[float, ...]) -> PathStatistics:
    """:func:`path_statistics` of several records folders with a ``model`` column."""
    stats = [path_statistics(p, m) for p, m in zip(paths, mtimes, strict=True)]
    labels = _labels(paths, mtimes)
    return PathStatistics(
        label_frames([s.per_path for s in stats], labels),
        label_frames([s.histogram for s in stats], labels),
        tuple(t for s in stats for t in s.thresholds),
    )


def matching_paths(
    frame: pd.DataFrame,
    layer_range: tuple[int, int],
    scales: tuple[int, ...],
    directions: tuple[str, ...],
) -> pd.DataFrame:
    """The rows of a per-path frame in ``layer_range`` (inclusive), at one of ``scales``
    (strides) and in one of ``directions``."""
    return frame[
        frame["layer"].between(*layer_range)
        & frame["scale"].isin(scales)
        & frame["direction"].astype(str).isin(directions)
    ]


@st.cache_resource(show_spinner=False, max_entries=64)
def distribution_figures(
    paths: tuple[str, ...],
    mtimes: tuple[float, ...],
    layer_range: tuple[int, int],
    scales: tuple[int, ...],
    directions: tuple[str, ...],
    bins: int,
    threshold: float,
) -> tuple[Any, Any, Any]:
    """The Distributions page's figures for one choice of its filters: Fig. 5's histogram of
    activation probabilities, their violins by layer and by scale. Built once per server for a
    choice and shared by every session (read-only)."""
    stats = combined_path_statistics(paths, mtimes)
    per_path = matching_paths(stats.per_path, layer_range, scales, directions)
    return (
        probability_histogram(per_path, bins=bins, threshold=threshold),
        probability_violin(per_path, x="layer"),
        probability_violin(
            per_path, x="scale", title="Path activation probability per scale (stride)"
        ),
    )


@st.cache_data(show_spinner=False, max_entries=64)
def load_metrics(run_dir: str, mtime: float) -> pd.DataFrame:
    """``dynviz.analysis.runs.read_metrics``: the run's ``metrics.jsonl`` as a frame."""
    return read_metrics(run_dir)


@st.cache_data(show_spinner=False, max_entries=64)
def load_run_config(run_dir: str, mtime: float) -> dict[str, Any]:
    """``dynviz.analysis.runs.read_run_config``: the run's ``config.yaml``."""
    return read_run_config(run_dir)


@st.cache_data(show_spinner=False, max_entries=16)
def table1(paths: tuple[str, ...], mtimes: tuple[float, ...]) -> pd.DataFrame:
    """``dynviz.analysis.report.table1``: the Table-1-style comparison of records."""
    return _table1([load_records(p, m) for p, m in zip(paths, mtimes, strict=True)])


@st.cache_data(show_spinner=False, max_entries=16)
def compare_rows(tables: tuple[str, ...], mtimes: tuple[float, ...]) -> pd.DataFrame:
    """The Table-1 comparisons (``table1.csv``) found in the folder, one frame with a ``table``
    column (``dynviz.analysis.runs.read_compare_table``)."""
    frames = [read_compare_table(t).assign(table=t) for t in tables]
    frames = [f for f in frames if "method" in f.columns]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@st.cache_data(show_spinner="Bootstrapping the differences...", max_entries=8)
def dynamic_against_each(table: str, mtime: float) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """``dynviz.analysis.compare.dynamic_against_each`` of the comparison folder of ``table`` (a
    ``table1.csv``): its dynamic network against every other, with the paired bootstrap interval
    of the mIoU difference, and what the cost-accuracy figure draws."""
    return compare.dynamic_against_each(Path(table).parent)


_MARKDOWN_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|$~:"})


def markdown_table(frame: pd.DataFrame, formats: dict[str, str] | None = None) -> str:
    """``frame`` as a Markdown table for ``st.markdown``: what the first page shows of a small
    table. A data grid (``st.dataframe``) loads its scripts (the grid and Arrow, about 1.2 MB)
    on first use and draws on a canvas, 0.3 s of the Overview's first drawing on two busy
    cores; a Markdown table is drawn with the code every page has loaded.

    ``formats``: ``{column: "%.4g"}`` (printf style) or ``"localized"`` (thousands separated);
    other numbers as they print. Missing values are empty, booleans yes or no, text is
    escaped (no Markdown, math or icon codes in a cell); numeric columns align right."""
    formats = formats or {}

    def cell(value: Any, fmt: str | None) -> str:
        if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            return ""
        if isinstance(value, bool | np.bool_):
            return "yes" if value else "no"
        if fmt and isinstance(value, int | float | np.integer | np.floating):
            return f"{value:,}" if fmt == "localized" else fmt % value
        return " ".join(str(value).split()).translate(_MARKDOWN_SPECIAL)

    numeric = [
        pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
        for c in frame.columns
    ]
    lines = [
        "| " + " | ".join(str(c).translate(_MARKDOWN_SPECIAL) for c in frame.columns) + " |",
        "| " + " | ".join("---:" if n else ":---" for n in numeric) + " |",
    ]
    for row in frame.itertuples(index=False):
        cells = [cell(v, formats.get(c)) for c, v in zip(frame.columns, row, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def show_table(table: str) -> None:
    """Draw a :func:`markdown_table`, scrolled sideways where wider than its column (a long
    cell must not run over the next column's table)."""
    st.markdown(f'<div style="overflow-x: auto">\n\n{table}\n\n</div>', unsafe_allow_html=True)


def compare_table(frame: pd.DataFrame, unit: Any) -> pd.DataFrame:
    """Table-1 comparison rows with readable columns and costs in ``unit``."""
    return pd.DataFrame(
        {
            "network": frame["method"],
            "kind": frame["kind"],
            "mIoU (%)": 100 * frame["miou"],
            f"real {unit.label} avg": unit(frame["gmacs_avg"]),
            "max": unit(frame["gmacs_max"]),
            "min": unit(frame["gmacs_min"]),
            "params (M)": frame["params"] / 1e6,
            "images": frame["images"],
            "modeled from": frame["modeled_from"],
        }
    )


def compare_markdown(frame: pd.DataFrame, unit: Any) -> str:
    """Table-1 comparison rows (:func:`compare_table`) as a Markdown table
    (:func:`markdown_table`)."""
    costs = {c: "%.4g" for c in (f"real {unit.label} avg", "max", "min")}
    return markdown_table(
        compare_table(frame, unit), {"mIoU (%)": "%.2f", "params (M)": "%.3f", **costs}
    )


def compare_dataframe(frame: pd.DataFrame, unit: Any, *, key: str) -> None:
    """Show Table-1 comparison rows (:func:`compare_table`) in a data grid."""
    shown = compare_table(frame, unit)
    st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        key=key,
        column_config={
            "mIoU (%)": st.column_config.NumberColumn(
                format="%.2f", help="data-set mIoU on the comparison's validation images"
            ),
            f"real {unit.label} avg": st.column_config.NumberColumn(
                format="%.4g", help="executed cost per image (paper: GFLOPs Avg)"
            ),
            "max": st.column_config.NumberColumn(format="%.4g"),
            "min": st.column_config.NumberColumn(format="%.4g"),
            "params (M)": st.column_config.NumberColumn(format="%.3f"),
        },
    )


@st.cache_data(show_spinner="Measuring how routes adapt...", max_entries=16)
def adaptivity(path: str, mtime: float) -> Any:
    """``dynviz.analysis.adaptivity.records_adaptivity``: how a dynamic model's routes adapt
    (None for a static or forced route: every image takes the same one)."""
    return records_adaptivity(load_records(path, mtime))


# ------------------------------------------------------------------------ models and data
@st.cache_resource(show_spinner="Loading the model...", max_entries=4)
def records_model(path: str, mtime: float) -> tuple[Any, Any]:
    """``dynviz.analysis.runs.records_model``: the network of a records folder and how it was
    obtained (``(None, info)`` when its checkpoint is missing or unreadable)."""
    return _records_model(load_records(path, mtime))


@st.cache_resource(show_spinner="Preparing the data set...", max_entries=4)
def load_dataset(spec: str, split: str) -> Any:
    """``dynviz.data.build_dataset(spec, split=split)``."""
    return build_dataset(spec, split=split)


@st.cache_data(show_spinner=False, max_entries=8)
def dataset_index(spec: str, split: str) -> dict[str, int]:
    """``{image_id: index}`` of a data set."""
    dataset = load_dataset(spec, split)
    return {dataset.image_id(i): i for i in range(len(dataset))}


@st.cache_data(show_spinner=False, max_entries=32)
def space_costs(config_json: str, height: int, width: int, route_json: str = "") -> Any:
    """``dynviz.model.cost.cost_table`` of a config (and static route) at an input size."""
    config = RoutingSpaceConfig.from_dict(json.loads(config_json))
    route = Route.from_dict(json.loads(route_json)) if route_json else None
    return cost_table(config, (height, width), route=route)


# ------------------------------------------------------------------------- image routes
@st.cache_data(show_spinner="Running the model...", max_entries=64)
def dataset_image(path: str, mtime: float, image_id: str) -> ImageView:
    """A recorded image: its recorded route and costs, the image and label from the records'
    data set, and the model's prediction (``dynviz.record.uploads.recorded_view``)."""
    records = load_records(path, mtime)
    spec, split = records.sidecar.data, records.sidecar.split or "val"
    if not spec:
        view = recorded_view(records, image_id)
        view.note = "The records do not name their data set: no image to show."
        return view
    try:
        index = dataset_index(str(spec), str(split)).get(image_id)
        if index is None:
            view = recorded_view(records, image_id)
            view.note = f"`{image_id}` is not in `{spec}` [{split}] any more."
            return view
        model, _ = records_model(path, mtime)
        return recorded_view(
            records,
            image_id,
            dataset=load_dataset(str(spec), str(split)),
            index=index,
            model=model,
            route=forced_route(path, mtime),
        )
    except (DataError, OSError) as err:
        view = recorded_view(records, image_id)
        view.note = f"Cannot read the image from `{spec}`: {err}"
        return view


@st.cache_data(show_spinner=False, max_entries=32)
def forced_route(path: str, mtime: float) -> Any:
    """The route forced onto the model when the records were made, or None."""
    return load_records(path, mtime).sidecar.forced_route


@st.cache_data(show_spinner="Running the model on the upload...", max_entries=16)
def upload_image(path: str, mtime: float, name: str, data: bytes, max_side: int) -> ImageView:
    """An uploaded image run through the records' model (raises ``UploadError``)."""
    upload = read_upload(data, name=name)
    model, info = records_model(path, mtime)
    if model is None:
        return ImageView(
            name,
            upload.image,
            None,
            None,
            pd.DataFrame(),
            float("nan"),
            float("nan"),
            note=info.note,
        )
    result = route_image(
        model, upload.image, image_id=name, route=forced_route(path, mtime), max_side=max_side
    )
    data = load_records(path, mtime).sidecar.data or "its training data"
    return ImageView(
        name,
        result.image,
        None,
        result.prediction,
        result.gates,
        result.real_gmacs,
        result.expected_gmacs,
        note=f"An uploaded image: the model knows only the classes of `{data}`, and on an "
        "image unlike those (a photo, for a model of synthetic scenes) its prediction and "
        "route say little about either.",
    )


def records_palette(path: str, mtime: float) -> Any:
    """The class colours of the records' data set (``dynviz.data.palette.palette_for_spec``), as
    ``dynviz predict`` colours its overlays."""
    return palette_for_spec(load_records(path, mtime).sidecar.data)


def class_legend(palette: Any, names: list[str], classes: Any) -> str:
    """HTML swatches of the classes in ``classes`` (a class map), named
    (``dynviz.data.palette.legend_entries``)."""
    items = [
        f'<span style="display:inline-block;margin-right:0.8em;white-space:nowrap">'
        f'<span style="display:inline-block;width:0.9em;height:0.9em;background:'
        f'rgb({r},{g},{b});border:1px solid #666;vertical-align:middle"></span> {name}</span>'
        for name, (r, g, b) in legend_entries(palette, names, classes)
    ]
    return '<div style="font-size:0.8em;line-height:1.6">' + "".join(items) + "</div>"


@st.cache_data(show_spinner=False, max_entries=64)
def route_figure(
    config_json: str,
    gates: pd.DataFrame,
    height: int,
    width: int,
    title: str,
    *,
    highlight: tuple[tuple[int, int, str], ...] = (),
    narrow: bool = False,
) -> Any:
    """One image's route on the layer x scale grid: every path of the space, width and opacity
    by the image's alpha, closed paths faint and dotted; hover gives alpha and MACs.
    ``highlight``: ``(layer, stride, direction)`` of paths marked as differing from another
    image's route; ``narrow``: the legend under the grid (two figures side by side)."""
    from dynviz.model.graph import space_graph  # deferred: networkx takes about 0.5 s to import

    config = RoutingSpaceConfig.from_dict(json.loads(config_json))
    costs = space_costs(config_json, height, width)
    alphas = gates.assign(mean_alpha=gates["alpha"].astype("float64"))
    graph = space_graph(config, costs=costs, mean_alpha=alphas)
    fig = space_figure(
        graph,
        edge_attr="mean_alpha",
        threshold=0.0,
        title=title,
        highlight=highlight,
        highlight_name="open in only one of the two images",
    )
    fig.update_layout(height=320, margin={"l": 50, "r": 10, "t": 40, "b": 40})
    if narrow:  # the grid keeps the column's width; the legend goes under it
        fig.update_layout(
            height=470,
            legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0.0},
            margin={"l": 50, "r": 10, "t": 40, "b": 10},
        )
    return fig


# -------------------------------------------------------------------------- common nets
@dataclass(frozen=True)
class Extracted:
    """The common network at one threshold, or why there is none."""

    error: str = ""
    yaml: str = ""
    name: str = ""
    notes: str = ""
    paths: int = 0
    cells: int = 0
    params: int = 0
    gmacs: float = 0.0
    gmacs_paper: float = 0.0
    dynamic_params: int = 0
    dynamic_gmacs: float = 0.0
    figure: object = None


@st.cache_resource(show_spinner="Extracting the common network...", max_entries=64)
def common_network(path: str, mtime: float, threshold: float, height: int, width: int) -> Extracted:
    """``dynviz.analysis.summarize_common`` at ``threshold`` and the records' input size, and
    its figure (shared by every session: read-only)."""
    from dynviz.model.graph import space_graph  # deferred: networkx takes about 0.5 s to import

    config = load_records(path, mtime).config
    per_path = path_statistics(path, mtime).per_path
    try:
        common = summarize_common(per_path, config, threshold=threshold, size=(height, width))
    except CommonNetError as err:
        return Extracted(error=str(err))
    route = common.route
    graph = space_graph(
        config, costs=common.costs, probability=per_path, mean_alpha=per_path, route=route
    )
    title = f"{route.name}: {common.paths} paths in {common.cells} cells"
    figure = space_figure(graph, edge_attr="probability", threshold=threshold, title=title)
    figure.update_layout(height=360)
    return Extracted(
        yaml=route.to_yaml(),
        name=route.name,
        notes=str(route.meta.get("notes", "")),
        paths=common.paths,
        cells=common.cells,
        params=common.params,
        gmacs=common.gmacs,
        gmacs_paper=common.gmacs_paper,
        dynamic_params=common.dynamic_params,
        dynamic_gmacs=common.dynamic_gmacs,
        figure=figure,
    )


# ------------------------------------------------------------------------- special cases
@st.cache_data(show_spinner=False)
def special_cases(height: int, width: int) -> pd.DataFrame:
    """``dynviz.model.zoo.special_case_table``: the zoo's special cases at an input size,
    with the paper's Table 1 numbers."""
    return special_case_table(size=(height, width))


@st.cache_resource(show_spinner=False, max_entries=64)
def special_case_figure(name: str, height: int, width: int) -> Any:
    """A special case's route on the layer x scale grid (shared by every session: read-only)."""
    from dynviz.model.graph import space_graph  # deferred: networkx takes about 0.5 s to import

    route = load_spec(name)
    costs = cost_table(route.space, (height, width), route=route)
    graph = space_graph(route.space, costs=costs, route=route)
    fig = space_figure(
        graph,
        edge_attr=None,
        threshold=None,
        title=f"{name}: {len(route)} paths in {len(route.cells)} cells",
    )
    fig.update_layout(height=300, margin={"l": 50, "r": 10, "t": 40, "b": 40})
    return fig


@st.cache_data(show_spinner=False)
def measured_accuracy(
    records: tuple[str, ...],
    records_mtimes: tuple[float, ...],
    runs: tuple[str, ...],
    runs_mtimes: tuple[float, ...],
) -> pd.DataFrame:
    """``dynviz.analysis.runs.measured_accuracy``: mIoU of the special cases where records or
    training runs of them are found."""
    loaded = [load_records(p, m) for p, m in zip(records, records_mtimes, strict=True)]
    return _measured_accuracy(loaded, runs)


# ------------------------------------------------------------------------------- latency
@st.cache_data(show_spinner=False)
def zoo_spaces() -> dict[str, str]:
    """``{name: config JSON}`` of the zoo's routing spaces
    (``dynviz.model.zoo.routing_spaces``)."""
    return {
        name: json.dumps(config.to_dict(), sort_keys=True)
        for name, config in routing_spaces().items()
    }


def inference_device() -> str:
    """Where the explorer runs networks: ``cuda`` when torch sees a GPU, else ``cpu`` (the
    device a latency measurement must use to describe them)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@st.cache_data(show_spinner="Timing every node on this machine...", max_entries=16)
def node_latency(config_json: str, height: int, width: int, device: str = "cpu") -> Any:
    """``dynviz.inference.latency.measure_node_latency`` of a config at an input size, with the
    settings of ``dynviz flops --time`` (so both agree on one machine), on ``device``, in a fresh
    process's main thread."""
    config = RoutingSpaceConfig.from_dict(json.loads(config_json))
    # not in this (Streamlit's script) thread, where CPU kernels run 2-2.5x slower
    return measure_node_latency_isolated(
        config, (height, width), tune_malloc=True, max_wait=0.05, device=device
    )


@st.cache_data(show_spinner=False, max_entries=16)
def latency_tables(
    config_json: str,
    height: int,
    width: int,
    routes: tuple[tuple[str, str], ...],
    device: str = "cpu",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The measured node table (``latency_rows``) and the routes' estimated times
    (``route_times``; ``routes`` are ``(name, route JSON)`` pairs of this config's space)."""
    latency = node_latency(config_json, height, width, device)
    nodes = pd.DataFrame([row.to_json() for row in latency_rows(latency)])
    static = {name: Route.from_dict(json.loads(data), source=name) for name, data in routes}
    return nodes, pd.DataFrame(route_times(latency, static))


def routes_of_space(
    config_json: str, records: str | None, runs: tuple[str, ...] = ()
) -> tuple[tuple[str, str], ...]:
    """The zoo's special cases drawn in this space
    (``dynviz.model.zoo.special_case_routes``), the static routes trained in the folder in
    this space (e.g. the demo's U-Net-like, FCN-like and Common-Budget runs), and the common
    network (95%) of the selected records when they were made in it: ``(name, route JSON)``
    pairs."""
    space = RoutingSpaceConfig.from_dict(json.loads(config_json))
    out = [
        (name, json.dumps(route.to_dict())) for name, route in special_case_routes(space).items()
    ]
    same = {k: v for k, v in space.to_dict().items() if k != "num_classes"}
    for run in runs:
        data = load_run_config(run, stamp(Path(run) / "config.yaml")).get("route")
        if not data or not isinstance(data.get("space"), dict):
            continue
        if {k: v for k, v in data["space"].items() if k != "num_classes"} != same:
            continue
        try:
            route = Route.from_dict(data, source=run)
        except (ValueError, KeyError):
            continue
        name = f"{route.name} (run {Path(run).name})"
        out.append((name, json.dumps(Route(space, route.paths, name=name).to_dict())))
    if records is not None:
        rec = load_records(records, stamp(records))
        if rec.config == space:
            try:
                route = extract_common(
                    path_statistics(records, stamp(records)).per_path,
                    rec.config,
                    threshold=COMMON_THRESHOLD,
                )
            except CommonNetError:
                pass
            else:
                out.append((f"common-95 of {rec.label}", json.dumps(route.to_dict())))
    return tuple(out)


# ------------------------------------------------------------------------- training curves
@st.cache_data(show_spinner=False, max_entries=64)
def curve_picture(data: pd.DataFrame, series: str) -> str:
    """``dynviz.plots.mpl.training_curves`` of ``series`` (columns ``iter``, ``run`` and the
    series) as an SVG picture: the browser draws it at once, with no charting code to load."""
    return _curve_svg(data, series)


def _warm_up_in_background(*, curves: bool) -> threading.Thread:
    """Import what the first page does not need on a thread of its own, while the first
    visitor's browser loads the page's scripts (0.8 s), so that the server answers sooner:
    altair (``st.line_chart``'s: 0.15-0.3 s) and, with ``curves``, matplotlib with a first
    figure drawn (fonts, text layout: 0.4-0.5 s), after which the Overview's
    :func:`curve_picture` costs milliseconds. A page that comes sooner waits for the imports
    under way (Python imports a module once)."""

    def run() -> None:
        try:
            import altair  # noqa: F401

            if curves:
                frame = pd.DataFrame({"iter": [0, 1], "run": "a", "loss": [1.0, 0.5]})
                _curve_svg(frame, "loss")
        except Exception as err:  # noqa: BLE001 - the page imports or draws them again
            logger.warning("warming the explorer up failed: %s", err)

    thread = threading.Thread(target=run, name=f"{BACKGROUND}warm-up", daemon=True)
    thread.start()
    return thread


def _curve_svg(data: pd.DataFrame, series: str) -> str:
    from dynviz.plots.mpl import training_curves

    ax = training_curves(data, y=series, ylabel=series)
    out = io.StringIO()
    ax.figure.savefig(out, format="svg")
    return out.getvalue()


# ---------------------------------------------------------------------- routing vs scale
@st.cache_data(show_spinner="Relating routes to object scale...", max_entries=32)
def image_routes(path: str, mtime: float) -> pd.DataFrame:
    """``dynviz.analysis.routing_vs_scale`` of one records folder, with per-scale cost shares
    (``dynviz.analysis.report.records_path_costs``)."""
    rec = load_records(path, mtime)
    return _routing_vs_scale(rec.gates, rec.images, path_costs=records_path_costs(rec))


@st.cache_data(show_spinner=False, max_entries=16)
def routing_vs_scale(paths: tuple[str, ...], mtimes: tuple[float, ...]) -> pd.DataFrame:
    """:func:`image_routes` of several records folders, stacked with a ``model`` column."""
    frames = [image_routes(p, m) for p, m in zip(paths, mtimes, strict=True)]
    return label_frames(frames, _labels(paths, mtimes))


@st.cache_data(show_spinner="Correlating routes with object scale...", max_entries=16)
def scale_summary(paths: tuple[str, ...], mtimes: tuple[float, ...]) -> Any:
    """``dynviz.analysis.scale_summary`` of :func:`routing_vs_scale`: per-regime means and
    correlations (ranks of every image: about 0.4 s at 100,000 images, once)."""
    return _scale_summary(routing_vs_scale(paths, mtimes))


MENU_IMAGES = 1000
"""At most this many images listed in a menu; records of more are picked by number."""

SCATTER_POINTS = 5000
"""At most this many images drawn in a per-image scatter: 100,000 points are 3.7 MB sent to every
browser on every run; the tables and correlations still use every image."""


def drawn_points(frame: pd.DataFrame, limit: int = SCATTER_POINTS) -> pd.DataFrame:
    """At most ``limit`` rows of ``frame`` to draw, the same on every run: a seeded sample of
    each ``model`` (an equal share of ``limit`` each), in the frame's order; ``frame`` itself
    when it is small enough."""
    if len(frame) <= limit:
        return frame
    if "model" not in frame.columns:
        return frame.sample(n=limit, random_state=0).sort_index()
    groups = frame.groupby("model", observed=True, sort=False)
    share = max(1, limit // groups.ngroups)
    picked = [g.sample(n=min(len(g), share), random_state=0) for _, g in groups]
    return pd.concat(picked).sort_index()


@st.cache_resource(show_spinner=False, max_entries=32)
def summarised(path: str, mtime: float) -> bool:
    """Summarise the gate rows of a records folder once per server, when it is first selected:
    every page then reads small frames. A ``cache_resource`` marker: later runs, of any session,
    neither recompute nor unpickle the summaries only to warm them."""
    path_statistics(path, mtime)
    image_routes(path, mtime)
    return True


PRELOAD_SUMMARY_DELAY = 5.0
"""Seconds between :func:`preload` and the summaries of the records shown first starting on
their thread: a visitor who opens the explorer as soon as it answers has the first page drawn
by then (about 2 s), one who comes later finds them made."""

_summarising: set[tuple[str, float]] = set()
_summarising_lock = threading.Lock()


def summarise_in_background(
    path: str, mtime: float, *, delay: float = PRELOAD_SUMMARY_DELAY
) -> threading.Thread | None:
    """:func:`summarised` on a thread of its own after ``delay`` seconds, once per records
    folder and modification time (None when already started): the first page is drawn without
    waiting for them (1-5 s of gate rows at 100,000 images), and a page that needs them before
    they are done computes them, or waits for the thread's result, instead of computing them
    twice (Streamlit computes a cached value once)."""
    key = (path, mtime)
    with _summarising_lock:
        if key in _summarising:
            return None
        _summarising.add(key)

    def run() -> None:
        try:
            summarised(path, mtime)
        except Exception as err:  # noqa: BLE001 - the page that needs them shows the error
            logger.warning("summarising %s in the background failed: %s", path, err)
            with _summarising_lock:
                _summarising.discard(key)

    thread = threading.Timer(delay, run)
    thread.name = f"{BACKGROUND}summaries"
    thread.daemon = True
    thread.start()
    return thread


def summarising(path: str, mtime: float) -> bool:
    """Whether :func:`summarise_in_background` took these records (started or scheduled)."""
    with _summarising_lock:
        return (path, mtime) in _summarising


# -------------------------------------------------------------------------------- context
@dataclass(frozen=True)
class Context:
    """What the sidebar chose: the folder, what it holds and the records shown."""

    catalog: Catalog
    records: str | None  # absolute path of the selected records folder
    usable: tuple[str, ...] = ()  # the records folders that can be read

    @property
    def root(self) -> str:
        return self.catalog.root

    def all_records(self) -> tuple[tuple[str, ...], tuple[float, ...]]:
        """Every readable records folder, with their modification times (cache keys)."""
        return self.usable, tuple(stamp(p) for p in self.usable)

    def labels(self) -> list[str]:
        """Menu labels of the readable records folders."""
        return [self.catalog.label(p) for p in self.usable]


def default_root() -> str:
    """The folder ``dynviz app DIR`` gave, else ``runs`` when it exists, else the cwd: fixed when
    the server starts. Neither the sidebar nor the URL can choose another (a visitor of a server
    on a lab network must not browse the server's files); ``?records=`` picks only among the
    records found under it."""
    env = os.environ.get(APP_DIR_ENV)
    if env:
        return env
    return str(Path("runs").resolve()) if Path("runs").is_dir() else str(Path.cwd())


def scan(root: str) -> tuple[Catalog, dict[str, str], tuple[str, ...]]:
    """What the sidebar shows of ``root``: its catalog (:func:`discover`), why each records
    folder cannot be shown ("" when it can: :func:`records_problem`, which reads the records)
    and the readable ones."""
    catalog = discover(root)
    problems = {p: records_problem(p, stamp(p)) for p in catalog.records}
    return catalog, problems, tuple(p for p in catalog.records if not problems[p])


def default_records(usable: tuple[str, ...]) -> str:
    """The records a new session shows first: the first dynamic ones, else the first."""
    dynamic = [p for p in usable if load_records(p, stamp(p)).sidecar.dynamic]
    return (dynamic or list(usable))[0]


def preload(root: str | None = None) -> dict[str, float]:
    """Fill the server's caches with what a session's first page needs, before any session:
    ``dynviz app`` calls it in the server process before the server listens. The modules the
    pages import (torch comes with :mod:`dynviz.record`), every records folder under ``root``
    read (:func:`scan`), and the Overview's tables: :func:`table1`, :func:`compare_rows`, the
    runs' configs and metrics. The imports a first page does without (altair, and matplotlib
    for the training curves) follow on a thread as the server starts listening
    (:func:`_warm_up_in_background`); the gate-row summaries of the records shown first start
    on a background thread :data:`PRELOAD_SUMMARY_DELAY` seconds later
    (:func:`summarise_in_background`), and the sidebar does not wait for them. Returns the
    seconds each step took."""
    times: dict[str, float] = {}
    started = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal started
        now = time.perf_counter()
        times[step] = round(now - started, 3)
        started = now

    root = root or default_root()
    catalog, _, usable = scan(root)
    lap("records")
    if usable:
        try:
            table1(usable, tuple(stamp(p) for p in usable))
        except (ValueError, OSError) as err:  # the Overview says it
            logger.warning("cannot tabulate the records: %s", err)
    compare_rows(catalog.tables, tuple(stamp(t) for t in catalog.tables))
    for run in catalog.runs:
        load_run_config(run, stamp(Path(run) / "config.yaml"))
        load_metrics(run, stamp(Path(run) / "metrics.jsonl"))
    lap("overview")
    _warm_up_in_background(
        curves=any((Path(run) / "metrics.jsonl").is_file() for run in catalog.runs)
    )
    if usable:
        first = default_records(usable)
        if routing_space(first, stamp(first)):
            summarise_in_background(first, stamp(first), delay=PRELOAD_SUMMARY_DELAY)
    return times


def sidebar() -> Context:
    """Draw the shared sidebar and store the :class:`Context` for the pages."""
    root = default_root()
    with st.sidebar:
        if st.button("Rescan", icon=":material/refresh:", help="Look for new runs and records"):
            discover.clear()
        catalog, problems, usable = scan(root)
        if not Path(catalog.root).is_dir():
            st.error(f"`{root}`: no such folder")
        elif catalog.truncated:
            st.warning(f"Stopped after {_MAX_DIRS} folders: pick a narrower folder.")
        selected: str | None = None
        if usable:
            labels = [catalog.label(p) for p in usable]
            wanted = st.query_params.get("records")
            if st.session_state.get("records_label") not in labels:
                st.session_state["records_label"] = (
                    wanted if wanted in labels else catalog.label(default_records(usable))
                )
            choice = st.selectbox(
                "Records",
                labels,
                key="records_label",
                help="The records the pages show (`dynviz record` writes them).",
            )
            selected = usable[labels.index(choice)]
            st.query_params["records"] = choice
            skipped = load_records(selected, stamp(selected)).skipped_note  # damaged parts
            if skipped:
                st.warning(skipped, icon=":material/warning:")
            mtime = stamp(selected)
            # gate graphs have their own pages; the records preload() put on a thread are not
            # waited for (the first page is drawn at once)
            if routing_space(selected, mtime) and not summarising(selected, mtime):
                summarised(selected, mtime)
        else:
            st.caption(
                "No records here yet: `dynviz record RUN_DIR --data SPEC --out DIR` writes them."
            )
        broken = {p: m for p, m in problems.items() if m}
        if broken:
            with st.expander(
                f"{len(broken)} unreadable records folder(s)", icon=":material/warning:"
            ):
                for path, message in broken.items():
                    st.caption(f"`{catalog.label(path)}`: {message}")
        st.caption(
            f"{len(catalog.runs)} run(s) and {len(usable)} records folder(s) in `{catalog.root}`"
        )
    ctx = Context(catalog, selected, usable)
    st.session_state["_dynviz_context"] = ctx
    return ctx


def context() -> Context:
    """The :class:`Context` the sidebar stored on this run."""
    ctx = st.session_state.get("_dynviz_context")
    return ctx if ctx is not None else sidebar()


def records_or_stop(ctx: Context) -> Any:
    """The selected records, or a note and ``st.stop()`` when there are none."""
    if ctx.records is None:
        st.info(
            f"No records found in `{ctx.root}`. Record a model with "
            "`dynviz record RUN_DIR --data SPEC --out DIR` (or run `dynviz demo`), or "
            "pick another folder in the sidebar."
        )
        st.stop()
    return load_records(ctx.records, stamp(ctx.records))


def config_json(records: Any) -> str:
    """The records' model config as canonical JSON (a hashable cache key)."""
    return json.dumps(records.sidecar.config_dict, sort_keys=True)


def fmt_number(value: float | None, digits: int = 4) -> str:
    """A number for a metric, ``digits`` significant digits (``-`` when unknown)."""
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value:.{digits}g}"


# ------------------------------------------------------------------------- gate-graph records
def routing_space(path: str, mtime: float) -> bool:
    """Whether a records folder was made in the layer x scale routing space (``Records.kind``);
    gate-graph records of any other gated network (issue 27) have no gate rows of a routing
    space: the routing-only pages and :func:`summarised` do not apply to them."""
    return load_records(path, mtime).kind == "routing-space"
