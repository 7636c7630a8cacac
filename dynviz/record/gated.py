"""Rows of a gate-graph recording: any gated network (:mod:`dynviz.gates`) over a data set.

:func:`dynviz.record.record` records such a network the way it records a routing network, into
the same folder layout, with a ``decisions/`` table in place of ``gates/``
(:data:`~dynviz.record.format.DECISION_SCHEMA`: one row per image, gate point and option) and
the same ``images/`` table:

- ``real_gmacs``: ``base_macs`` plus the cost of every option that ran, in GMACs, where the
  graph gives every cost (NaN otherwise);
- ``expected_gmacs``: ``base_macs`` plus each option's cost times its value (the gate's
  probability or weight, as a budget loss sees it), NaN without costs;
- ``miou``, ``pixel_accuracy``, ``confusion``: the segmentation scores of the image (the network
  returns ``(B, K, H, W)`` logits: a tensor, an object with ``.logits`` or a mapping with
  ``"out"``);
- ``height``, ``width``, ``stat_*`` as for the routing space.

The sidecar holds the graph (key ``graph``) and the entry point that built the network (key
``builder``, ``module:function``), so that ``dynviz analyze``, ``extract`` and ``app`` read the
records without the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F  # noqa: N812

from dynviz.gates import Decision, GateGraph, collect
from dynviz.model import ConfigError
from dynviz.record.format import decisions_table, images_table
from dynviz.record.rows import confusion_rows, image_columns

__all__ = ["GatedChunk", "add_gated_batch", "logits_of"]

GIGA = 1e9


def logits_of(out: Any) -> torch.Tensor:
    """The ``(B, K, H, W)`` logits of a network's output: a tensor, an object with ``.logits``
    or a mapping with ``"out"`` (torchvision's segmentation models)."""
    if isinstance(out, torch.Tensor):
        logits = out
    elif isinstance(out, Mapping) and "out" in out:
        logits = out["out"]
    elif isinstance(getattr(out, "logits", None), torch.Tensor):
        logits = out.logits
    else:
        raise ConfigError(
            f"the network returned {type(out).__name__}; dynviz records segmentation logits "
            "(a (B, K, H, W) tensor, an object with .logits or a mapping with 'out')"
        )
    if logits.dim() != 4:
        raise ConfigError(f"the network returned logits of shape {tuple(logits.shape)}, not 4-D")
    return logits


class GatedChunk:
    """Rows of a gate-graph recording, collected per batch (one part file)."""

    table_dir = "decisions"

    def __init__(self, graph: GateGraph) -> None:
        self.graph = graph
        self.points = np.asarray(
            [p.name for p in graph for _ in p.options], dtype=object
        )  # (P,) one entry per (point, option) column
        self.options = np.asarray([o.name for p in graph for o in p.options], dtype=object)
        self.width = self.points.size
        macs = [o.macs for p in graph for o in p.options]
        self.macs = None if not graph.has_costs else np.asarray(macs, dtype=np.float64)
        self.ids: list[str] = []
        self.values: list[np.ndarray] = []  # (b, P) float32
        self.ran: list[np.ndarray] = []  # (b, P) bool
        self.confusion: list[np.ndarray] = []
        self.sizes: list[tuple[int, int]] = []
        self.stats: list[Mapping[str, float]] = []

    def __len__(self) -> int:
        return len(self.ids)

    def add(
        self,
        ids: Sequence[str],
        decisions: Mapping[str, Decision],
        confusion: np.ndarray,
        size: tuple[int, int],
        stats: Sequence[Mapping[str, float]],
    ) -> None:
        values = torch.cat([decisions[p.name].values for p in self.graph], 1)
        ran = torch.cat([decisions[p.name].ran for p in self.graph], 1)
        self.ids.extend(ids)
        self.values.append(values.numpy().astype(np.float32))
        self.ran.append(ran.numpy().astype(bool))
        self.confusion.append(confusion)
        self.sizes.extend([size] * len(ids))
        self.stats.extend(stats)

    def tables(self) -> tuple[pa.Table, pa.Table]:
        n, p = len(self.ids), self.width
        values = np.concatenate(self.values, 0)  # (n, P)
        ran = np.concatenate(self.ran, 0)
        decisions = decisions_table(
            image_id=np.repeat(np.asarray(self.ids, dtype=object), p),
            point=np.tile(self.points, n),
            option=np.tile(self.options, n),
            value=values.reshape(-1),
            ran=ran.reshape(-1),
        )
        if self.macs is not None:
            base = float(self.graph.base_macs or 0.0)
            real = (base + ran.astype(np.float64) @ self.macs) / GIGA
            expected = (base + np.nan_to_num(values.astype(np.float64)) @ self.macs) / GIGA
        else:
            real = expected = np.full(n, np.nan)
        columns = image_columns(self.ids, real, expected, self.confusion, self.sizes, self.stats)
        return decisions, images_table(columns)


def add_gated_batch(
    model: Callable[[torch.Tensor], Any],
    graph: GateGraph,
    chunk: GatedChunk,
    images: torch.Tensor,
    labels: torch.Tensor,
    ids: Sequence[str],
    stats: Sequence[Mapping[str, float]],
    *,
    num_classes: int,
    ignore: int,
) -> torch.Tensor:
    """Run ``model`` on a batch under :func:`dynviz.gates.collect`, add its rows to ``chunk``
    and return the ``(B, H, W)`` prediction (at the labels' size)."""
    with collect(graph) as seen:
        logits = logits_of(model(images))
    decisions = seen.complete()
    for name, decision in decisions.items():
        if decision.values.shape[0] != images.shape[0]:
            raise ConfigError(
                f"gate point {name!r} reported {decision.values.shape[0]} inputs for a batch "
                f"of {images.shape[0]}"
            )
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    if logits.shape[1] < num_classes:
        raise ConfigError(
            f"the data set has {num_classes} classes but the network predicts {logits.shape[1]}"
        )
    pred = logits.argmax(1)
    confusion = confusion_rows(pred, labels, logits.shape[1], ignore, ids)
    chunk.add(
        ids,
        decisions,
        confusion.cpu().numpy(),
        (int(images.shape[-2]), int(images.shape[-1])),
        stats,
    )
    return pred
