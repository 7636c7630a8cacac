"""The recorder: run a network over a data set and write its records (one part per rank and
chunk, resumable without duplicates), and the helpers that relate records to their model."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from dynviz.inference.tta import Augment, infer, variant_label
from dynviz.model import ConfigError, RoutingNetwork, RoutingSpaceConfig, build_model
from dynviz.model.cost import CostTable, Counting, cost_table
from dynviz.model.route import Route
from dynviz.record.sidecar import Sidecar
from dynviz.record.tables import (
    _IDENTITY_DEFAULTS,
    _IDENTITY_KEYS,
    DIRECTION_DTYPE,
    DIRECTIONS,
    FORMAT,
    FORMAT_VERSION,
    GATES_DIR,
    IMAGES_DIR,
    SIDECAR,
    RecordError,
    _arrow_to_pandas,
    _atomic_write_table,
    _atomic_write_text,
    _normalise_gates,
    _normalise_images,
    _parts,
    _read_sidecar,
)
from dynviz.support.progress import Progress
from dynviz.units import GIGA
from dynviz.version import __version__

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- recording
@dataclass(frozen=True)
class RecordResult:
    """What :func:`record` did.

    Attributes:
        path: the records folder.
        recorded: images recorded by this call (this rank).
        skipped: images already in the records, not recorded again (all ranks).
        parts: part files written by this call (this rank).
    """

    path: Path
    recorded: int
    skipped: int
    parts: int


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _route_dict(route: Route | None) -> dict[str, Any] | None:
    if route is None:
        return None
    data = route.to_dict()
    data["space"] = route.space.to_dict()  # self-contained
    data.pop("notes", None)
    data.pop("paper", None)
    return data


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
        ids = np.repeat(np.asarray(self.ids, dtype=object), p)
        gate_table = pa.table(
            {
                "image_id": pa.array(ids, type=pa.string()),
                "layer": pa.array(np.tile(self.layer, n).astype(np.int16)),
                "scale": pa.array((4 * 2 ** np.tile(self.scale_index, n)).astype(np.int16)),
                "scale_index": pa.array(np.tile(self.scale_index, n).astype(np.int8)),
                "direction": pa.DictionaryArray.from_arrays(
                    pa.array(np.tile(self.direction, n).astype(np.int8)), pa.array(list(DIRECTIONS))
                ),
                "alpha": pa.array(alpha),
                "active": pa.array(self.is_active(alpha)),
                "gate_alpha": pa.array(own.reshape(-1).astype(np.float32)),
            }
        )
        real, expected = self._costs(gates)
        confusion = np.concatenate(self.confusion, 0)  # (n, K * K)
        miou, accuracy = _image_scores(confusion)
        sizes = np.asarray(self.sizes, dtype=np.int32).reshape(-1, 2)
        columns: dict[str, pa.Array] = {
            "image_id": pa.array(self.ids, type=pa.string()),
            "real_gmacs": pa.array(real),
            "expected_gmacs": pa.array(expected),
            "miou": pa.array(miou),
            "pixel_accuracy": pa.array(accuracy),
            "height": pa.array(sizes[:, 0]),
            "width": pa.array(sizes[:, 1]),
            "confusion": pa.array(list(confusion), type=pa.list_(pa.int64())),
        }
        for key, values in self.extra.items():  # the augmentation columns (--aug)
            columns[key] = pa.array(values, type=_EXTRA_TYPES[key])
        for key in sorted({k for row in self.stats for k in row}):
            values = [float(row.get(key, np.nan)) for row in self.stats]
            columns[f"stat_{key}"] = pa.array(np.asarray(values, dtype=np.float64))
        return gate_table, pa.table(columns)

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(gates, images)`` as :func:`~dynviz.record.read_records` would read them back
        from the part file, without writing it."""
        gate_table, image_table = self.tables()
        gates = gate_table.to_pandas(types_mapper=_arrow_to_pandas)
        images = image_table.to_pandas(types_mapper=_arrow_to_pandas)
        return _normalise_gates(gates, "recorded frames"), _normalise_images(images)


_EXTRA_TYPES = {"source_image_id": pa.string(), "aug_scale": pa.float64(), "aug_flip": pa.bool_()}


def _image_scores(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _confusion(
    pred: torch.Tensor, labels: torch.Tensor, num_classes: int, ignore: int, ids: Sequence[str]
) -> torch.Tensor:
    """Per-image confusion matrices ``(B, K * K)`` (row = target) with one bincount.

    Ignored pixels go to an extra target row that is dropped (no boolean indexing: it is the
    slowest step on the CPU).
    """
    b, k = pred.shape[0], num_classes
    target = torch.where(labels == ignore, k, labels)  # (B, H, W), ignore -> row K
    low, high = torch.aminmax(target)
    if int(low) < 0 or int(high) > k:
        bad = (target < 0) | (target > k)
        first = int(bad.flatten(1).any(1).nonzero()[0, 0])
        values = sorted({int(v) for v in labels[first][bad[first]][:1000].tolist()})[:10]
        raise ConfigError(
            f"image {ids[first]!r}: labels {values} are outside [0, {k}) and not "
            f"ignore_index={ignore}"
        )
    rows = (k + 1) * k
    offset = torch.arange(b, device=pred.device).view(-1, 1, 1) * rows
    counts = torch.bincount((offset + target * k + pred).flatten(), minlength=b * rows)
    return counts.view(b, k + 1, k)[:, :k].reshape(b, k * k)


def _batches(loader: Any, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """Group consecutive items of equal image size into batches of at most ``batch_size``."""
    pending: list[dict[str, Any]] = []
    for item in loader:
        if pending and item["image"].shape != pending[0]["image"].shape:
            yield pending
            pending = []
        pending.append(item)
        if len(pending) >= batch_size:  # at once: a failing next item loses nothing
            yield pending
            pending = []
    if pending:
        yield pending


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def _identity(item: list[dict[str, Any]]) -> dict[str, Any]:
    return item[0]


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
        model: the network; run in eval mode (real skipping) under ``torch.inference_mode()``.
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
    config = net.config
    counting = Counting(counting)
    if len(image_ids) != images.shape[0]:
        raise ValueError(f"{len(image_ids)} image ids for {images.shape[0]} images")
    height, width = int(images.shape[-2]), int(images.shape[-1])
    if labels is None:
        labels = torch.full((images.shape[0], height, width), ignore_index, dtype=torch.int64)
    chunk = RecordChunk(
        _path_index(net),
        lambda h, w: cost_table(config, (h, w), counting=counting, route=net.route),
        gates_ran=bool(net.is_dynamic and route is None),
        is_active=config.is_active,
    )
    with _eval_mode(net), torch.inference_mode():
        device = next(net.parameters()).device
        out = net(images.to(device), route=route)
        pred = out.logits.max(1).indices  # (B, H, W)
        ids = [str(i) for i in image_ids]
        confusion = _confusion(pred, labels.to(device), config.num_classes, ignore_index, ids)
        chunk.add(
            ids,
            out.gates.float().cpu().numpy(),
            confusion.cpu().numpy(),
            (height, width),
            list(stats) if stats is not None else [{} for _ in ids],
            gate_alpha=_own(out.gate_alpha),
        )
    gates, frame = chunk.frames()
    return RecordedBatch(gates, frame, pred.to(torch.uint8).cpu().numpy())


@contextlib.contextmanager
def _eval_mode(net: nn.Module) -> Iterator[None]:
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


def record(
    model: RoutingNetwork,
    dataset: Any,
    out: str | os.PathLike[str],
    *,
    route: Route | None = None,
    limit: int | None = None,
    batch_size: int = 1,
    chunk_size: int = 256,
    name: str | None = None,
    checkpoint: Mapping[str, Any] | None = None,
    data_spec: str | None = None,
    split: str | None = None,
    device: torch.device | str | None = None,
    workers: int = 0,
    progress: bool | None = None,
    aug: Augment | None = None,
    counting: Counting | str = Counting.PAPER,
) -> RecordResult:
    """Run ``model`` over ``dataset`` and write (or complete) a records folder.

    Under an initialised process group each rank records a disjoint share of the images still
    missing and writes its own part files; every rank must call this.

    Args:
        model: the network; run in eval mode (real skipping) under ``torch.inference_mode()``.
        dataset: a segmentation dataset (``image_id(i)``, items with image, label, image_id,
            stats).
        out: the records folder (created; an existing one is completed, never duplicated).
        route: force this route instead of the gates.
        limit: record only the first ``limit`` images of the data set.
        batch_size: images per forward pass (consecutive images of one size are batched).
        chunk_size: images per part file.
        name: label of the model in analyses (default: the route's or config's name).
        checkpoint: ``{"path", "sha256", "iteration"}`` of the weights, or None (untrained).
        data_spec: the data spec string, for the sidecar.
        split: the split name, for the sidecar.
        device: where to run (default: where the model's parameters are).
        workers: data-loading worker processes.
        progress: ``True`` a tqdm bar, ``False`` nothing, ``None`` (default) a bar on a terminal
            and else a log line every half minute (:class:`dynviz.support.progress.Progress`; rank 0
            only).
        aug: test-time augmentation (:mod:`dynviz.inference.tta`): one row per image and variant,
        with
            ``image_id`` ``"<id>@<scale>[+flip]"`` and the columns ``source_image_id``,
            ``aug_scale`` and ``aug_flip``; each row's gates, size and GMACs are those of its
            forward pass, its ``miou``, ``pixel_accuracy`` and ``confusion`` those of the image's
            averaged prediction (so summed confusions still give the data set's mIoU).
        counting: the cost counting of ``real_gmacs`` and ``expected_gmacs`` (``paper`` or
            ``official``, :class:`dynviz.model.cost.Counting`), written to the sidecar; a folder is
            completed only in its own counting.

    Returns:
        A :class:`RecordResult` for this rank.

    Raises:
        RecordError: the folder holds records of another model, checkpoint or data.
        ConfigError: the data set has more classes than the network predicts.
    """
    from torch.utils.data import DataLoader, Subset

    if batch_size < 1 or chunk_size < 1:
        raise ConfigError(f"batch_size ({batch_size}) and chunk_size ({chunk_size}) must be >= 1")
    net: RoutingNetwork = getattr(model, "module", model)
    config = net.config
    counting = Counting(counting)
    if getattr(dataset, "num_classes", 0) > config.num_classes:
        raise ConfigError(
            f"the data set has {dataset.num_classes} classes but the network "
            f"predicts {config.num_classes}"
        )
    device = torch.device(device) if device is not None else next(net.parameters()).device
    rank, world = _world()
    folder = Path(out)
    meta = _sidecar(
        net,
        dataset,
        route=route,
        name=name,
        checkpoint=checkpoint,
        data_spec=data_spec,
        split=split,
        world=world,
        aug=aug,
        counting=counting,
    )
    done, chunks = _open_folder(folder, meta, rank, world)
    gates_dir, images_dir = folder / GATES_DIR, folder / IMAGES_DIR
    count = len(dataset) if limit is None else min(int(limit), len(dataset))
    first = "" if aug is None else "@" + variant_label(*aug.variants[0])
    pending = [i for i in range(count) if dataset.image_id(i) + first not in done]
    skipped = count - len(pending)
    shard = pending[rank::world]
    next_chunk = 1 + max((c for r, c in chunks if r == rank), default=-1)
    if skipped and rank == 0:
        logger.info(
            "%s: %d of %d images already recorded; recording %d",
            folder,
            skipped,
            count,
            len(pending),
        )

    # ---- the model-side work: one forward per batch, gates to numpy once per batch
    paths = _path_index(net)
    cost_tables: dict[tuple[int, int], CostTable] = {}

    def table_of(height: int, width: int) -> CostTable:
        if (height, width) not in cost_tables:
            cost_tables[(height, width)] = cost_table(
                config, (height, width), counting=counting, route=net.route
            )
        return cost_tables[(height, width)]

    def new_chunk() -> RecordChunk:
        return RecordChunk(
            paths,
            table_of,
            gates_ran=bool(net.is_dynamic and route is None),
            is_active=config.is_active,
        )

    chunk = new_chunk()
    ignore = int(getattr(dataset, "ignore_index", 255))
    written = recorded = 0
    bar = Progress(
        total=len(shard), desc=f"record {meta['name']}", show=progress if rank == 0 else False
    )

    def flush() -> None:
        nonlocal chunk, next_chunk, written
        if not len(chunk):
            return
        gate_table, image_table = chunk.tables()
        part = f"part-r{rank}-c{next_chunk}.parquet"
        _atomic_write_table(gate_table, gates_dir / part)
        _atomic_write_table(image_table, images_dir / part)  # commits the chunk
        logger.debug("wrote %s (%d images)", part, len(chunk))
        next_chunk += 1
        written += 1
        chunk = new_chunk()

    loader = DataLoader(
        Subset(dataset, shard), batch_size=1, num_workers=workers, collate_fn=_identity
    )
    try:
        with _eval_mode(net), torch.inference_mode():
            for items in _batches(loader, batch_size):
                ids = [str(it["image_id"]) for it in items]
                images = _stack([it["image"] for it in items]).to(device)  # (B, 3, H, W)
                labels = _stack([it["label"] for it in items]).to(device)  # (B, H, W)
                stats = [it.get("stats") or {} for it in items]
                if aug is None:
                    out = net(images, route=route)
                    pred = out.logits.max(1).indices  # (B, H, W); many times faster than argmax
                    confusion = _confusion(pred, labels, config.num_classes, ignore, ids)
                    chunk.add(
                        ids,
                        out.gates.float().cpu().numpy(),
                        confusion.cpu().numpy(),
                        (int(images.shape[-2]), int(images.shape[-1])),
                        stats,
                        gate_alpha=_own(out.gate_alpha),
                    )
                else:
                    probs, forwards = infer(net, images, aug=aug, route=route)
                    pred = probs.max(1).indices
                    confusion = _confusion(pred, labels, config.num_classes, ignore, ids)
                    matrix = confusion.cpu().numpy()
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
                recorded += len(items)
                bar.update(len(items))
                if len(chunk) >= chunk_size:
                    flush()
    finally:
        flush()  # complete images are never lost, even when interrupted
        bar.close()

    _barrier()
    if rank == 0:
        _close_folder(folder, meta)
    _barrier()
    return RecordResult(path=folder, recorded=recorded, skipped=skipped, parts=written)


def _sidecar(
    net: RoutingNetwork,
    dataset: Any,
    *,
    route: Route | None,
    name: str | None,
    checkpoint: Mapping[str, Any] | None,
    data_spec: str | None,
    split: str | None,
    world: int,
    aug: Augment | None = None,
    counting: Counting = Counting.PAPER,
) -> dict[str, Any]:
    """The sidecar of a recording, as plain JSON types (``aug`` only when augmented)."""
    config = net.config
    ckpt = dict(checkpoint) if checkpoint else None
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name
        or (route.name if route is not None and route.name else None)
        or (net.route.name if net.route is not None and net.route.name else config.name),
        "config": config.to_dict(),
        "route": _route_dict(net.route),
        "forced_route": _route_dict(route),
        "dynamic": bool(net.is_dynamic and route is None),
        "params": int(sum(p.numel() for p in net.parameters())),
        "checkpoint": ckpt,
        "checkpoint_sha256": ckpt.get("sha256") if ckpt else None,
        "data": data_spec if data_spec is not None else getattr(dataset, "spec", None),
        "split": split if split is not None else getattr(dataset, "split", None),
        "num_classes": int(config.num_classes),
        "class_names": list(getattr(dataset, "class_names", []) or []),
        "threshold": float(config.active_threshold),
        "counting": counting.value,
        "input_sizes": [],
        "num_images": 0,
        "world_size": world,
        "dynviz_version": __version__,
        "torch_version": str(torch.__version__),
        "created": _now(),
    }
    if aug is not None:
        meta["aug"] = aug.to_dict()
    # written as the reader parses it (Sidecar keeps any key it does not know)
    return Sidecar.from_dict(json.loads(json.dumps(meta, default=str))).to_dict()


def _open_folder(
    folder: Path, meta: dict[str, Any], rank: int, world: int
) -> tuple[set[str], set[tuple[int, int]]]:
    """Create the folder and sidecar, or check that they describe the same experiment; remove
    what an interrupted run left (each rank its share of ranks); read the recorded image ids.

    Returns:
        ``(image ids already recorded, (rank, chunk) keys of existing part files)``.
    """
    gates_dir, images_dir = folder / GATES_DIR, folder / IMAGES_DIR
    if rank == 0:
        gates_dir.mkdir(parents=True, exist_ok=True)
        images_dir.mkdir(parents=True, exist_ok=True)
    _barrier()
    sidecar = folder / SIDECAR
    if sidecar.exists():
        saved = _read_sidecar(folder)
        for key in _IDENTITY_KEYS:
            if saved.get(key, _IDENTITY_DEFAULTS.get(key)) != meta.get(key):
                raise RecordError(
                    f"{folder}: holds records of another experiment ({key!r} differs: "
                    f"{_short(saved.get(key))} there, {_short(meta.get(key))} now); record into "
                    "a new folder"
                )
        meta["created"] = saved.get("created", meta["created"])
    _barrier()
    if rank == 0 and not sidecar.exists():
        _atomic_write_text(json.dumps(meta, indent=2) + "\n", sidecar)
    for tmp in list(gates_dir.glob(".part-*.tmp")) + list(images_dir.glob(".part-*.tmp")):
        match = re.match(r"^\.part-r(\d+)-", tmp.name)
        if match and int(match[1]) % world == rank:
            tmp.unlink(missing_ok=True)
    gate_parts, image_parts = _parts(gates_dir), _parts(images_dir)
    for key in sorted(set(gate_parts) - set(image_parts)):
        if key[0] % world == rank:
            logger.info("removing %s: its images part was never written", gate_parts[key])
            gate_parts[key].unlink(missing_ok=True)
    done: set[str] = set()
    for file in image_parts.values():
        try:
            done.update(pq.read_table(file, columns=["image_id"]).column(0).to_pylist())
        except (OSError, pa.ArrowException, KeyError) as err:
            raise RecordError(f"{file}: cannot read image ids ({err})") from None
    _barrier()  # every rank has read the same state before anyone writes
    return done, set(gate_parts) | set(image_parts)


def _close_folder(folder: Path, meta: dict[str, Any]) -> None:
    """Rewrite the sidecar with the image count and input sizes found on disk."""
    sizes: set[tuple[int, int]] = set()
    total = 0
    for file in _parts(folder / IMAGES_DIR).values():
        frame = pq.read_table(file, columns=["height", "width"]).to_pandas()
        total += len(frame)
        sizes.update(zip(frame["height"].tolist(), frame["width"].tolist(), strict=True))
    meta["num_images"] = total
    meta["input_sizes"] = [list(s) for s in sorted(sizes)]
    meta["updated"] = _now()
    _atomic_write_text(json.dumps(meta, indent=2) + "\n", folder / SIDECAR)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


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
