"""Shared state and cached loaders of the explorer.

The cache split of the Streamlit demos: ``st.cache_resource`` for models and data sets (one shared
object per process, used read-only), ``st.cache_data`` for frames, results and figures (a pickled
copy per call). Cached functions read only their arguments; files are keyed by path *and*
modification time, so rewritten records or a growing ``metrics.jsonl`` are read again.

:func:`sidebar` draws the shared sidebar (``explorer.py`` calls it on every page) and stores the
:class:`Context` that pages read with :func:`context`. Everything computed here is a call into
``dynviz``; the app does no tensor math.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dynviz.commands.app import APP_DIR_ENV

RECORDS_FILE = "records.json"
RUN_FILES = ("config.yaml", "metrics.jsonl")
PAPER_SIZE = (1024, 2048)  # Cityscapes, where the paper's numbers are counted
GMACS = "GMACs (1 MAC = 1 multiply-add = the paper's FLOP)"
_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".ipynb_checkpoints"}
_MAX_DEPTH = 6
_MAX_DIRS = 5000


# ------------------------------------------------------------------------------ discovery
@dataclass(frozen=True)
class Catalog:
    """What a folder holds: training runs and records folders (absolute paths, sorted)."""

    root: str
    runs: tuple[str, ...]
    records: tuple[str, ...]
    truncated: bool = False  # the search stopped early (too many folders)

    def label(self, path: str) -> str:
        """``path`` relative to the root, for menus."""
        try:
            rel = str(Path(path).relative_to(self.root))
        except ValueError:
            return path
        return rel if rel != "." else (Path(path).name or path)


@st.cache_data(ttl=60, show_spinner="Searching the folder...")
def discover(root: str, max_depth: int = _MAX_DEPTH, max_dirs: int = _MAX_DIRS) -> Catalog:
    """Search ``root`` recursively for run folders (``config.yaml`` or ``metrics.jsonl``) and
    records folders (``records.json``); hidden folders and virtual environments are skipped, and
    the search stops after ``max_dirs`` folders."""
    base = Path(root).expanduser().resolve()
    runs: list[str] = []
    records: list[str] = []
    visited = 0
    if base.is_dir():
        for here, dirs, files in os.walk(base):
            visited += 1
            if visited > max_dirs:
                return Catalog(str(base), tuple(sorted(runs)), tuple(sorted(records)), True)
            depth = len(Path(here).relative_to(base).parts)
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
            if depth >= max_depth or RECORDS_FILE in files:
                dirs[:] = []  # a records folder holds only its parts
            if RECORDS_FILE in files:
                records.append(here)
            elif any(n in files for n in RUN_FILES):
                runs.append(here)
    return Catalog(str(base), tuple(sorted(runs)), tuple(sorted(records)))


def stamp(path: str | Path) -> float:
    """Latest modification time of a file, or of a folder and its direct subfolders' files
    (part of cache keys)."""
    path = Path(path)
    if not path.exists():
        return 0.0
    if path.is_file():
        return path.stat().st_mtime
    times = [path.stat().st_mtime]
    for child in path.iterdir():
        times.append(child.stat().st_mtime)
        if child.is_dir():
            times += [p.stat().st_mtime for p in child.iterdir()]
    return max(times)


# --------------------------------------------------------------------------------- frames
@st.cache_resource(show_spinner="Reading records...", max_entries=8)
def load_records(path: str, mtime: float) -> Any:
    """``dynviz.record.read_records(path)``, shared and read-only (the gate rows of 100,000
    images are 10^7 rows: no copy per call); ``mtime`` only keys the cache."""
    from dynviz.record import read_records

    return read_records(path)


@st.cache_data(show_spinner=False, max_entries=256)
def records_problem(path: str, mtime: float) -> str:
    """Why a records folder cannot be read ("" when it can)."""
    try:
        records = load_records(path, mtime)
    except (ValueError, OSError, KeyError) as err:  # RecordError is a ValueError
        return str(err) or type(err).__name__
    if records.images.empty:
        return "no image recorded yet (an empty or interrupted recording; record again)"
    return ""


@st.cache_data(show_spinner=False, max_entries=256)
def sidecar(path: str, mtime: float) -> dict[str, Any]:
    """A records folder's ``records.json`` (empty when unreadable)."""
    try:
        data = json.loads((Path(path) / RECORDS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _labels(paths: tuple[str, ...], mtimes: tuple[float, ...]) -> list[str]:
    from dynviz.record import record_labels

    return record_labels([load_records(p, m) for p, m in zip(paths, mtimes, strict=True)])


@st.cache_data(show_spinner=False, max_entries=16)
def combined_images(paths: tuple[str, ...], mtimes: tuple[float, ...]) -> pd.DataFrame:
    """The image rows of several records folders with a ``model`` column."""
    from dynviz.record import label_frames

    frames = [load_records(p, m).images for p, m in zip(paths, mtimes, strict=True)]
    return label_frames(frames, _labels(paths, mtimes))


@dataclass(frozen=True)
class PathStatistics:
    """What the pages need of a records folder's gate rows, computed once: per-path activation
    probabilities (``activation_probability``) and per-path alpha histograms (20 bins)."""

    per_path: pd.DataFrame
    histogram: pd.DataFrame


ALPHA_BINS = 20


@st.cache_data(show_spinner="Summarising the routes...", max_entries=32)
def path_statistics(path: str, mtime: float) -> PathStatistics:
    """Per-path statistics of one records folder (small frames: the pages filter these instead
    of the gate rows)."""
    from dynviz.analysis import activation_probability, alpha_histogram

    gates = load_records(path, mtime).gates
    return PathStatistics(
        activation_probability(gates),
        alpha_histogram(gates, bins=ALPHA_BINS, by=("layer", "scale", "direction")),
    )


@st.cache_data(show_spinner=False, max_entries=16)
def combined_path_statistics(paths: tuple[str, ...], mtimes: tuple[float, ...]) -> PathStatistics:
    """:func:`path_statistics` of several records folders with a ``model`` column."""
    from dynviz.record import label_frames

    stats = [path_statistics(p, m) for p, m in zip(paths, mtimes, strict=True)]
    labels = _labels(paths, mtimes)
    return PathStatistics(
        label_frames([s.per_path for s in stats], labels),
        label_frames([s.histogram for s in stats], labels),
    )


@st.cache_data(show_spinner=False, max_entries=64)
def load_metrics(run_dir: str, mtime: float) -> pd.DataFrame:
    """The run's ``metrics.jsonl`` as a frame (empty when missing; unreadable lines, such as one
    being written, are skipped)."""
    rows = []
    try:
        lines = (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return pd.DataFrame()
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return pd.DataFrame(rows)


@st.cache_data(show_spinner=False, max_entries=64)
def load_run_config(run_dir: str, mtime: float) -> dict[str, Any]:
    """The run's ``config.yaml`` (empty when missing or unreadable)."""
    import yaml

    try:
        data = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


@st.cache_data(show_spinner=False, max_entries=16)
def table1(paths: tuple[str, ...], mtimes: tuple[float, ...]) -> pd.DataFrame:
    """The Table-1-style comparison of records: ``cost_statistics`` plus parameters and where
    each model comes from."""
    from dynviz.analysis import cost_statistics

    stats = cost_statistics(combined_images(paths, mtimes))
    info = []
    for path, mtime in zip(paths, mtimes, strict=True):
        meta = load_records(path, mtime).meta
        checkpoint = meta.get("checkpoint") or {}
        route = meta.get("forced_route") or meta.get("route") or {}
        info.append(
            {
                "params": meta.get("params"),
                "routing": ("forced " if meta.get("forced_route") else "static " if route else "")
                + (route.get("name") or "route")
                if route
                else "dynamic (gates)",
                "data": f"{meta.get('data')} [{meta.get('split')}]",
                "weights": f"iteration {checkpoint.get('iteration')}"
                if checkpoint
                else "untrained",
            }
        )
    return pd.concat([stats.reset_index(drop=True), pd.DataFrame(info)], axis=1)


# ------------------------------------------------------------------------ models and data
@dataclass(frozen=True)
class ModelInfo:
    """How the model of a records folder was obtained."""

    source: str  # checkpoint path, or "untrained"
    note: str = ""  # a warning to show, or ""
    trained: bool = False


@st.cache_resource(show_spinner="Loading the model...", max_entries=4)
def records_model(path: str, mtime: float) -> tuple[Any, ModelInfo]:
    """The network of a records folder: its checkpoint when the file is still there, else a
    freshly built network of its config (untrained records). ``(None, info)`` when the checkpoint
    is missing or unreadable."""
    from dynviz import build_model
    from dynviz.checkpoint import CheckpointError, load_model
    from dynviz.model.route import Route

    records = load_records(path, mtime)
    checkpoint = records.meta.get("checkpoint") or {}
    if checkpoint:
        file = Path(str(checkpoint.get("path")))
        if not file.is_absolute():  # relative to where `dynviz record` ran: try the ancestors
            candidates = [file] + [parent / file for parent in Path(path).resolve().parents]
            file = next((c for c in candidates if c.is_file()), file)
        if not file.is_file():
            return None, ModelInfo(
                str(file),
                f"The checkpoint of these records, `{file}`, is "
                "not there any more: no prediction, and no routes for "
                "uploaded images.",
            )
        try:
            model, meta = load_model(file)
        except CheckpointError as err:
            return None, ModelInfo(str(file), f"Cannot load the checkpoint: {err}")
        note = ""
        if checkpoint.get("sha256") and meta.get("sha256") != checkpoint.get("sha256"):
            note = (
                f"`{file}` changed since it was recorded (sha256 differs): live routes and "
                "predictions may not match the records."
            )
        return model, ModelInfo(str(file), note, trained=True)
    route = records.meta.get("route")
    static = Route.from_dict(route, source=f"{path}: route") if route else None
    model = build_model(records.config, route=static).eval()
    return model, ModelInfo(
        "untrained",
        "These records come from an untrained network: the "
        "prediction and live routes use freshly initialised weights.",
    )


@st.cache_resource(show_spinner="Preparing the data set...", max_entries=4)
def load_dataset(spec: str, split: str) -> Any:
    """``dynviz.data.build_dataset(spec, split=split)``."""
    from dynviz.data import build_dataset

    return build_dataset(spec, split=split)


@st.cache_data(show_spinner=False, max_entries=8)
def dataset_index(spec: str, split: str) -> dict[str, int]:
    """``{image_id: index}`` of a data set."""
    dataset = load_dataset(spec, split)
    return {dataset.image_id(i): i for i in range(len(dataset))}


@st.cache_data(show_spinner=False, max_entries=32)
def space_costs(config_json: str, height: int, width: int, route_json: str = "") -> Any:
    """``dynviz.cost.cost_table`` of a config (and static route) at an input size."""
    from dynviz.cost import cost_table
    from dynviz.model import RoutingSpaceConfig
    from dynviz.model.route import Route

    config = RoutingSpaceConfig.from_dict(json.loads(config_json))
    route = Route.from_dict(json.loads(route_json)) if route_json else None
    return cost_table(config, (height, width), route=route)


# ------------------------------------------------------------------------- image routes
@dataclass
class ImageView:
    """Everything the route explorer shows for one image."""

    image_id: str
    image: np.ndarray | None  # (H, W, 3) uint8 as the network saw it
    label: np.ndarray | None  # (H, W) uint8 ground truth, when known
    prediction: np.ndarray | None  # (H, W) uint8
    gates: pd.DataFrame  # the image's gate rows
    real_gmacs: float
    expected_gmacs: float
    miou: float | None = None
    stats: dict[str, float] = field(default_factory=dict)
    note: str = ""


@st.cache_data(show_spinner="Running the model...", max_entries=64)
def dataset_image(path: str, mtime: float, image_id: str) -> ImageView:
    """A recorded image: its recorded route and costs, the image and label from the records'
    data set, and the model's prediction."""
    from dynviz.data import DataError, Resize
    from dynviz.uploads import predict

    records = load_records(path, mtime)
    rows = records.gates[records.gates["image_id"] == image_id]
    row = records.images[records.images["image_id"] == image_id].iloc[0]
    stats = {
        k.removeprefix("stat_"): float(v)
        for k, v in row.items()
        if str(k).startswith("stat_") and pd.notna(v)
    }
    view = ImageView(
        image_id,
        None,
        None,
        None,
        rows,
        float(row["real_gmacs"]),
        float(row["expected_gmacs"]),
        None if pd.isna(row["miou"]) else float(row["miou"]),
        stats,
    )
    spec, split = records.meta.get("data"), records.meta.get("split") or "val"
    if not spec:
        view.note = "The records do not name their data set: no image to show."
        return view
    try:
        index = dataset_index(str(spec), str(split)).get(image_id)
        if index is None:
            view.note = f"`{image_id}` is not in `{spec}` [{split}] any more."
            return view
        image, label = load_dataset(str(spec), str(split)).raw(index)
    except (DataError, OSError) as err:
        view.note = f"Cannot read the image from `{spec}`: {err}"
        return view
    size = (int(row["height"]), int(row["width"]))
    if image.shape[:2] != size:  # recorded with `dynviz record --size`
        image, label = Resize(size)(image, label)
    view.image, view.label = image, label
    model, _ = records_model(path, mtime)
    if model is not None:
        view.prediction = predict(model, image, route=forced_route(path, mtime))
    return view


@st.cache_data(show_spinner=False, max_entries=32)
def forced_route(path: str, mtime: float) -> Any:
    """The route forced onto the model when the records were made, or None."""
    from dynviz.model.route import Route

    data = load_records(path, mtime).meta.get("forced_route")
    return Route.from_dict(data, source=f"{path}: forced route") if data else None


@st.cache_data(show_spinner="Running the model on the upload...", max_entries=16)
def upload_image(path: str, mtime: float, name: str, data: bytes, max_side: int) -> ImageView:
    """An uploaded image run through the records' model (raises ``UploadError``)."""
    from dynviz.uploads import read_upload, route_image

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
    return ImageView(
        name,
        result.image,
        None,
        result.prediction,
        result.gates,
        result.real_gmacs,
        result.expected_gmacs,
    )


@st.cache_data(show_spinner=False, max_entries=64)
def route_figure(config_json: str, gates: pd.DataFrame, height: int, width: int, title: str) -> Any:
    """One image's route on the layer x scale grid: every path of the space, width and opacity
    by the image's alpha, closed paths faint and dotted; hover gives alpha and MACs."""
    from dynviz.graph import space_graph
    from dynviz.model import RoutingSpaceConfig
    from dynviz.plots.interactive import space_figure

    config = RoutingSpaceConfig.from_dict(json.loads(config_json))
    costs = space_costs(config_json, height, width)
    alphas = gates.assign(mean_alpha=gates["alpha"].astype("float64"))
    graph = space_graph(config, costs=costs, mean_alpha=alphas)
    fig = space_figure(graph, edge_attr="mean_alpha", threshold=0.0, title=title)
    fig.update_layout(height=320, margin={"l": 50, "r": 10, "t": 40, "b": 40})
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


@st.cache_data(show_spinner="Extracting the common network...", max_entries=64)
def common_network(path: str, mtime: float, threshold: float, height: int, width: int) -> Extracted:
    """``extract_common`` at ``threshold``, its static network's params and GMACs at the records'
    input size and at 1024x2048, and its figure."""
    from dynviz.analysis import CommonNetError, extract_common
    from dynviz.cost import cost_table, param_table
    from dynviz.graph import space_graph
    from dynviz.plots.interactive import space_figure

    config = load_records(path, mtime).config
    per_path = path_statistics(path, mtime).per_path
    try:
        route = extract_common(per_path, config, threshold=threshold)
    except CommonNetError as err:
        return Extracted(error=str(err))
    costs = cost_table(config, (height, width), route=route)
    graph = space_graph(config, costs=costs, probability=per_path, mean_alpha=per_path, route=route)
    title = f"{route.name}: {len(route)} paths in {len(route.cells)} cells"
    figure = space_figure(graph, edge_attr="probability", threshold=threshold, title=title)
    figure.update_layout(height=360)
    return Extracted(
        yaml=route.to_yaml(),
        name=route.name,
        notes=str(route.meta.get("notes", "")),
        paths=len(route),
        cells=len(route.cells),
        params=param_table(config, route=route).total,
        gmacs=costs.total() / 1e9,
        gmacs_paper=cost_table(config, PAPER_SIZE, route=route).total() / 1e9,
        dynamic_params=param_table(config).total,
        dynamic_gmacs=cost_table(config, (height, width)).total() / 1e9,
        figure=figure,
    )


# ------------------------------------------------------------------------- special cases
@st.cache_data(show_spinner=False)
def special_cases(height: int, width: int) -> pd.DataFrame:
    """The zoo's special cases (``dynviz flops --special-cases``) at an input size, with the
    paper's Table 1 numbers."""
    from dynviz.commands.flops import special_cases as cases

    rows = []
    for cost in cases(size=(height, width)):
        paper = cost.paper or {}
        rows.append(
            {
                "model": cost.name,
                "params (M)": cost.params / 1e6,
                "GMACs": cost.gmacs,
                "paper params (M)": paper.get("params_m"),
                "paper GFLOPs": paper.get("gflops"),
                "paper mIoU": paper.get("miou"),
                "notes": " ".join(cost.notes.split()),
            }
        )
    return pd.DataFrame(rows)


@st.cache_data(show_spinner=False)
def special_case_figure(name: str, height: int, width: int) -> Any:
    """A special case's route on the layer x scale grid."""
    from dynviz.cost import cost_table
    from dynviz.graph import space_graph
    from dynviz.model.zoo import load_spec
    from dynviz.plots.interactive import space_figure

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
    """mIoU of the special cases where records or training runs of them are found: records
    whose (static or forced) route has the case's name, runs whose route has it."""
    from dynviz.analysis import cost_statistics

    rows = []
    for path, mtime in zip(records, records_mtimes, strict=True):
        rec = load_records(path, mtime)
        route = rec.meta.get("forced_route") or rec.meta.get("route") or {}
        if route.get("name"):
            stats = cost_statistics(rec.images).iloc[0]
            rows.append(
                {
                    "model": route["name"],
                    "source": f"records {Path(path).name}",
                    "mIoU": float(stats["miou"]),
                    "real GMACs": float(stats["real_gmacs_mean"]),
                    "trained": bool(rec.meta.get("checkpoint")),
                }
            )
    for run, mtime in zip(runs, runs_mtimes, strict=True):
        route = load_run_config(run, mtime).get("route") or {}
        metrics = load_metrics(run, stamp(Path(run) / "metrics.jsonl"))
        if route.get("name") and "val_miou" in metrics and metrics["val_miou"].notna().any():
            rows.append(
                {
                    "model": route["name"],
                    "source": f"run {Path(run).name}",
                    "mIoU": float(metrics["val_miou"].max()),
                    "real GMACs": None,
                    "trained": True,
                }
            )
    return pd.DataFrame(rows, columns=["model", "source", "mIoU", "real GMACs", "trained"])


# ------------------------------------------------------------------------------- latency
@st.cache_data(show_spinner=False)
def zoo_spaces() -> dict[str, str]:
    """``{name: config JSON}`` of the zoo's routing spaces (route specs left out)."""
    from dynviz.model import RoutingSpaceConfig
    from dynviz.model.zoo import load_spec, preset_names

    out = {}
    for name in preset_names():
        spec = load_spec(name)
        if isinstance(spec, RoutingSpaceConfig):
            out[name] = json.dumps(spec.to_dict(), sort_keys=True)
    return out


@st.cache_data(show_spinner="Timing every node on this machine...", max_entries=16)
def node_latency(config_json: str, height: int, width: int) -> Any:
    """``dynviz.latency.measure_node_latency`` of a config at an input size (3 repeats)."""
    from dynviz.latency import measure_node_latency
    from dynviz.model import RoutingSpaceConfig

    config = RoutingSpaceConfig.from_dict(json.loads(config_json))
    return measure_node_latency(config, (height, width), repeats=3, tune_malloc=True)


@st.cache_data(show_spinner=False, max_entries=16)
def latency_tables(
    config_json: str, height: int, width: int, routes: tuple[tuple[str, str], ...]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The measured node table (``latency_rows``) and the routes' estimated times
    (``route_times``; ``routes`` are ``(name, route JSON)`` pairs of this config's space)."""
    from dynviz.latency import latency_rows, route_times
    from dynviz.model.route import Route

    latency = node_latency(config_json, height, width)
    nodes = pd.DataFrame([row.to_json() for row in latency_rows(latency)])
    static = {name: Route.from_dict(json.loads(data), source=name) for name, data in routes}
    return nodes, pd.DataFrame(route_times(latency, static))


def routes_of_space(config_json: str, records: str | None) -> tuple[tuple[str, str], ...]:
    """The zoo's special cases drawn in this space, and the common network (95%) of the
    selected records when they were made in it: ``(name, route JSON)`` pairs."""
    from dynviz.analysis import CommonNetError, extract_common
    from dynviz.model.route import Route
    from dynviz.model.zoo import load_spec, preset_names

    def same(route: Route) -> bool:
        return json.dumps(route.space.to_dict(), sort_keys=True) == config_json

    out = []
    for name in preset_names():
        spec = load_spec(name)
        if isinstance(spec, Route) and "paper" in spec.meta and same(spec):
            out.append((name, json.dumps(spec.to_dict())))
    if records is not None:
        rec = load_records(records, stamp(records))
        if json.dumps(rec.config.to_dict(), sort_keys=True) == config_json:
            try:
                route = extract_common(
                    path_statistics(records, stamp(records)).per_path, rec.config, threshold=0.95
                )
            except CommonNetError:
                pass
            else:
                out.append((f"common-95 of {rec.label}", json.dumps(route.to_dict())))
    return tuple(out)


# ---------------------------------------------------------------------- routing vs scale
@st.cache_data(show_spinner="Relating routes to object scale...", max_entries=32)
def image_routes(path: str, mtime: float) -> pd.DataFrame:
    """``dynviz.analysis.routing_vs_scale`` of one records folder, with per-scale cost
    shares."""
    from dynviz.analysis import routing_vs_scale as per_image
    from dynviz.model.route import Route
    from dynviz.record import path_cost_frame

    rec = load_records(path, mtime)
    sizes = (
        rec.meta.get("input_sizes")
        or rec.images[["height", "width"]].drop_duplicates().to_numpy().tolist()
    )
    route = rec.meta.get("route")
    costs = path_cost_frame(
        rec.config,
        (int(sizes[0][0]), int(sizes[0][1])),
        route=Route.from_dict(route) if route else None,
    )
    return per_image(rec.gates, rec.images, path_costs=costs)


@st.cache_data(show_spinner=False, max_entries=16)
def routing_vs_scale(paths: tuple[str, ...], mtimes: tuple[float, ...]) -> pd.DataFrame:
    """:func:`image_routes` of several records folders, stacked with a ``model`` column."""
    from dynviz.record import label_frames

    frames = [image_routes(p, m) for p, m in zip(paths, mtimes, strict=True)]
    return label_frames(frames, _labels(paths, mtimes))


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
    """The folder ``dynviz app DIR`` gave, else ``runs`` when it exists, else the cwd."""
    env = os.environ.get(APP_DIR_ENV)
    if env:
        return env
    return str(Path("runs").resolve()) if Path("runs").is_dir() else str(Path.cwd())


def sidebar() -> Context:
    """Draw the shared sidebar and store the :class:`Context` for the pages."""
    if "root" not in st.session_state:
        st.session_state["root"] = st.query_params.get("dir") or default_root()
    with st.sidebar:
        st.text_input(
            "Folder of runs and records",
            key="root",
            help="Searched recursively for training runs (config.yaml, "
            "metrics.jsonl) and records (records.json).",
        )
        root = str(st.session_state["root"]).strip()
        if st.button("Rescan", icon=":material/refresh:", help="Look for new runs and records"):
            discover.clear()
        catalog = discover(root)
        if not Path(catalog.root).is_dir():
            st.error(f"`{root}`: no such folder")
        elif catalog.truncated:
            st.warning(f"Stopped after {_MAX_DIRS} folders: pick a narrower folder.")
        selected: str | None = None
        problems = {p: records_problem(p, stamp(p)) for p in catalog.records}
        usable = tuple(p for p in catalog.records if not problems[p])
        if usable:
            labels = [catalog.label(p) for p in usable]
            wanted = st.query_params.get("records")
            if st.session_state.get("records_label") not in labels:
                dynamic = [
                    label
                    for label, p in zip(labels, usable, strict=True)
                    if sidecar(p, stamp(Path(p) / RECORDS_FILE)).get("dynamic")
                ]
                st.session_state["records_label"] = (
                    wanted if wanted in labels else (dynamic or labels)[0]
                )
            choice = st.selectbox(
                "Records",
                labels,
                key="records_label",
                help="The records the pages show (`dynviz record` writes them).",
            )
            selected = usable[labels.index(choice)]
            st.query_params["records"] = choice
            # summarise the gate rows once, here: every page then reads small frames
            path_statistics(selected, stamp(selected))
            image_routes(selected, stamp(selected))
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
    return json.dumps(records.meta["config"], sort_keys=True)


def fmt_number(value: float | None, digits: int = 4) -> str:
    """A number for a metric, ``digits`` significant digits (``-`` when unknown)."""
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value:.{digits}g}"
