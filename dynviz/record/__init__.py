"""Records: a model run over a data set, as tables (the analysis contract of the SPEC).

``dynviz record`` runs a network in eval mode over a data set (closed paths really skipped) and
writes a records folder::

    RECORDS_DIR/
      records.json                    sidecar: model config, route, checkpoint sha256, data, sizes
                                      (read as :class:`~dynviz.record.sidecar.Sidecar`)
      gates/part-r{rank}-c{chunk}.parquet
      images/part-r{rank}-c{chunk}.parquet

``gates`` has one row per (image, path) for every path that exists in the network:
``image_id`` (str), ``layer`` (int16), ``scale`` (int16, the stride 4/8/16/32), ``scale_index``
(int8), ``direction`` (category keep/up/down), ``alpha`` (float32, 0 where the path was closed or
its cell received nothing), ``active`` (bool, alpha above the model's threshold) and
``gate_alpha`` (float32, the gate's own alpha before the closing rule: below a raised threshold
it keeps the value the path was closed at; records written before it read it as ``alpha``).

``images`` has one row per image: ``image_id``, ``real_gmacs`` and ``expected_gmacs`` (per-image
cost, :mod:`dynviz.model.cost`), ``miou`` and ``pixel_accuracy`` of that image (NaN when it has no
counted pixel), ``height``, ``width`` (the input size), ``confusion`` (the image's flattened
``num_classes x num_classes`` confusion matrix, so data-set mIoU can be summed from the records)
and every statistic of the data set as ``stat_<key>`` (float64).

With test-time augmentation (``dynviz record --aug flip scales=0.5,1,1.5``) every image has one
row per forward pass: ``image_id`` is ``"<id>@<scale>"`` or ``"<id>@<scale>+flip"``, and three
more columns say which (``source_image_id`` string, ``aug_scale`` float64, ``aug_flip`` bool); the
gates, size and GMACs are those of that pass, the scores those of the averaged prediction.
Without ``--aug`` the tables are exactly as above.

The schemas (:data:`GATE_SCHEMA`, :data:`IMAGE_SCHEMA`), the part naming and the one atomic part
writer are :mod:`dynviz.record.format`. Part files are written atomically (temporary file,
fsync, rename); the ``images`` part of a chunk is written after its ``gates`` part and commits
it. A re-run, a resumed run or a run with another
number of ranks skips the images already recorded, so rows are never duplicated; a ``gates``
part without its ``images`` part (a crash between the two) is removed on the next run and ignored
when reading.

Every analysis reads these tables through :func:`read_records` and the sidecar through
:attr:`Records.sidecar` (or :func:`read_sidecar`), never the model. Modules: ``format``
(schemas, folder protocol, writer), ``sidecar`` (the typed sidecar), ``tables`` (reading and
combining), ``rows`` (rows from forward passes), ``recorder`` (the recording loop).
:func:`record_batch` gives the same rows for one batch in memory (no folder), with the
prediction of the same forward pass.
"""

from __future__ import annotations

from dynviz.record.format import (
    DIRECTION_DTYPE,
    DIRECTIONS,
    FORMAT,
    FORMAT_VERSION,
    GATE_ALPHA,
    GATE_COLUMNS,
    GATE_SCHEMA,
    IMAGE_COLUMNS,
    IMAGE_SCHEMA,
    SIDECAR,
    read_sidecar,
)
from dynviz.record.recorder import RecordResult, record
from dynviz.record.rows import (
    RecordChunk,
    RecordedBatch,
    load_records_model,
    path_cost_frame,
    record_batch,
)
from dynviz.record.sidecar import CheckpointRef, RecordError, Sidecar, SidecarError
from dynviz.record.tables import (
    Records,
    SkippedPart,
    check_model,
    combine_records,
    label_frames,
    read_records,
    record_labels,
    write_records,
)

__all__ = [
    "CheckpointRef",
    "DIRECTIONS",
    "DIRECTION_DTYPE",
    "FORMAT",
    "FORMAT_VERSION",
    "GATE_ALPHA",
    "GATE_COLUMNS",
    "GATE_SCHEMA",
    "IMAGE_COLUMNS",
    "IMAGE_SCHEMA",
    "SIDECAR",
    "Sidecar",
    "SidecarError",
    "SkippedPart",
    "RecordError",
    "RecordChunk",
    "RecordResult",
    "RecordedBatch",
    "Records",
    "check_model",
    "combine_records",
    "label_frames",
    "load_records_model",
    "path_cost_frame",
    "read_records",
    "read_sidecar",
    "record",
    "record_batch",
    "record_labels",
    "write_records",
]
