"""The records' tables as pandas frames: reading and validating a records folder
(:func:`read_records`), combining several records, and writing frames as a chunk
(:func:`write_records`). The schemas, the folder protocol and the part writer are
:mod:`dynviz.record.format`; the layout is described in :mod:`dynviz.record`."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dynviz.model import RoutingNetwork, RoutingSpaceConfig
from dynviz.model.route import Route
from dynviz.record.format import (
    DIRECTION_DTYPE,
    DIRECTIONS,
    FORMAT,
    FORMAT_VERSION,
    GATE_ALPHA,
    GATE_COLUMNS,
    GATES_DIR,
    IMAGE_COLUMNS,
    IMAGES_DIR,
    STAT_PREFIX,
    gates_table,
    images_table,
    list_parts,
    read_sidecar,
    write_chunk,
    write_sidecar,
)
from dynviz.record.sidecar import RecordError, Sidecar

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class Records:
    """A records folder in memory.

    Attributes:
        gates: one row per (image, path) (see the module docstring).
        images: one row per image.
        sidecar: the sidecar (``records.json``), typed
            (:class:`~dynviz.record.sidecar.Sidecar`): read everything about the recording
            through it.
        path: the folder it was read from (None when built in memory).
    """

    gates: pd.DataFrame
    images: pd.DataFrame
    sidecar: Sidecar = field(default_factory=Sidecar)
    path: Path | None = None

    @property
    def meta(self) -> dict[str, Any]:
        """The sidecar as its JSON mapping (:meth:`Sidecar.to_dict`); read :attr:`sidecar`
        instead."""
        return self.sidecar.to_dict()

    @property
    def config(self) -> RoutingSpaceConfig:
        """The routing space of the recorded model."""
        return self.sidecar.config

    @property
    def route(self) -> Route | None:
        """The route that ran: the forced route if one was given, else the static network's,
        else None (the gates chose)."""
        return self.sidecar.ran_route

    @property
    def label(self) -> str:
        """A short name for tables and legends: the sidecar's ``name``, else the folder name."""
        if self.sidecar.name:
            return self.sidecar.name
        return self.path.name if self.path is not None else "records"

    @property
    def num_classes(self) -> int:
        return int(self.sidecar.num_classes or self.config.num_classes)

    @property
    def _where(self) -> str:
        return str(self.path) if self.path is not None else "records"

    def __repr__(self) -> str:
        return (
            f"Records({self.label!r}, images={len(self.images)}, gate_rows={len(self.gates)},"
            f" path={str(self.path) if self.path else None!r})"
        )


def _is_string_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _check_field(t: pa.DataType, kind: str) -> bool:
    if kind == "string":
        return _is_string_type(t) or (pa.types.is_dictionary(t) and _is_string_type(t.value_type))
    if kind == "category":
        return _is_string_type(t) or (pa.types.is_dictionary(t) and _is_string_type(t.value_type))
    if kind.startswith("int"):
        return pa.types.is_integer(t)
    if kind.startswith("float"):
        return pa.types.is_floating(t) or pa.types.is_integer(t)
    if kind == "bool":
        return pa.types.is_boolean(t)
    return False


def _validate_schema(schema: pa.Schema, columns: Mapping[str, str], file: Path) -> None:
    names = set(schema.names)
    missing = [c for c in columns if c not in names]
    if missing:
        raise RecordError(
            f"{file}: missing column(s) {', '.join(missing)}; expected {', '.join(columns)}"
        )
    for name, kind in columns.items():
        t = schema.field(name).type
        if not _check_field(t, kind):
            raise RecordError(f"{file}: column {name!r} has type {t}, expected {kind}")
    for name in schema.names:
        if name.startswith(STAT_PREFIX):
            t = schema.field(name).type
            if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
                raise RecordError(f"{file}: column {name!r} has type {t}, expected float64")


def _arrow_to_pandas(kind: pa.DataType) -> Any:
    """pandas dtypes for Arrow types: strings stay Arrow-backed (no Python objects)."""
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pd.StringDtype("pyarrow")
    return None


def _read_table(
    files: Sequence[Path], columns: Mapping[str, str], *, extra: Sequence[str] = ()
) -> pd.DataFrame:
    tables = []
    categories = [name for name, kind in columns.items() if kind == "category"]
    for file in files:
        try:
            schema = pq.read_schema(file)
        except (OSError, pa.ArrowException) as err:
            raise RecordError(f"{file}: not a readable Parquet file ({err})") from None
        _validate_schema(schema, columns, file)
        try:
            table = pq.read_table(file, read_dictionary=categories)
        except (OSError, pa.ArrowException) as err:
            raise RecordError(f"{file}: cannot read ({err})") from None
        tables.append(table)
    if not tables:
        return _empty_frame(columns, extra)
    try:
        table = pa.concat_tables(tables, promote_options="permissive").unify_dictionaries()
    except pa.ArrowException as err:
        raise RecordError(f"{files[0].parent}: parts with incompatible columns ({err})") from None
    return table.to_pandas(types_mapper=_arrow_to_pandas)


def _empty_frame(columns: Mapping[str, str], extra: Sequence[str] = ()) -> pd.DataFrame:
    data = {}
    for name, kind in columns.items():
        if kind == "category":
            data[name] = pd.Series([], dtype=DIRECTION_DTYPE)
        elif kind == "string":
            data[name] = pd.Series([], dtype="string")
        else:
            data[name] = pd.Series([], dtype=kind)
    for name in extra:
        data[name] = pd.Series([], dtype="float64")
    return pd.DataFrame(data)


def _normalise_gates(gates: pd.DataFrame, where: str) -> pd.DataFrame:
    gates = gates.copy()  # lazy under copy-on-write
    if gates["image_id"].dtype != "string":
        gates["image_id"] = gates["image_id"].astype("string")
    for name in ("layer", "scale", "scale_index", "alpha", "active"):
        gates[name] = gates[name].astype(GATE_COLUMNS[name])
    own = gates[GATE_ALPHA].fillna(gates["alpha"]) if GATE_ALPHA in gates else gates["alpha"]
    gates[GATE_ALPHA] = own.astype("float32")  # parts written before the column: the alpha
    direction = gates["direction"]
    if not isinstance(direction.dtype, pd.CategoricalDtype):
        direction = direction.astype("string").astype("category")
    labels = [str(c) for c in direction.cat.categories]
    bad = sorted(set(labels) - set(DIRECTIONS))
    if bad or direction.isna().any():
        shown = bad[:5] if bad else ["<missing>"]
        raise RecordError(
            f"{where}: column 'direction' has values {shown}; expected one of "
            f"{', '.join(DIRECTIONS)}"
        )
    gates["direction"] = direction.cat.rename_categories(labels).cat.set_categories(
        list(DIRECTIONS), ordered=True
    )
    return gates[list(GATE_COLUMNS) + [c for c in gates.columns if c not in GATE_COLUMNS]]


def _normalise_images(images: pd.DataFrame) -> pd.DataFrame:
    images = images.copy()
    images["image_id"] = images["image_id"].astype("string")
    for name, kind in IMAGE_COLUMNS.items():
        if name != "image_id":
            images[name] = images[name].astype(kind)
    for name in images.columns:
        if name.startswith(STAT_PREFIX):
            images[name] = images[name].astype("float64")
    return images


def table_frames(gates: pa.Table, images: pa.Table) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(gates, images)`` frames of two parts' tables, as :func:`read_records` reads them
    (what :meth:`dynviz.record.RecordChunk.frames` gives without writing)."""
    gate_frame = gates.to_pandas(types_mapper=_arrow_to_pandas)
    image_frame = images.to_pandas(types_mapper=_arrow_to_pandas)
    return _normalise_gates(gate_frame, "recorded frames"), _normalise_images(image_frame)


def read_records(path: str | os.PathLike[str], *, model: RoutingNetwork | None = None) -> Records:
    """Read and validate a records folder.

    Args:
        path: the folder ``dynviz record --out`` wrote.
        model: if given, refuse records made with another model config (:func:`check_model`).

    Returns:
        The :class:`Records`; ``gates.direction`` is an ordered category (keep, up, down).

    Raises:
        RecordError: no sidecar, a part file with a missing column or a wrong type (naming the
            file), gate rows of unknown images, or a model mismatch.
    """
    folder = Path(path)
    sidecar = read_sidecar(folder)
    gate_parts = list_parts(folder / GATES_DIR)
    image_parts = list_parts(folder / IMAGES_DIR)
    orphans = sorted(set(gate_parts) - set(image_parts))
    if orphans:
        logger.warning(
            "%s: ignoring %d gates part(s) without their images part (an interrupted "
            "run; recording again completes it): %s",
            folder,
            len(orphans),
            ", ".join(gate_parts[k].name for k in orphans),
        )
    keys = sorted(image_parts)
    missing = [image_parts[k] for k in keys if k not in gate_parts]
    if missing:
        raise RecordError(
            f"{missing[0]}: images part without its gates part "
            f"{folder / GATES_DIR / missing[0].name}"
        )
    images = _read_table([image_parts[k] for k in keys], IMAGE_COLUMNS)
    gates = _read_table([gate_parts[k] for k in keys], GATE_COLUMNS)
    images = _normalise_images(images)
    gates = _normalise_gates(gates, str(folder / GATES_DIR))
    duplicated = images["image_id"].duplicated()
    if duplicated.any():
        raise RecordError(
            f"{folder}: image {images['image_id'][duplicated].iloc[0]!r} is recorded more than once"
        )
    images = images.reset_index(drop=True)
    records = Records(gates=gates, images=images, sidecar=sidecar, path=folder)
    if model is not None:
        check_model(records, model)
    return records


def check_model(records: Records, model: RoutingNetwork | RoutingSpaceConfig) -> None:
    """Refuse records made with another model.

    Args:
        records: what :func:`read_records` returned.
        model: a network (config and static route are compared) or a routing-space config.

    Raises:
        RecordError: naming the first key whose value differs.
    """
    config = model if isinstance(model, RoutingSpaceConfig) else model.config
    saved = records.sidecar.config_dict
    if saved is None:
        raise RecordError(f"{records._where}: the sidecar has no model config")
    mine = config.to_dict()
    for key in sorted(set(saved) | set(mine)):
        if key == "description":
            continue
        if saved.get(key) != mine.get(key):
            raise RecordError(
                f"{records._where}: recorded with another model: config key {key!r} is "
                f"{saved.get(key)!r} in the records and {mine.get(key)!r} in the model"
            )
    if isinstance(model, RoutingNetwork):
        saved_route = records.sidecar.route_dict
        saved_paths = None if not saved_route else sorted(map(tuple, saved_route["paths"]))
        route = model.route
        mine_paths = (
            None
            if route is None
            else sorted(
                (layer, route.space.stride(scale), d.label) for layer, scale, d in route.paths
            )
        )
        if saved_paths != mine_paths:
            raise RecordError(
                f"{records._where}: recorded with another model: key 'route' "
                "differs (static route paths)"
            )


def record_labels(records: Sequence[Records]) -> list[str]:
    """Unique labels of several records: their sidecar names; duplicates fall back to the folder
    names, then get a suffix."""
    labels = [r.label for r in records]
    if len(set(labels)) < len(labels):
        labels = [r.path.name if r.path is not None else r.label for r in records]
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(
            label if seen[label] == 1 and labels.count(label) == 1 else f"{label}-{seen[label]}"
        )
    return unique


def label_frames(frames: Sequence[pd.DataFrame], labels: Sequence[str]) -> pd.DataFrame:
    """Stack per-model frames with a ``model`` column first (an ordered category of
    ``labels``)."""
    order = pd.CategoricalDtype(list(labels), ordered=True)
    parts = []
    for code, frame in enumerate(frames):
        model = pd.Categorical.from_codes(np.full(len(frame), code, dtype=np.int32), dtype=order)
        parts.append(frame.assign(model=model))
    out = (
        pd.concat(parts, ignore_index=True)
        if len(parts) > 1
        else (parts[0] if parts else pd.DataFrame({"model": pd.Series([], dtype=order)}))
    )
    return out[["model"] + [c for c in out.columns if c != "model"]]


def combine_records(records: Sequence[Records]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Concatenate several records with a ``model`` column (:func:`record_labels`).

    Returns:
        ``(gates, images)``, each with a ``model`` category column first.
    """
    labels = record_labels(records)
    return (
        label_frames([r.gates for r in records], labels),
        label_frames([r.images for r in records], labels),
    )


# ------------------------------------------------------------------------------- writing
def _gates_part(gates: pd.DataFrame) -> pa.Table:
    direction = pd.Categorical(gates["direction"].astype(str), categories=list(DIRECTIONS))
    own = gates[GATE_ALPHA].fillna(gates["alpha"]) if GATE_ALPHA in gates else gates["alpha"]
    return gates_table(
        image_id=gates["image_id"].astype(str).to_numpy(dtype=object),
        layer=gates["layer"].to_numpy(),
        scale=gates["scale"].to_numpy(),
        scale_index=gates["scale_index"].to_numpy(),
        direction=direction.codes,
        alpha=gates["alpha"].to_numpy(np.float32),
        active=gates["active"].to_numpy(bool),
        gate_alpha=own.to_numpy(np.float32),
    )


def write_records(
    path: str | os.PathLike[str],
    gates: pd.DataFrame,
    images: pd.DataFrame,
    sidecar: Sidecar | Mapping[str, Any],
    *,
    rank: int = 0,
    chunk: int = 0,
) -> Path:
    """Write frames as one chunk of a records folder (hand-made records, tests, conversions).

    Args:
        path: the records folder (created).
        gates: rows with the columns of :data:`GATE_COLUMNS` (and optionally ``gate_alpha``,
            else written as ``alpha``).
        images: rows with the columns of :data:`IMAGE_COLUMNS` (and any optional ones).
        sidecar: the sidecar, or its JSON mapping (``format`` and ``format_version`` are filled
            in).
        rank: the rank of the part's name.
        chunk: the chunk of the part's name.

    Returns:
        The folder.
    """
    folder = Path(path)
    if not isinstance(sidecar, Sidecar):
        sidecar = Sidecar.from_dict(dict(sidecar), where=str(folder))
    sidecar = replace(sidecar, format=FORMAT, format_version=FORMAT_VERSION)
    (folder / GATES_DIR).mkdir(parents=True, exist_ok=True)
    (folder / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    columns = {name: images[name] for name in images.columns}
    write_chunk(folder, rank, chunk, _gates_part(gates), images_table(columns))
    write_sidecar(folder, sidecar)
    return folder
