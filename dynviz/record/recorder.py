"""The recorder: the loop that runs a network over a data set and writes its records (one part
per rank and chunk, resumable without duplicates), as a few named steps: the sidecar, opening the
folder, the images still to record, one batch at a time into chunks, closing the folder.

The rows come from :mod:`dynviz.record.rows`; the schemas, part names and the atomic writer from
:mod:`dynviz.record.format`. It runs over 500 lines: the two kinds of network (the routing
space and any gated network) share every step but their rows and sidecar, which sit beside the
loop that calls them."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dynviz.gates import GateGraph, gate_graph_of
from dynviz.inference.folding import inference_form
from dynviz.inference.tta import Augment, variant_label
from dynviz.model import ConfigError, RoutingNetwork
from dynviz.model.cost import Counting
from dynviz.model.route import Route
from dynviz.record.format import (
    DECISIONS_DIR,
    FORMAT,
    FORMAT_VERSION,
    GATES_DIR,
    IMAGES_DIR,
    SIDECAR,
    list_parts,
    read_sidecar,
    temp_part_rank,
    write_chunk,
    write_sidecar,
)
from dynviz.record.gated import GatedChunk, add_gated_batch
from dynviz.record.rows import RecordChunk, add_batch, chunk_factory, eval_mode
from dynviz.record.sidecar import CheckpointRef, RecordError, Sidecar
from dynviz.support.progress import Progress
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


def record(
    model: RoutingNetwork | torch.nn.Module,
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
    builder: str | None = None,
) -> RecordResult:
    """Run ``model`` over ``dataset`` and write (or complete) a records folder.

    Under an initialised process group each rank records a disjoint share of the images still
    missing and writes its own part files; every rank must call this.

    Any gated network records the same way: a model with a gate graph (its ``gate_graph()``, or
    the one :func:`dynviz.gates.watch` attached) writes ``decisions/`` in place of ``gates/``
    (:mod:`dynviz.record.gated`); ``route``, ``aug`` and ``counting`` apply to routing networks
    only.

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
        builder: for a gated network, the entry point ``module:function`` that builds it
            (written to the sidecar; ``dynviz record`` sets it).

    Returns:
        A :class:`RecordResult` for this rank.

    Raises:
        RecordError: the folder holds records of another model, checkpoint or data.
        ConfigError: the data set has more classes than the network predicts.
    """
    if batch_size < 1 or chunk_size < 1:
        raise ConfigError(f"batch_size ({batch_size}) and chunk_size ({chunk_size}) must be >= 1")
    net: RoutingNetwork = getattr(model, "module", model)
    counting = Counting(counting)
    device = torch.device(device) if device is not None else next(net.parameters()).device
    rank, world = _world()
    folder = Path(out)
    context = dict(name=name, checkpoint=checkpoint, data_spec=data_spec, split=split, world=world)
    ignore = int(getattr(dataset, "ignore_index", 255))
    if isinstance(net, RoutingNetwork):
        if getattr(dataset, "num_classes", 0) > net.config.num_classes:
            raise ConfigError(
                f"the data set has {dataset.num_classes} classes but the network "
                f"predicts {net.config.num_classes}"
            )
        sidecar = _sidecar(net, dataset, route=route, aug=aug, counting=counting, **context)
        new_chunk = chunk_factory(net, route=route, counting=counting)
        runner = inference_form(net)  # BN folded (a copy): fused kernels

        def step(chunk: Any, images: torch.Tensor, labels: torch.Tensor, ids: Any, stats: Any):
            add_batch(
                runner, chunk, images, labels, ids, stats, route=route, aug=aug, ignore=ignore
            )
    else:
        if route is not None or aug is not None:
            raise ConfigError(
                "route and aug apply to routing networks; a gated network records its own decisions"
            )
        graph = gate_graph_of(net)
        sidecar = _gated_sidecar(net, graph, dataset, builder=builder, **context)
        classes = int(getattr(dataset, "num_classes", 0))

        def new_chunk() -> GatedChunk:
            return GatedChunk(graph)

        def step(chunk: Any, images: torch.Tensor, labels: torch.Tensor, ids: Any, stats: Any):
            add_gated_batch(
                net, graph, chunk, images, labels, ids, stats, num_classes=classes, ignore=ignore
            )

    sidecar, done, chunks = _open_folder(folder, sidecar, rank, world)
    pending, count = _pending(dataset, done, limit=limit, aug=aug)
    skipped = count - len(pending)
    shard = pending[rank::world]
    if skipped and rank == 0:
        logger.info(
            "%s: %d of %d images already recorded; recording %d",
            folder,
            skipped,
            count,
            len(pending),
        )
    writer = _ChunkWriter(
        folder,
        rank,
        next_chunk=1 + max((c for r, c in chunks if r == rank), default=-1),
        new_chunk=new_chunk,
    )
    bar = Progress(
        total=len(shard), desc=f"record {sidecar.name}", show=progress if rank == 0 else False
    )
    recorded = 0
    try:
        with eval_mode(net), torch.inference_mode():
            for items in _batches(_loader(dataset, shard, workers), batch_size):
                step(
                    writer.chunk,
                    _stack([it["image"] for it in items]).to(device),  # (B, 3, H, W)
                    _stack([it["label"] for it in items]).to(device),  # (B, H, W)
                    [str(it["image_id"]) for it in items],
                    [it.get("stats") or {} for it in items],
                )
                recorded += len(items)
                bar.update(len(items))
                if len(writer.chunk) >= chunk_size:
                    writer.flush()
    finally:
        writer.flush()  # complete images are never lost, even when interrupted
        bar.close()

    _barrier()
    if rank == 0:
        _close_folder(folder, sidecar)
    _barrier()
    return RecordResult(path=folder, recorded=recorded, skipped=skipped, parts=writer.written)


# ------------------------------------------------------------------- the recording's steps
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
) -> Sidecar:
    """The sidecar of a recording, its mappings as plain JSON types (as the reader parses
    them)."""
    config = net.config
    ckpt = _plain(dict(checkpoint)) if checkpoint else None
    data = data_spec if data_spec is not None else getattr(dataset, "spec", None)
    split = split if split is not None else getattr(dataset, "split", None)
    return Sidecar(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        name=name
        or (route.name if route is not None and route.name else None)
        or (net.route.name if net.route is not None and net.route.name else config.name),
        config_dict=_plain(config.to_dict()),
        route_dict=_plain(_route_dict(net.route)),
        forced_route_dict=_plain(_route_dict(route)),
        dynamic=bool(net.is_dynamic and route is None),
        params=int(sum(p.numel() for p in net.parameters())),
        checkpoint=_checkpoint_ref(ckpt),
        data=None if data is None else str(data),
        split=None if split is None else str(split),
        num_classes=int(config.num_classes),
        class_names=tuple(str(c) for c in getattr(dataset, "class_names", []) or []),
        threshold=float(config.active_threshold),
        counting=counting,
        world_size=world,
        dynviz_version=__version__,
        torch_version=str(torch.__version__),
        created=_now(),
        aug_dict=_plain(aug.to_dict()) if aug is not None else None,
        num_images=0,
    )


def _gated_sidecar(
    net: torch.nn.Module,
    graph: GateGraph,
    dataset: Any,
    *,
    builder: str | None,
    name: str | None,
    checkpoint: Mapping[str, Any] | None,
    data_spec: str | None,
    split: str | None,
    world: int,
) -> Sidecar:
    """The sidecar of a gate-graph recording: the graph and builder instead of a config."""
    ckpt = _plain(dict(checkpoint)) if checkpoint else None
    data = data_spec if data_spec is not None else getattr(dataset, "spec", None)
    split = split if split is not None else getattr(dataset, "split", None)
    return Sidecar(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        name=name or graph.name,
        graph_dict=_plain(graph.to_dict()),
        builder=builder,
        dynamic=True,
        params=int(sum(p.numel() for p in net.parameters())),
        checkpoint=_checkpoint_ref(ckpt),
        data=None if data is None else str(data),
        split=None if split is None else str(split),
        num_classes=int(getattr(dataset, "num_classes", 0)) or None,
        class_names=tuple(str(c) for c in getattr(dataset, "class_names", []) or []),
        world_size=world,
        dynviz_version=__version__,
        torch_version=str(torch.__version__),
        created=_now(),
        num_images=0,
    )


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples become lists, other objects strings)."""
    return json.loads(json.dumps(value, default=str))


def _checkpoint_ref(data: Mapping[str, Any] | None) -> CheckpointRef | None:
    if not data:
        return None
    known = ("path", "sha256", "iteration")
    return CheckpointRef(
        path=None if data.get("path") is None else str(data["path"]),
        sha256=data.get("sha256"),
        iteration=data.get("iteration"),
        extra={k: v for k, v in data.items() if k not in known},
    )


def _open_folder(
    folder: Path, sidecar: Sidecar, rank: int, world: int
) -> tuple[Sidecar, set[str], set[tuple[int, int]]]:
    """Create the folder and sidecar, or check that they describe the same experiment; remove
    what an interrupted run left (each rank its share of ranks); read the recorded image ids.

    Returns:
        ``(the sidecar, with the creation time of an existing one; image ids already recorded;
        (rank, chunk) keys of existing part files)``.
    """
    table = DECISIONS_DIR if sidecar.kind == "gate-graph" else GATES_DIR
    gates_dir, images_dir = folder / table, folder / IMAGES_DIR
    if rank == 0:
        gates_dir.mkdir(parents=True, exist_ok=True)
        images_dir.mkdir(parents=True, exist_ok=True)
    _barrier()
    exists = (folder / SIDECAR).exists()
    if exists:
        saved = read_sidecar(folder)
        _check_identity(folder, saved, sidecar)
        sidecar = replace(sidecar, created=saved.created or sidecar.created)
    _barrier()
    if rank == 0 and not exists:
        write_sidecar(folder, sidecar)
    gate_parts, image_parts = _remove_leftovers(gates_dir, images_dir, rank, world)
    torn = _remove_torn(gate_parts, image_parts, rank, world)
    done: set[str] = set()
    for key, file in image_parts.items():
        if key in torn:
            continue
        try:
            done.update(pq.read_table(file, columns=["image_id"]).column(0).to_pylist())
        except (OSError, pa.ArrowException, KeyError) as err:
            raise RecordError(f"{file}: cannot read image ids ({err})") from None
    _barrier()  # every rank has read the same state before anyone writes
    return sidecar, done, set(gate_parts) | set(image_parts)


def _check_identity(folder: Path, saved: Sidecar, sidecar: Sidecar) -> None:
    """Refuse to append to records of another experiment (:meth:`Sidecar.identity`)."""
    there, now = saved.identity(), sidecar.identity()
    for key, value in there.items():
        if value != now[key]:
            raise RecordError(
                f"{folder}: holds records of another experiment ({key!r} differs: "
                f"{_short(value)} there, {_short(now[key])} now); record into a new folder"
            )


def _remove_leftovers(
    gates_dir: Path, images_dir: Path, rank: int, world: int
) -> tuple[dict[tuple[int, int], Path], dict[tuple[int, int], Path]]:
    """Remove this rank's share of temporary files and of ``gates`` parts whose ``images`` part
    was never written (an interrupted run).

    Returns:
        The ``gates`` and ``images`` parts found, removed ones included (a new chunk does not
        reuse their numbers).
    """
    for tmp in list(gates_dir.glob(".part-*.tmp")) + list(images_dir.glob(".part-*.tmp")):
        owner = temp_part_rank(tmp)
        if owner is not None and owner % world == rank:
            tmp.unlink(missing_ok=True)
    gate_parts, image_parts = list_parts(gates_dir), list_parts(images_dir)
    for key in sorted(set(gate_parts) - set(image_parts)):
        if key[0] % world == rank:
            logger.info("removing %s: its images part was never written", gate_parts[key])
            gate_parts[key].unlink(missing_ok=True)
    return gate_parts, image_parts


def _torn_reason(file: Path) -> str | None:
    """Why ``file`` is not a whole Parquet file (no footer: truncated, zero bytes, gone), or
    None when it is one."""
    try:
        pq.read_metadata(file)
    except (OSError, pa.ArrowException) as err:
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    return None


def _remove_torn(
    gate_parts: dict[tuple[int, int], Path],
    image_parts: dict[tuple[int, int], Path],
    rank: int,
    world: int,
) -> set[tuple[int, int]]:
    """Find the committed chunks with a torn part (a file under its final name that is not a
    whole Parquet file, as a crash of the disk or a copy leaves it) and remove this rank's
    share of them, both parts: their images are recorded again.

    Returns:
        The ``(rank, chunk)`` keys of every torn chunk (their image ids do not count as
        recorded, on any rank).
    """
    torn = set()
    for key in sorted(image_parts):
        for file in (gate_parts.get(key), image_parts[key]):
            reason = _torn_reason(file) if file is not None else None
            if reason is None:
                continue
            torn.add(key)
            if key[0] % world == rank:
                logger.warning(
                    "%s: torn part (%s); removing its chunk, its images are recorded again",
                    file,
                    reason,
                )
                for part in (gate_parts.get(key), image_parts[key]):
                    if part is not None:
                        part.unlink(missing_ok=True)
            break
    return torn


def _pending(
    dataset: Any, done: set[str], *, limit: int | None, aug: Augment | None
) -> tuple[list[int], int]:
    """``(indices of the images still to record, images asked for)``."""
    count = len(dataset) if limit is None else min(int(limit), len(dataset))
    first = "" if aug is None else "@" + variant_label(*aug.variants[0])
    return [i for i in range(count) if dataset.image_id(i) + first not in done], count


class _ChunkWriter:
    """The chunk being filled and the parts written so far, for one rank."""

    def __init__(
        self,
        folder: Path,
        rank: int,
        *,
        next_chunk: int,
        new_chunk: Callable[[], RecordChunk | GatedChunk],
    ) -> None:
        self.folder, self.rank, self.next_chunk = folder, rank, next_chunk
        self.new_chunk = new_chunk
        self.chunk = new_chunk()
        self.written = 0

    def flush(self) -> None:
        """Write the chunk as the next part (nothing when it is empty) and start a new one."""
        if not len(self.chunk):
            return
        gate_table, image_table = self.chunk.tables()
        part = write_chunk(
            self.folder,
            self.rank,
            self.next_chunk,
            gate_table,
            image_table,
            gates_dir=getattr(self.chunk, "table_dir", GATES_DIR),
        )
        logger.debug("wrote %s (%d images)", part, len(self.chunk))
        self.next_chunk += 1
        self.written += 1
        self.chunk = self.new_chunk()


def _loader(dataset: Any, shard: list[int], workers: int) -> Any:
    from torch.utils.data import DataLoader, Subset

    return DataLoader(
        Subset(dataset, shard), batch_size=1, num_workers=workers, collate_fn=_identity
    )


def _close_folder(folder: Path, sidecar: Sidecar) -> None:
    """Rewrite the sidecar with the image count and input sizes found on disk."""
    sizes: set[tuple[int, int]] = set()
    total = 0
    for file in list_parts(folder / IMAGES_DIR).values():
        frame = pq.read_table(file, columns=["height", "width"]).to_pandas()
        total += len(frame)
        sizes.update(zip(frame["height"].tolist(), frame["width"].tolist(), strict=True))
    write_sidecar(
        folder,
        replace(sidecar, num_images=total, input_sizes=tuple(sorted(sizes)), updated=_now()),
    )


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
