"""The network side of records: rows in the records' schema from forward passes
(:class:`RecordChunk`, filled by :func:`add_batch`; :func:`record_batch` for one batch in
memory), the per-path cost frame, and loading the network of a records source. The recording
loop that writes them is :mod:`dynviz.record.recorder`."""

from __future__ import annotations

import contextlib
import functools
import os
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch import nn

from dynviz.inference.folding import inference_form
from dynviz.inference.tta import Augment, infer
from dynviz.model import ConfigError, RoutingNetwork, RoutingSpaceConfig, build_model
from dynviz.model.cost import CostTable, Counting, cost_table
from dynviz.model.route import Route
from dynviz.record.format import DIRECTION_DTYPE, STAT_PREFIX, gates_table, images_table
from dynviz.record.tables import table_frames
from dynviz.units import GIGA

__all__ = [
    "RecordChunk",
    "RecordedBatch",
    "add_batch",
    "chunk_factory",
    "confusion_rows",
    "eval_mode",
    "folded_form",
    "image_columns",
    "image_scores",
    "load_records_model",
    "path_cost_frame",
    "record_batch",
]


def _own(gate_alpha: torch.Tensor | None) -> np.ndarray | None:
    """A forward's own gate alphas as float32 numpy (None stays None)."""
    return None if gate_alpha is None else gate_alpha.float().cpu().numpy()


class RecordChunk:
    """Rows in the records' schema, collected per batch as numpy arrays: one part file of
    :func:`record`, or the in-memory frames of :func:`record_batch`. The per-image costs and
    accuracies are computed for the whole chunk at once (cheaper than per batch: the cost
    model's propagation is a Python loop over cells, vectorised over images)."""

    def __init__(
        self,
        paths: tuple[np.ndarray, np.ndarray, np.ndarray],
        tables: Callable[[int, int], CostTable],
        *,
        gates_ran: bool,
        is_active: Callable[[Any], Any],
    ) -> None:
        self.layer, self.scale_index, self.direction = paths
        self.cost_tables = tables
        self.gates_ran = gates_ran
        self.is_active = is_active  # the network's active rule (RoutingSpaceConfig.is_active)
        self.ids: list[str] = []
        self.gates: list[np.ndarray] = []
        self.own: list[np.ndarray] = []  # the gates' own alphas, before the closing rule
        self.confusion: list[np.ndarray] = []
        self.sizes: list[tuple[int, int]] = []
        self.stats: list[Mapping[str, float]] = []
        self.extra: dict[str, list[Any]] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def add(
        self,
        ids: Sequence[str],
        gates: np.ndarray,
        confusion: np.ndarray,
        size: tuple[int, int],
        stats: Sequence[Mapping[str, float]],
        extra: Mapping[str, Sequence[Any]] | None = None,
        *,
        gate_alpha: np.ndarray | None = None,
    ) -> None:
        """One batch: ``gates`` the alphas the route used, ``gate_alpha`` the gates' own before
        the closing rule (default: ``gates``, for a network that closes nothing)."""
        for key, values in (extra or {}).items():
            self.extra.setdefault(key, []).extend(values)
        self.ids.extend(ids)
        self.gates.append(gates)  # (b, L + 1, S, 3) float32
        self.own.append(gates if gate_alpha is None else gate_alpha)
        self.confusion.append(confusion)  # (b, K * K) int64
        self.sizes.extend([size] * len(ids))
        self.stats.extend(stats)

    def _costs(self, gates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        real = np.empty(len(gates))
        expected = np.empty(len(gates))
        sizes = np.asarray(self.sizes).reshape(-1, 2)
        for height, width in {tuple(s) for s in sizes.tolist()}:
            index = np.flatnonzero((sizes[:, 0] == height) & (sizes[:, 1] == width))
            table = self.cost_tables(height, width)
            g = torch.from_numpy(gates[index])
            real[index] = table.real_from(g, self.is_active(g), gates_ran=self.gates_ran).numpy()
            expected[index] = table.expected(g.double(), gates_ran=self.gates_ran).numpy()
        return real / GIGA, expected / GIGA

    def tables(self) -> tuple[pa.Table, pa.Table]:
        n, p = len(self.ids), self.layer.size
        gates = np.concatenate(self.gates, 0)  # (n, L + 1, S, 3)
        alpha = gates[:, self.layer, self.scale_index, self.direction].reshape(-1)  # (n * P,)
        own = np.concatenate(self.own, 0)[:, self.layer, self.scale_index, self.direction]
        scale_index = np.tile(self.scale_index, n)
        gate_table = gates_table(
            image_id=np.repeat(np.asarray(self.ids, dtype=object), p),
            layer=np.tile(self.layer, n),
            scale=4 * 2**scale_index,
            scale_index=scale_index,
            direction=np.tile(self.direction, n),
            alpha=alpha,
            active=self.is_active(alpha),
            gate_alpha=own.reshape(-1),
        )
        real, expected = self._costs(gates)
        columns = image_columns(
            self.ids, real, expected, self.confusion, self.sizes, self.stats, extra=self.extra
        )
        return gate_table, images_table(columns)

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(gates, images)`` as :func:`~dynviz.record.read_records` would read them back
        from the part file, without writing it."""
        return table_frames(*self.tables())


def image_columns(
    ids: Sequence[str],
    real: np.ndarray,
    expected: np.ndarray,
    confusion: Sequence[np.ndarray],
    sizes: Sequence[tuple[int, int]],
    stats: Sequence[Mapping[str, float]],
    *,
    extra: Mapping[str, Sequence[Any]] | None = None,
) -> dict[str, Any]:
    """The ``images`` part's columns of a chunk, for routing-space and gate-graph recordings
    alike: ids, costs (GMACs), the scores of each image's confusion matrix (``confusion``: one
    ``(b, K * K)`` array per batch), sizes, ``extra`` columns and ``stat_*``."""
    matrix = np.concatenate(list(confusion), 0)  # (n, K * K)
    miou, accuracy = image_scores(matrix)
    size = np.asarray(sizes, dtype=np.int32).reshape(-1, 2)
    columns: dict[str, Any] = {
        "image_id": list(ids),
        "real_gmacs": real,
        "expected_gmacs": expected,
        "miou": miou,
        "pixel_accuracy": accuracy,
        "height": size[:, 0],
        "width": size[:, 1],
        "confusion": list(matrix),
    }
    columns.update(extra or {})  # the augmentation columns (--aug)
    for key in sorted({k for row in stats for k in row}):
        values = [float(row.get(key, np.nan)) for row in stats]
        columns[STAT_PREFIX + key] = np.asarray(values, dtype=np.float64)
    return columns


def image_scores(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image mIoU (classes present in target or prediction) and pixel accuracy from
    flattened confusion matrices ``(n, K * K)``; NaN for an image without counted pixels."""
    n = confusion.shape[0]
    k = int(round(confusion.shape[1] ** 0.5))
    matrix = confusion.reshape(n, k, k).astype(np.float64)
    tp = np.diagonal(matrix, axis1=1, axis2=2)
    union = matrix.sum(1) + matrix.sum(2) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        present = (union > 0).sum(1)
        miou = np.where(present > 0, np.nansum(iou, 1) / np.maximum(present, 1), np.nan)
        total = matrix.sum((1, 2))
        accuracy = np.where(total > 0, tp.sum(1) / np.maximum(total, 1), np.nan)
    return miou, accuracy


def confusion_rows(
    pred: torch.Tensor, labels: torch.Tensor, num_classes: int, ignore: int, ids: Sequence[str]
) -> torch.Tensor:
    """Per-image confusion matrices ``(B, K * K)`` (row = target) with one bincount.

    The bincount keeps one row per label value up to the largest, and the ignore label's row
    (255 for Cityscapes) is dropped afterwards: no boolean indexing and no ``where`` over the
    pixels, the slow steps on the CPU (0.43 -> 0.2 ms at 256x512). A negative or large ignore
    label is mapped to row K first. Labels that are neither a class nor ``ignore`` are a
    :class:`ConfigError` naming the image.
    """
    b, k = pred.shape[0], num_classes
    labels = labels.to(torch.int32)  # int32 arithmetic: a third faster than int64 on the CPU
    low, high = (int(v) for v in torch.aminmax(labels))
    row = ignore  # the row of the ignored pixels
    if not k <= ignore < DIRECT_ROWS:
        taken = (labels == k).flatten(1).any(1)  # label K itself would hide in the ignore row
        if bool(taken.any()):
            _label_error(ids[int(taken.nonzero()[0, 0])], [k], k, ignore)
        labels = torch.where(labels == ignore, k, labels)
        row = k
        low, high = (int(v) for v in torch.aminmax(labels))
    if low < 0 or high > max(k - 1, row):
        bad = (labels < 0) | ((labels >= k) & (labels != row))
        first = int(bad.flatten(1).any(1).nonzero()[0, 0])
        _label_error(ids[first], labels[first][bad[first]][:1000].tolist(), k, ignore)
    rows = max(high, k - 1) + 1  # one per label value 0..high
    index = labels * k + pred.to(torch.int32)  # (B, H, W) cell of each pixel
    if b > 1:
        index += torch.arange(b, dtype=torch.int32, device=pred.device).view(-1, 1, 1) * rows * k
    counts = torch.bincount(index.flatten(), minlength=b * rows * k).view(b, rows, k)
    stray = counts[:, k:].sum(-1)  # (B, rows - K) pixels of each label value past the classes
    if row < rows:
        stray[:, row - k] = 0
    if bool(stray.any()):
        first = int(stray.any(1).nonzero()[0, 0])
        _label_error(ids[first], [k + int(v) for v in stray[first].nonzero()[:, 0]], k, ignore)
    return counts[:, :k].reshape(b, k * k)


def _label_error(image_id: str, values: Sequence[int], k: int, ignore: int) -> NoReturn:
    raise ConfigError(
        f"image {image_id!r}: labels {sorted(set(values))[:10]} are outside [0, {k}) and not "
        f"ignore_index={ignore}"
    )


@dataclass(frozen=True)
class RecordedBatch:
    """One forward pass in the records' schema, in memory (:func:`record_batch`).

    Attributes:
        gates: the images' gate rows (:data:`~dynviz.record.GATE_COLUMNS`).
        images: one row per image (:data:`~dynviz.record.IMAGE_COLUMNS`, ``confusion`` and
            ``stat_*``).
        prediction: ``(B, H, W)`` uint8 class maps of the same forward pass.
    """

    gates: pd.DataFrame
    images: pd.DataFrame
    prediction: np.ndarray


def _path_index(net: RoutingNetwork) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(layer, scale index, direction)`` of every path the network has."""
    mask = net.route_mask.cpu().numpy()  # (L + 1, S, 3) paths that exist
    layer, scale, direction = (a.astype(np.int64) for a in np.nonzero(mask))
    return layer, scale, direction


def record_batch(
    model: RoutingNetwork,
    images: torch.Tensor,
    *,
    image_ids: Sequence[str],
    labels: torch.Tensor | None = None,
    route: Route | None = None,
    stats: Sequence[Mapping[str, float]] | None = None,
    ignore_index: int = 255,
    counting: Counting | str = Counting.PAPER,
) -> RecordedBatch:
    """Run ``model`` once on a batch and return its rows in the records' schema and its
    prediction, in memory: what :func:`record` would write for these images (the explorer's
    uploads use it; nothing touches the disk).

    Args:
        model: the network; its inference form (BN folded, fused kernels: :func:`folded_form`)
            runs in eval mode (real skipping) under ``torch.inference_mode()``.
        images: ``(B, 3, H, W)`` normalised images.
        image_ids: one id per image.
        labels: ``(B, H, W)`` targets (default: every pixel ``ignore_index``, so the accuracy
            columns are NaN).
        route: force this route instead of the gates.
        stats: per-image statistics (``stat_<key>`` columns).
        ignore_index: the label of unlabelled pixels.
        counting: the cost counting of ``real_gmacs`` and ``expected_gmacs``.
    """
    net: RoutingNetwork = getattr(model, "module", model)
    counting = Counting(counting)
    if len(image_ids) != images.shape[0]:
        raise ValueError(f"{len(image_ids)} image ids for {images.shape[0]} images")
    height, width = int(images.shape[-2]), int(images.shape[-1])
    if labels is None:
        labels = torch.full((images.shape[0], height, width), ignore_index, dtype=torch.int64)
    chunk = chunk_factory(net, route=route, counting=counting)()
    with eval_mode(net), torch.inference_mode():
        device = next(net.parameters()).device
        pred = add_batch(
            folded_form(net),
            chunk,
            images.to(device),
            labels.to(device),
            [str(i) for i in image_ids],
            list(stats) if stats is not None else [{} for _ in image_ids],
            route=route,
            ignore=ignore_index,
        )
    gates, frame = chunk.frames()
    return RecordedBatch(gates, frame, pred.to(torch.uint8).cpu().numpy())


_FOLDED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], nn.Module]] = (
    weakref.WeakKeyDictionary()
)


def folded_form(net: nn.Module) -> nn.Module:
    """:func:`~dynviz.inference.folding.inference_form` of ``net``, folded once and kept while
    its weights stay as they are (the explorer records one upload at a time with the same
    network). Any in-place change of a parameter or buffer (an optimiser step, a load) bumps
    its version counter and folds again."""
    versions = tuple(t._version for t in (*net.parameters(), *net.buffers()))
    kept = _FOLDED.get(net)
    if kept is not None and kept[0] == versions:
        return kept[1]
    runner = inference_form(net)
    _FOLDED[net] = (versions, runner)
    return runner


@contextlib.contextmanager
def eval_mode(net: nn.Module) -> Iterator[None]:
    """``net`` in eval mode for the block, then as it was. A network already in eval mode is not
    switched (``train()`` walks every module: 20 ms for layer16, more than a percent of
    recording 16 images at 256x512)."""
    training = [m for m in net.modules() if m.training]
    if not training:
        yield
        return
    net.eval()
    try:
        yield
    finally:
        for module in training:
            module.training = True


DIRECT_ROWS = 1024
"""An ignore label below this (and >= K) gets its own row in :func:`confusion_rows`'s bincount;
another is mapped to row K first."""


@functools.lru_cache(maxsize=32)
def _shared_cost_table(
    config: RoutingSpaceConfig, size: tuple[int, int], counting: Counting, route: Route | None
) -> CostTable:
    """:func:`cost_table`, built once per network and input size for every recording in the
    process (5 ms each for layer16; the records only read it)."""
    return cost_table(config, size, counting=counting, route=route)


def chunk_factory(
    net: RoutingNetwork, *, route: Route | None, counting: Counting
) -> Callable[[], RecordChunk]:
    """New empty chunks sharing one cost table per input size."""
    paths = _path_index(net)

    def table_of(height: int, width: int) -> CostTable:
        return _shared_cost_table(net.config, (height, width), counting, net.route)

    def new_chunk() -> RecordChunk:
        return RecordChunk(
            paths,
            table_of,
            gates_ran=bool(net.is_dynamic and route is None),
            is_active=net.config.is_active,
        )

    return new_chunk


def add_batch(
    net: RoutingNetwork,
    chunk: RecordChunk,
    images: torch.Tensor,
    labels: torch.Tensor,
    ids: Sequence[str],
    stats: Sequence[Mapping[str, float]],
    *,
    route: Route | None = None,
    aug: Augment | None = None,
    ignore: int = 255,
) -> torch.Tensor:
    """One batch: the forward pass (or passes, with ``aug``) and its rows into ``chunk``.

    Args:
        net: the network, in the mode to run (the caller sets eval and inference mode).
        chunk: where the rows go.
        images: ``(B, 3, H, W)`` normalised images on the network's device.
        labels: ``(B, H, W)`` targets on the same device.
        ids: one image id per image.
        stats: per-image statistics.
        route: force this route instead of the gates.
        aug: test-time augmentation: one row per image and variant.
        ignore: the label of unlabelled pixels.

    Returns:
        ``(B, H, W)`` the predicted classes (of the averaged prediction with ``aug``).
    """
    num_classes = net.config.num_classes
    if aug is None:
        out = net(images, route=route)
        pred = out.logits.max(1).indices  # (B, H, W); many times faster than argmax
        confusion = confusion_rows(pred, labels, num_classes, ignore, ids)
        chunk.add(
            ids,
            out.gates.float().cpu().numpy(),
            confusion.cpu().numpy(),
            (int(images.shape[-2]), int(images.shape[-1])),
            stats,
            gate_alpha=_own(out.gate_alpha),
        )
        return pred
    probs, forwards = infer(net, images, aug=aug, route=route)
    pred = probs.max(1).indices
    matrix = confusion_rows(pred, labels, num_classes, ignore, ids).cpu().numpy()
    for forward in forwards:
        chunk.add(
            [f"{i}@{forward.label}" for i in ids],
            forward.gates.numpy(),
            matrix,
            forward.size,
            stats,
            {
                "source_image_id": ids,
                "aug_scale": [forward.scale] * len(ids),
                "aug_flip": [forward.flip] * len(ids),
            },
            gate_alpha=_own(forward.gate_alpha),
        )
    return pred


# ------------------------------------------------------------------------------ helpers
def path_cost_frame(
    config: RoutingSpaceConfig, size: tuple[int, int], *, route: Route | None = None
) -> pd.DataFrame:
    """Per-path and per-cell backbone MACs of a network at an input size, as a frame.

    Columns: ``layer``, ``scale`` (stride), ``scale_index``, ``direction``, ``path_macs`` (the
    transform), ``op_macs`` (the cell operation of the path's source cell). The analyses use it
    to split a route's real cost by scale without touching the model.
    """
    table = cost_table(config, size, route=route)
    rows = []
    for layer, scale, d in config.paths:
        rows.append(
            {
                "layer": layer,
                "scale": config.stride(scale),
                "scale_index": scale,
                "direction": d.label,
                "path_macs": float(table.path[layer, scale, int(d)]),
                "op_macs": float(table.op[layer, scale]),
            }
        )
    frame = pd.DataFrame(rows)
    frame["direction"] = frame["direction"].astype(DIRECTION_DTYPE)
    return frame


def load_records_model(
    source: str | os.PathLike[str], *, num_classes: int | None = None
) -> tuple[RoutingNetwork, dict[str, Any]]:
    """The network of a run directory, checkpoint file, or model preset / YAML.

    Args:
        source: a run directory or ``.pt`` file (weights loaded), else a preset name or YAML
            path (an untrained network).
        num_classes: classes of an untrained network (default: the config's).

    Returns:
        ``(model, meta)`` in eval mode on the CPU. ``meta`` is the checkpoint's metadata (with
        ``path`` and ``sha256``), or ``{"path": None, "sha256": None, "model": source}``.
    """
    path = Path(source)
    if path.is_dir() or path.suffix == ".pt":
        from dynviz.model.checkpoint import load_model

        model, meta = load_model(path)
        if path.is_dir():
            meta.setdefault("run_dir", str(path))
        return model, meta
    overrides: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    model = build_model(str(source), **overrides).eval()
    return model, {"path": None, "sha256": None, "model": str(source), "iteration": None}
