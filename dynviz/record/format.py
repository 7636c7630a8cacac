"""The records format in one place: one Arrow schema per table, the folder protocol and the one
atomic part writer (the layout is described in :mod:`dynviz.record`).

Everything that writes a records folder (:func:`dynviz.record.record`,
:func:`dynviz.record.write_records`) builds its tables with :func:`gates_table` and
:func:`images_table` and writes them with :func:`write_chunk` and :func:`write_sidecar`;
everything that reads one lists its parts with :func:`list_parts` and its sidecar with
:func:`read_sidecar`.

The protocol:

- ``records.json`` (:data:`SIDECAR`) is the typed :class:`~dynviz.record.sidecar.Sidecar`.
- ``gates/`` and ``images/`` hold one part per rank and chunk, named
  ``part-r{rank}-c{chunk}.parquet`` (:func:`part_name`).
- A part is written to a temporary file ``.part-r{rank}-c{chunk}.parquet.*.tmp`` in the same
  folder, flushed, fsynced and renamed (:func:`write_part`): a reader never sees half a part.
- A chunk's ``images`` part is written after its ``gates`` part and commits it; a ``gates`` part
  without its ``images`` part is left over from an interrupted run.
- The recorder's next run removes what an interrupted one left (temporary files, uncommitted
  ``gates`` parts) and any chunk with a torn part (a file under its final name with no Parquet
  footer, as a disk crash or a cut copy leaves it), and records those images again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dynviz.model import Direction
from dynviz.model.checkpoint import atomic_write
from dynviz.record.sidecar import RecordError, Sidecar

__all__ = [
    "AUG_FIELDS",
    "CONFUSION",
    "DECISIONS_DIR",
    "DECISION_COLUMNS",
    "DECISION_SCHEMA",
    "DIRECTIONS",
    "DIRECTION_DTYPE",
    "FORMAT",
    "FORMAT_VERSION",
    "GATES_DIR",
    "GATE_ALPHA",
    "GATE_COLUMNS",
    "GATE_SCHEMA",
    "IMAGES_DIR",
    "IMAGE_COLUMNS",
    "IMAGE_SCHEMA",
    "SIDECAR",
    "STAT_PREFIX",
    "decisions_table",
    "gates_table",
    "images_schema",
    "images_table",
    "list_parts",
    "part_name",
    "read_sidecar",
    "temp_part_rank",
    "write_chunk",
    "write_part",
    "write_sidecar",
]

FORMAT = "dynviz-records"
FORMAT_VERSION = 1
SIDECAR = "records.json"
GATES_DIR = "gates"
IMAGES_DIR = "images"
DECISIONS_DIR = "decisions"  # a gate-graph recording's table in place of gates/
DIRECTIONS: tuple[str, ...] = tuple(d.label for d in Direction)  # keep, up, down
DIRECTION_DTYPE = pd.CategoricalDtype(list(DIRECTIONS), ordered=True)

# ------------------------------------------------------------------------------ schemas
GATE_ALPHA = "gate_alpha"
"""The gates table's column of the gates' own alpha before the closing rule (float32): equal to
``alpha`` on open paths; on a path closed at ``alpha <= active_threshold``, the value it was
closed at. Records written before it existed read it as ``alpha``."""

GATE_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("layer", pa.int16()),
        ("scale", pa.int16()),  # the stride 4/8/16/32
        ("scale_index", pa.int8()),
        ("direction", pa.dictionary(pa.int8(), pa.string())),  # codes into DIRECTIONS
        ("alpha", pa.float32()),  # the alpha the route used (0 on a closed path)
        ("active", pa.bool_()),  # whether the path ran (alpha > active_threshold)
        (GATE_ALPHA, pa.float32()),
    ]
)
"""Every ``gates`` part, exactly (one row per image and path)."""

DECISION_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("point", pa.dictionary(pa.int32(), pa.string())),  # the gate point's name
        ("option", pa.dictionary(pa.int32(), pa.string())),  # the option's name
        ("value", pa.float32()),  # the option's value (probability, weight); NaN: not reached
        ("ran", pa.bool_()),  # whether the option ran for the image
    ]
)
"""Every ``decisions`` part of a gate-graph recording (one row per image, point and option;
the points and options are the sidecar's ``graph``)."""

IMAGE_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("real_gmacs", pa.float64()),
        ("expected_gmacs", pa.float64()),
        ("miou", pa.float64()),
        ("pixel_accuracy", pa.float64()),
        ("height", pa.int32()),
        ("width", pa.int32()),
    ]
)
"""The required columns of an ``images`` part; :func:`images_schema` adds the optional ones."""

CONFUSION = pa.field("confusion", pa.list_(pa.int64()))
"""The image's flattened ``num_classes x num_classes`` confusion matrix (row = target)."""

AUG_FIELDS = (
    pa.field("source_image_id", pa.string()),
    pa.field("aug_scale", pa.float64()),
    pa.field("aug_flip", pa.bool_()),
)
"""The columns of records made with test-time augmentation (``dynviz record --aug``)."""

STAT_PREFIX = "stat_"
"""Prefix of the data set's per-image statistics (float64)."""

_OPTIONAL_IMAGE_FIELDS = {f.name: f for f in (CONFUSION, *AUG_FIELDS)}


def _kind(t: pa.DataType) -> str:
    """The pandas dtype name a column of type ``t`` reads as."""
    if pa.types.is_dictionary(t):
        return "category"
    if pa.types.is_string(t):
        return "string"
    return np.dtype(t.to_pandas_dtype()).name


DECISION_COLUMNS: dict[str, str] = {f.name: _kind(f.type) for f in DECISION_SCHEMA}
"""Columns of the ``decisions`` table and their dtypes."""

GATE_COLUMNS: dict[str, str] = {f.name: _kind(f.type) for f in GATE_SCHEMA if f.name != GATE_ALPHA}
"""Required columns of the ``gates`` table and their dtypes (:data:`GATE_SCHEMA` without
:data:`GATE_ALPHA`, which older parts lack): ``alpha`` is the alpha the route used (0 on a
closed path), ``active`` whether the path ran (``alpha > active_threshold``)."""

IMAGE_COLUMNS: dict[str, str] = {f.name: _kind(f.type) for f in IMAGE_SCHEMA}
"""Required columns of the ``images`` table and their dtypes (plus optional ``confusion``,
``stat_*`` and, in records made with ``--aug``, ``source_image_id``, ``aug_scale`` and
``aug_flip``)."""


def images_schema(names: Iterable[str]) -> pa.Schema:
    """The schema of an ``images`` part with these columns, in this order: the types of
    :data:`IMAGE_SCHEMA`, :data:`CONFUSION`, :data:`AUG_FIELDS` and float64 for ``stat_*``;
    any other column keeps ``None`` as its type (inferred by :func:`images_table`)."""
    fields = []
    for name in names:
        if name in IMAGE_SCHEMA.names:
            fields.append(IMAGE_SCHEMA.field(name))
        elif name in _OPTIONAL_IMAGE_FIELDS:
            fields.append(_OPTIONAL_IMAGE_FIELDS[name])
        elif name.startswith(STAT_PREFIX):
            fields.append(pa.field(name, pa.float64()))
        else:
            raise KeyError(name)
    return pa.schema(fields)


def gates_table(
    *,
    image_id: Sequence[str] | np.ndarray,
    layer: np.ndarray,
    scale: np.ndarray,
    scale_index: np.ndarray,
    direction: np.ndarray,
    alpha: np.ndarray,
    active: np.ndarray,
    gate_alpha: np.ndarray,
) -> pa.Table:
    """A ``gates`` part in :data:`GATE_SCHEMA` from one array per column (``direction``: codes
    into :data:`DIRECTIONS`)."""
    arrays = [
        pa.array(image_id, type=pa.string()),
        pa.array(np.asarray(layer).astype(np.int16)),
        pa.array(np.asarray(scale).astype(np.int16)),
        pa.array(np.asarray(scale_index).astype(np.int8)),
        pa.DictionaryArray.from_arrays(
            pa.array(np.asarray(direction).astype(np.int8)), pa.array(list(DIRECTIONS))
        ),
        pa.array(np.asarray(alpha).astype(np.float32)),
        pa.array(np.asarray(active).astype(bool)),
        pa.array(np.asarray(gate_alpha).astype(np.float32)),
    ]
    return pa.Table.from_arrays(arrays, schema=GATE_SCHEMA)


def decisions_table(
    *,
    image_id: Sequence[str] | np.ndarray,
    point: Sequence[str] | np.ndarray,
    option: Sequence[str] | np.ndarray,
    value: np.ndarray,
    ran: np.ndarray,
) -> pa.Table:
    """A ``decisions`` part in :data:`DECISION_SCHEMA` from one array per column."""
    arrays = [
        pa.array(image_id, type=pa.string()),
        pa.array(point, type=pa.string()).dictionary_encode().cast(DECISION_SCHEMA.field(1).type),
        pa.array(option, type=pa.string()).dictionary_encode().cast(DECISION_SCHEMA.field(2).type),
        pa.array(np.asarray(value).astype(np.float32)),
        pa.array(np.asarray(ran).astype(bool)),
    ]
    return pa.Table.from_arrays(arrays, schema=DECISION_SCHEMA)


def images_table(columns: Mapping[str, Any]) -> pa.Table:
    """An ``images`` part from one sequence per column, typed by :func:`images_schema` (a
    column the format does not name keeps the type Arrow infers)."""
    fields = []
    for name, values in columns.items():
        try:
            kind = images_schema([name]).field(0).type
        except KeyError:
            kind = None
        fields.append(pa.array(values, type=kind))
    return pa.Table.from_arrays(fields, names=list(columns))


# ------------------------------------------------------------------------ the folder
_PART = re.compile(r"^part-r(\d+)-c(\d+)\.parquet$")
_TEMP_PART = re.compile(r"^\.part-r(\d+)-")


def part_name(rank: int, chunk: int) -> str:
    """The file name of a rank's chunk, in ``gates/`` and in ``images/``."""
    return f"part-r{rank}-c{chunk}.parquet"


def list_parts(folder: Path) -> dict[tuple[int, int], Path]:
    """The part files of ``folder`` (``gates/`` or ``images/``) by ``(rank, chunk)``; nothing
    when the folder does not exist."""
    out = {}
    if folder.is_dir():
        for file in folder.iterdir():
            match = _PART.match(file.name)
            if match:
                out[(int(match[1]), int(match[2]))] = file
    return out


def temp_part_rank(file: Path) -> int | None:
    """The rank whose interrupted :func:`write_part` left the temporary ``file`` (None when it
    is not one)."""
    match = _TEMP_PART.match(file.name)
    return int(match[1]) if match and file.name.endswith(".tmp") else None


def write_part(table: pa.Table, path: Path) -> None:
    """Write one part atomically: a temporary file in the same folder, fsync, rename."""
    atomic_write(path, lambda handle: pq.write_table(table, handle, compression="zstd"))


def write_chunk(
    folder: Path,
    rank: int,
    chunk: int,
    gates: pa.Table,
    images: pa.Table,
    *,
    gates_dir: str = GATES_DIR,
) -> str:
    """Write a chunk's two parts, ``images`` last (it commits the chunk); returns the part
    name. When the ``images`` part cannot be written (a full disk), the ``gates`` part is
    removed again: a failed write leaves no part of the chunk. A gate-graph recording writes
    its ``decisions`` part in place of ``gates`` (``gates_dir=DECISIONS_DIR``)."""
    name = part_name(rank, chunk)
    write_part(gates, folder / gates_dir / name)
    try:
        write_part(images, folder / IMAGES_DIR / name)
    except BaseException:
        (folder / gates_dir / name).unlink(missing_ok=True)
        raise
    return name


def write_sidecar(folder: Path, sidecar: Sidecar) -> None:
    """Write ``records.json`` atomically."""
    text = json.dumps(sidecar.to_dict(), indent=2, default=str) + "\n"
    atomic_write(folder / SIDECAR, lambda handle: handle.write(text.encode("utf-8")))


def read_sidecar(folder: Path) -> Sidecar:
    """The typed sidecar of a records folder.

    Raises:
        RecordError: no folder or no sidecar, not JSON, not a dynviz records sidecar, a newer
            format version, or a value of the wrong type (naming the file and key).
    """
    file = folder / SIDECAR
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if not folder.exists():
            raise RecordError(f"{folder}: no such records folder") from None
        raise RecordError(f"{folder}: not a records folder (no {SIDECAR})") from None
    except (OSError, json.JSONDecodeError) as err:
        raise RecordError(f"{file}: cannot read the sidecar ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RecordError(f"{file}: not a dynviz records sidecar (no format tag {FORMAT!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RecordError(
            f"{file}: records format version {version!r} is newer than this dynviz "
            f"understands ({FORMAT_VERSION}); upgrade dynviz"
        )
    return Sidecar.from_dict(meta, where=str(file))  # a value of the wrong type fails here
