"""Runs and records folders on disk: finding them, reading a run's log and config, and getting
back the network a records folder was made with.

A *run* folder is what ``dynviz train`` writes (``config.yaml``, ``metrics.jsonl``, checkpoints);
a *records* folder is what ``dynviz record`` writes (``records.json`` and Parquet parts,
:mod:`dynviz.record`). The explorer (``apps/``) lists and reads folders through these functions
and adds only its caching.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dynviz.record import SIDECAR, Records, read_records
from dynviz.record.format import GATES_DIR, IMAGES_DIR, list_parts

__all__ = [
    "RUN_FILES",
    "Catalog",
    "ModelInfo",
    "find_folders",
    "COMPARE_TABLE",
    "measured_accuracy",
    "modified_time",
    "read_compare_table",
    "read_metrics",
    "read_run_config",
    "records_model",
    "records_problem",
    "resolve_checkpoint",
]

logger = logging.getLogger(__name__)

RUN_FILES = ("config.yaml", "metrics.jsonl")
"""Files that make a folder a training run."""

COMPARE_TABLE = "table1.csv"
"""The Table-1 comparison ``dynviz compare`` writes."""

_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".ipynb_checkpoints"}


# ------------------------------------------------------------------------------ discovery
@dataclass(frozen=True)
class Catalog:
    """What a folder holds: training runs and records folders (absolute paths, sorted)."""

    root: str
    runs: tuple[str, ...]
    records: tuple[str, ...]
    truncated: bool = False  # the search stopped early (too many folders)
    tables: tuple[str, ...] = ()  # Table-1 comparisons (``table1.csv`` of ``dynviz compare``)

    def label(self, path: str) -> str:
        """``path`` relative to the root, for menus."""
        try:
            rel = str(Path(path).relative_to(self.root))
        except ValueError:
            return path
        return rel if rel != "." else (Path(path).name or path)


def find_folders(
    root: str | os.PathLike[str], *, max_depth: int = 6, max_dirs: int = 5000
) -> Catalog:
    """Search ``root`` recursively for run folders (``config.yaml`` or ``metrics.jsonl``) and
    records folders (``records.json``, or part files without it: a damaged records folder that
    :func:`records_problem` then names); hidden folders and virtual environments are skipped, a
    records folder is not searched further, and the search stops after ``max_dirs`` folders
    (``Catalog.truncated``)."""
    base = Path(root).expanduser().resolve()
    runs: list[str] = []
    records: list[str] = []
    tables: list[str] = []
    visited = 0

    def catalog(truncated: bool = False) -> Catalog:
        return Catalog(
            str(base), tuple(sorted(runs)), tuple(sorted(records)), truncated, tuple(sorted(tables))
        )

    if base.is_dir():
        for here, dirs, files in os.walk(base, followlinks=False):  # nothing outside root
            visited += 1
            if visited > max_dirs:
                return catalog(True)
            depth = len(Path(here).relative_to(base).parts)
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
            is_records = SIDECAR in files or _has_parts(Path(here), dirs)
            if depth >= max_depth or is_records:
                dirs[:] = []  # a records folder holds only its parts
            if is_records:
                records.append(here)
            elif any(n in files for n in RUN_FILES):
                runs.append(here)
            if COMPARE_TABLE in files:
                tables.append(str(Path(here) / COMPARE_TABLE))
    return catalog()


def _has_parts(folder: Path, dirs: Sequence[str]) -> bool:
    """Whether ``folder`` holds records parts (``gates/`` or ``images/`` part files)."""
    return any(name in dirs and list_parts(folder / name) for name in (GATES_DIR, IMAGES_DIR))


def read_compare_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A ``table1.csv`` of ``dynviz compare`` (or the demo): one row per network with its kind,
    mIoU, real GMACs (avg, max, min) and parameters; empty when unreadable."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as err:
        logger.warning("cannot read %s: %s", path, err)
        return pd.DataFrame()
    needed = {"method", "kind", "miou", "gmacs_avg"}
    if not needed <= set(frame.columns):
        logger.warning("%s is not a dynviz compare table (no %s)", path, sorted(needed))
        return pd.DataFrame()
    return frame


def modified_time(path: str | os.PathLike[str]) -> float:
    """Latest modification time of a file, or of a folder and its direct subfolders' files
    (0 when missing): a cache key that changes when records or a run log are rewritten."""
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


def records_problem(path: str | os.PathLike[str], records: Records | None = None) -> str:
    """Why a records folder cannot be shown ("" when it can): unreadable (no or a newer
    sidecar, no readable part), or no image yet. ``records``, when given, is the folder already
    read; damaged parts it skipped are not a problem here (:attr:`Records.skipped_note` says
    what was skipped)."""
    if records is None:
        try:
            records = read_records(path)
        except (ValueError, OSError, KeyError) as err:  # RecordError is a ValueError
            return str(err) or type(err).__name__
    if records.images.empty:
        return "no image recorded yet (an empty or interrupted recording; record again)"
    return ""


# ---------------------------------------------------------------------------------- runs
def read_metrics(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """A run's ``metrics.jsonl`` as a frame (empty when missing; unreadable lines, such as one
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


def read_run_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A run's ``config.yaml`` (empty when missing or unreadable)."""
    import yaml

    try:
        data = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


# ------------------------------------------------------------------------ records' model
@dataclass(frozen=True)
class ModelInfo:
    """How the model of a records folder was obtained."""

    source: str  # checkpoint path, or "untrained"
    note: str = ""  # a warning to show, or ""
    trained: bool = False


def resolve_checkpoint(records: Records) -> Path | None:
    """The checkpoint file the records were made with (None for untrained records). A relative
    path is relative to where ``dynviz record`` ran: the records folder's ancestors are tried;
    the result may not exist any more."""
    checkpoint = records.sidecar.checkpoint
    if checkpoint is None:
        return None
    file = Path(str(checkpoint.path))
    if not file.is_absolute() and records.path is not None:
        candidates = [file] + [parent / file for parent in Path(records.path).resolve().parents]
        file = next((c for c in candidates if c.is_file()), file)
    return file


def records_model(records: Records) -> tuple[Any, ModelInfo]:
    """The network of a records folder, in eval mode: its checkpoint when the file is still
    there, else a freshly built network of its config (untrained records). ``(None, info)`` when
    the checkpoint is missing or unreadable; ``info.note`` says what to tell the user."""
    from dynviz.model import build_model
    from dynviz.model.checkpoint import CheckpointError, load_model

    file = resolve_checkpoint(records)
    if file is not None:
        if not file.is_file():
            return None, ModelInfo(
                str(file),
                f"The checkpoint of these records, `{file}`, is not there any more: no "
                "prediction, and no routes for uploaded images.",
            )
        try:
            model, meta = load_model(file)
        except CheckpointError as err:
            return None, ModelInfo(str(file), f"Cannot load the checkpoint: {err}")
        note = ""
        recorded = records.sidecar.checkpoint.sha256 if records.sidecar.checkpoint else None
        if recorded and meta.get("sha256") != recorded:
            note = (
                f"`{file}` changed since it was recorded (sha256 differs): live routes and "
                "predictions may not match the records."
            )
        return model, ModelInfo(str(file), note, trained=True)
    model = build_model(records.config, route=records.sidecar.route).eval()
    return model, ModelInfo(
        "untrained",
        "These records come from an untrained network: the prediction and live routes use "
        "freshly initialised weights.",
    )


# ------------------------------------------------------------------------- special cases
def measured_accuracy(
    records: Sequence[Records], runs: Sequence[str | os.PathLike[str]] = ()
) -> pd.DataFrame:
    """mIoU of named routes (special cases, common nets) where records or training runs of them
    exist: records whose static or forced route has a name, runs whose route has one (their
    last ``val_miou``, on the run's evaluation images). Columns ``model, kind, source, mIoU,
    real GMACs, trained``; ``kind`` is ``special case`` for routes described as one (the zoo's
    and the demo's), ``common`` for common networks, else ``static``."""
    from dynviz.analysis import cost_statistics

    def kind(route: dict[str, Any]) -> str:
        text = str(route.get("description") or "").lower()
        name = str(route.get("name") or "").lower()
        if text.startswith("special case") or "paper" in route:
            return "special case"
        if name.startswith("common") or text.startswith("common"):
            return "common"
        return "static"

    rows = []
    for rec in records:
        if rec.sidecar.route_name:
            stats = cost_statistics(rec.images).iloc[0]
            rows.append(
                {
                    "model": rec.sidecar.route_name,
                    "kind": kind(rec.sidecar.forced_route_dict or rec.sidecar.route_dict or {}),
                    "source": f"records {Path(rec.path).name if rec.path else rec.label}",
                    "mIoU": float(stats["miou"]),
                    "real GMACs": float(stats["real_gmacs_mean"]),
                    "trained": rec.sidecar.trained,
                }
            )
    for run in runs:
        route = read_run_config(run).get("route") or {}
        metrics = read_metrics(run)
        if route.get("name") and "val_miou" in metrics and metrics["val_miou"].notna().any():
            last = metrics[metrics["val_miou"].notna()].iloc[-1]  # the last evaluation
            cost = last.get("real_gmacs")
            rows.append(
                {
                    "model": route["name"],
                    "kind": kind(route),
                    "source": f"run {Path(run).name}",
                    "mIoU": float(last["val_miou"]),
                    "real GMACs": float(cost) if cost is not None and pd.notna(cost) else None,
                    "trained": True,
                }
            )
    return pd.DataFrame(rows, columns=["model", "kind", "source", "mIoU", "real GMACs", "trained"])
