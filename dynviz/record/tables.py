"""The records' tables as pandas frames: reading and validating a records folder
(:func:`read_records`), combining several records, and writing frames as a chunk
(:func:`write_records`). The schemas, the folder protocol and the part writer are
:mod:`dynviz.record.format`; the layout is described in :mod:`dynviz.record`. It runs over 500
lines: reading a folder part by part under the policy below belongs with the validation it
applies, and writing with the reading it must match.

Damaged records (the policy every reader follows: ``dynviz analyze``, ``dynviz extract``, the
notebook and the explorer):

- No sidecar (``records.json``), a sidecar that is not JSON, or one of a newer format version:
  a :class:`~dynviz.record.sidecar.RecordError` naming the file and the fault; nothing is read.
- A damaged part (a zero-byte or truncated Parquet file, a part of another schema, a wrong
  column type, a chunk's ``images`` part without its ``gates`` part): by default the chunk
  (both its parts) is skipped, with one warning per chunk naming the file, the fault and the
  images lost; :attr:`Records.skipped` lists them and :attr:`Records.skipped_note` says it in
  one line. With ``strict=True`` (``--strict`` on the command line) the first one is a
  :class:`~dynviz.record.sidecar.RecordError` instead. When no part is readable the records
  are unusable: an error either way.
- A ``gates`` part without its ``images`` part is what an interrupted recording leaves (the
  images part commits a chunk): ignored, with a warning, in both modes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dynviz.gates import GateGraph, routing_decisions
from dynviz.model import RoutingNetwork, RoutingSpaceConfig
from dynviz.model.route import Route
from dynviz.record.format import (
    DECISION_COLUMNS,
    DECISIONS_DIR,
    DIRECTION_DTYPE,
    DIRECTIONS,
    FORMAT,
    FORMAT_VERSION,
    GATE_ALPHA,
    GATE_COLUMNS,
    GATES_DIR,
    IMAGE_COLUMNS,
    IMAGES_DIR,
    SIDECAR,
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
class SkippedPart:
    """A chunk :func:`read_records` left out because one of its parts is damaged."""

    file: Path  # the damaged part (the chunk's other part is skipped with it)
    fault: str  # what is wrong with it, e.g. "empty file (0 bytes)"
    images: int | None  # the images the chunk held, None when neither part says

    def __str__(self) -> str:
        lost = "? images" if self.images is None else _count(self.images, "image")
        return f"{self.file}: {self.fault} ({lost} lost)"

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.file), "fault": self.fault, "images": self.images}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


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
        skipped: the damaged chunks left out by :func:`read_records` (empty when none).
    """

    gates: pd.DataFrame
    images: pd.DataFrame
    sidecar: Sidecar = field(default_factory=Sidecar)
    path: Path | None = None
    skipped: tuple[SkippedPart, ...] = ()
    decision_frame: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        """``"routing-space"`` or ``"gate-graph"`` (:attr:`Sidecar.kind`)."""
        return self.sidecar.kind

    @property
    def graph(self) -> GateGraph:
        """The recorded network's gate graph (the routing space's, for routing-space
        records)."""
        return self.sidecar.graph

    @cached_property
    def decisions(self) -> pd.DataFrame:
        """One row per (image, gate point, option): ``image_id``, ``point``, ``option``,
        ``value``, ``ran`` (:data:`~dynviz.record.format.DECISION_COLUMNS`). For a
        routing-space recording, its ``gates`` table read as decisions
        (:func:`dynviz.gates.routing_decisions`): every analysis of any gate graph reads
        this."""
        if self.decision_frame is not None:
            return self.decision_frame
        return routing_decisions(self.gates)

    @property
    def images_lost(self) -> int | None:
        """The images of the skipped chunks (None when a skipped chunk does not say)."""
        counts = [s.images for s in self.skipped]
        return None if None in counts else sum(c for c in counts if c is not None)

    @property
    def skipped_note(self) -> str:
        """What :func:`read_records` skipped, in one line ("" when nothing)."""
        if not self.skipped:
            return ""
        lost = self.images_lost
        shown = "; ".join(f"{s.file}: {s.fault}" for s in self.skipped[:3])
        more = f"; and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
        lost_text = (
            "an unknown number of images lost"
            if lost is None
            else f"{lost} of {len(self.images) + lost} images lost"
        )
        return (
            f"{self._where}: skipped {_count(len(self.skipped), 'damaged part')} "
            f"({lost_text}): {shown}{more}"
        )

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


def _schema_fault(schema: pa.Schema, columns: Mapping[str, str], what: str) -> str:
    """What is wrong with a part's columns ("" when nothing)."""
    names = set(schema.names)
    missing = [c for c in columns if c not in names]
    if missing:
        if len(missing) == len(columns):  # a file of another table or program
            has = ", ".join(schema.names[:8]) + (", ..." if len(schema.names) > 8 else "")
            return f"not a {what} part (columns {has or 'none'}; expected {', '.join(columns)})"
        return f"missing column(s) {', '.join(missing)}; expected {', '.join(columns)}"
    for name, kind in columns.items():
        t = schema.field(name).type
        if not _check_field(t, kind):
            return f"column {name!r} has type {t}, expected {kind}"
    for name in schema.names:
        if name.startswith(STAT_PREFIX):
            t = schema.field(name).type
            if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
                return f"column {name!r} has type {t}, expected float64"
    return ""


def _arrow_to_pandas(kind: pa.DataType) -> Any:
    """pandas dtypes for Arrow types: strings stay Arrow-backed (no Python objects)."""
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pd.StringDtype("pyarrow")
    return None


class _DamagedPart(Exception):
    """A part that cannot be read (internal: :func:`read_records` skips it or raises)."""

    def __init__(self, file: Path, fault: str) -> None:
        super().__init__(f"{file}: {fault}")
        self.file = file
        self.fault = fault
        self.images: int | None = None  # the images of its chunk, when known


def _parquet_fault(file: Path, err: Exception) -> str:
    """A one-line description of why ``file`` is not a readable Parquet file."""
    try:
        size = file.stat().st_size
    except OSError as stat_err:
        return f"cannot read ({stat_err.strerror or stat_err})"
    if size == 0:
        return "empty file (0 bytes)"
    text = " ".join(str(err).split())
    if "magic bytes" in text:
        return f"truncated or not Parquet ({size} bytes, no Parquet footer)"
    return f"not a readable Parquet file ({text})"


def _read_part(file: Path, columns: Mapping[str, str], what: str) -> pa.Table:
    """One part, validated against ``columns``; :class:`_DamagedPart` when it is not usable."""
    categories = [name for name, kind in columns.items() if kind == "category"]
    try:
        schema = pq.read_schema(file)
    except (OSError, pa.ArrowException) as err:
        raise _DamagedPart(file, _parquet_fault(file, err)) from None
    fault = _schema_fault(schema, columns, what)
    if fault:
        raise _DamagedPart(file, fault)
    try:
        return pq.read_table(file, read_dictionary=categories)
    except (OSError, pa.ArrowException) as err:
        raise _DamagedPart(file, f"cannot read ({' '.join(str(err).split())})") from None


def _part_images(file: Path) -> int | None:
    """The rows an ``images`` part's footer claims (None when it has none)."""
    try:
        return int(pq.read_metadata(file).num_rows)
    except (OSError, pa.ArrowException):
        return None


def _read_chunk(
    gates_file: Path | None, images_file: Path, table: str = GATES_DIR
) -> tuple[pa.Table, pa.Table]:
    """A chunk's two parts; :class:`_DamagedPart` (its ``images`` attribute set to the images
    the chunk held, when known) when either is damaged. ``table`` is the chunk's other table:
    ``gates`` (routing space) or ``decisions`` (a gate graph)."""
    images: pa.Table | None = None
    columns = DECISION_COLUMNS if table == DECISIONS_DIR else GATE_COLUMNS
    try:
        images = _read_part(images_file, IMAGE_COLUMNS, "images")
        if gates_file is None:
            partner = images_file.parent.parent / table / images_file.name
            raise _DamagedPart(images_file, f"images part without its {table} part {partner}")
        return _read_part(gates_file, columns, table), images
    except _DamagedPart as damage:
        count = images.num_rows if images is not None else _part_images(images_file)
        if count is None and gates_file is not None and damage.file != gates_file:
            try:
                ids = pq.read_table(gates_file, columns=["image_id"]).column(0)
                count = len(ids.unique())
            except (OSError, pa.ArrowException, KeyError):
                count = None
        damage.images = count
        raise


def _concat(tables: Sequence[pa.Table], folder: Path) -> pd.DataFrame:
    try:
        table = pa.concat_tables(tables, promote_options="permissive").unify_dictionaries()
    except pa.ArrowException as err:
        raise RecordError(f"{folder}: parts with incompatible columns ({err})") from None
    return table.to_pandas(types_mapper=_arrow_to_pandas)


def _empty_frame(columns: Mapping[str, str], extra: Sequence[str] = ()) -> pd.DataFrame:
    data = {}
    for name, kind in columns.items():
        if kind == "category":
            data[name] = pd.Series([], dtype=DIRECTION_DTYPE if name == "direction" else "category")
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


def _normalise_decisions(decisions: pd.DataFrame, graph: GateGraph) -> pd.DataFrame:
    """Typed decisions, points and options as categories in the graph's order."""
    decisions = decisions.copy()
    decisions["image_id"] = decisions["image_id"].astype("string")
    decisions["point"] = (
        decisions["point"]
        .astype(str)
        .astype(pd.CategoricalDtype(list(graph.point_names), ordered=True))
    )
    options = list(dict.fromkeys(o.name for p in graph for o in p.options))
    decisions["option"] = decisions["option"].astype(str).astype(pd.CategoricalDtype(options))
    decisions["value"] = decisions["value"].astype("float32")
    decisions["ran"] = decisions["ran"].astype(bool)
    return decisions[list(DECISION_COLUMNS)]


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


def read_records(
    path: str | os.PathLike[str], *, model: RoutingNetwork | None = None, strict: bool = False
) -> Records:
    """Read and validate a records folder.

    Args:
        path: the folder ``dynviz record --out`` wrote.
        model: if given, refuse records made with another model config (:func:`check_model`).
        strict: refuse a damaged part instead of skipping its chunk (see the module
            docstring: by default each skipped chunk is a warning naming the file, and
            :attr:`Records.skipped` lists them).

    Returns:
        The :class:`Records`; ``gates.direction`` is an ordered category (keep, up, down).

    Raises:
        RecordError: no sidecar or an unreadable or newer one, no readable part, a damaged part
            (zero-byte, truncated, another schema, a wrong type; only with ``strict``), an
            image recorded twice, or a model mismatch; the message names the file.
    """
    folder = Path(path)
    gate_parts = list_parts(folder / GATES_DIR)
    image_parts = list_parts(folder / IMAGES_DIR)
    if not (folder / SIDECAR).exists() and folder.is_dir() and (gate_parts or image_parts):
        raise RecordError(
            f"{folder / SIDECAR}: missing (the folder holds {len(image_parts)} images "
            f"part(s) but no sidecar; the records cannot be read without it)"
        )
    sidecar = read_sidecar(folder)
    table = DECISIONS_DIR if sidecar.kind == "gate-graph" else GATES_DIR
    if table == DECISIONS_DIR:
        gate_parts = list_parts(folder / DECISIONS_DIR)
    orphans = sorted(set(gate_parts) - set(image_parts))
    if orphans:
        logger.warning(
            "%s: ignoring %d %s part(s) without their images part (an interrupted "
            "run; recording again completes it): %s",
            folder,
            len(orphans),
            table,
            ", ".join(gate_parts[k].name for k in orphans),
        )
    gate_tables, image_tables, skipped = [], [], []
    for key in sorted(image_parts):
        try:
            gates_part, images_part = _read_chunk(gate_parts.get(key), image_parts[key], table)
        except _DamagedPart as damage:
            if strict:
                raise RecordError(str(damage)) from None
            part = SkippedPart(damage.file, damage.fault, damage.images)
            logger.warning("%s; skipped with its chunk (--strict, strict=True: refused)", part)
            skipped.append(part)
            continue
        gate_tables.append(gates_part)
        image_tables.append(images_part)
    if skipped and not image_tables:
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise RecordError(f"{skipped[0].file}: {skipped[0].fault}{more}; no readable part left")
    columns = DECISION_COLUMNS if table == DECISIONS_DIR else GATE_COLUMNS
    if image_tables:
        images = _concat(image_tables, folder / IMAGES_DIR)
        gates = _concat(gate_tables, folder / table)
    else:
        images, gates = _empty_frame(IMAGE_COLUMNS), _empty_frame(columns)
    images = _normalise_images(images)
    decisions = None
    if table == DECISIONS_DIR:
        decisions = _normalise_decisions(gates, sidecar.graph)
        gates = _normalise_gates(_empty_frame(GATE_COLUMNS), str(folder / GATES_DIR))
    else:
        gates = _normalise_gates(gates, str(folder / GATES_DIR))
    duplicated = images["image_id"].duplicated()
    if duplicated.any():
        raise RecordError(
            f"{folder}: image {images['image_id'][duplicated].iloc[0]!r} is recorded more than once"
        )
    images = images.reset_index(drop=True)
    records = Records(
        gates=gates,
        images=images,
        sidecar=sidecar,
        path=folder,
        skipped=tuple(skipped),
        decision_frame=decisions,
    )
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
