"""Measured latency per node, beside the MACs of the cost model.

A SepConv cell costs about the same MACs at every scale (channels double as the resolution
halves), but on a CPU its time differs by up to about 10x between 1/4 and 1/32: depthwise convs,
BN, ReLU and adds are memory-bound and the 1/4 maps are the largest. A FLOPs budget is therefore a
weak latency proxy. This module measures the time of each component of the routing space at one
input size, on the machine it runs on:

* :func:`measure_node_latency` times the cell operation (``ReLU(O(X) + X)``), the gate and each
  transform at every scale, a node's input sum, the stem and the decoder, and returns a
  :class:`NodeLatency` (seconds per call, one value per scale). It times the network's own
  nodes: the modules of a :class:`~dynviz.model.RoutingNetwork` of the config, through the
  functions its forward runs (``RoutingCell.hidden``/``transform``, the gate,
  ``Decoder.top_down``/``head``, the stem);
* :func:`latency_cost_table` lays it out like :class:`dynviz.model.cost.CostTable` (the same ``op``,
  ``gate``, ``path``, ``node_add``, ``stem`` and ``decoder_*`` fields) in seconds, so everything
  that takes a cost table (``real``, ``expected``, ``backbone_expected``,
  ``backbone_all_open``) gives *time* instead of MACs: a latency-weighted budget is
  ``table.backbone_expected(gates) / table.backbone_all_open()``.

:func:`measure_node_latency_isolated` runs the same measurement in the main thread of a fresh
process. The explorer uses it: Streamlit runs a page in a secondary thread, and torch's CPU
kernels timed from one ran 2-2.5x slower than from the main thread on the 2-core development
machine (each such thread gets its own OpenMP team, while the main thread's may still be
spinning), so the Latency page disagreed with ``dynviz flops --time`` on the same node.

Cells at one scale have the same shapes in every layer, so each component is timed once per
scale and broadcast over the layers. Timings are medians of interleaved repeats under
``torch.inference_mode``; they carry the machine's noise (see ``docs/performance.md``). The
generic harness (:func:`measure_calls`, :func:`time_calls`, :class:`Timings`, :func:`quartiles`,
:func:`cpu_wait`, :func:`torch_threads`) lives in :mod:`dynviz.support.timing` and is re-exported
here. The module stays near 600 lines because its reports (:func:`latency_rows`,
:func:`route_times`, :func:`format_latency`) read the measurement and the latency cost table
together; splitting them off would only move the pair's shared layout elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dynviz.model.config import Direction, RoutingSpaceConfig
from dynviz.model.cost import CostItem, CostTable, Counting, cost_table
from dynviz.model.network import RoutingNetwork
from dynviz.model.route import Route
from dynviz.support.timing import (
    Timings,
    cpu_wait,
    measure_calls,
    quartiles,
    time_calls,
    torch_threads,
)
from dynviz.units import GIGA, mac_unit

__all__ = [
    "ALL_OPEN_STATIC",
    "LatencyRow",
    "LatencyTable",
    "NodeLatency",
    "Timings",
    "cpu_wait",
    "format_latency",
    "latency_rows",
    "latency_cost_table",
    "measure_calls",
    "measure_node_latency",
    "measure_node_latency_isolated",
    "quartiles",
    "route_times",
    "time_calls",
    "torch_threads",
]

logger = logging.getLogger(__name__)

COMPONENTS = ("op", "gate", "up", "down", "keep", "add", "lateral")


@dataclass
class NodeLatency:
    """Seconds per call of each component of a routing space at one input size.

    ``per_scale[component][s]`` is the time at scale index ``s`` (None where the component does
    not exist: no up at 1/4, no down at the coarsest scale, no gate in a Fix network).
    Components: ``op`` (``ReLU(O(X) + X)``), ``gate``, ``up``, ``down``, ``keep`` (the alpha
    multiply of a gated keep path; 0 for forced routes), ``add`` (one extra input summed into a
    node), ``lateral`` (the decoder's 1x1 conv-BN-ReLU, x2 upsampling and top-down add).
    """

    config: RoutingSpaceConfig
    size: tuple[int, int]
    batch: int
    threads: int
    channels_last: bool
    per_scale: dict[str, list[float | None]]
    stem: float
    decoder_fixed: float  # predictor and the final upsampling
    repeats: int = 5
    unit: str = field(default="s")
    spread: dict[str, list[tuple[float, float] | None]] = field(default_factory=dict)
    # first and third quartile of each component's repeats, like per_scale
    device: str = "cpu"

    def scale_rows(self) -> list[dict[str, float | int | None]]:
        """One dict per scale: ``stride`` and the seconds of each component."""
        rows: list[dict[str, float | int | None]] = []
        for s in range(self.config.num_scales):
            row: dict[str, float | int | None] = {"scale": s, "stride": self.config.stride(s)}
            row.update({k: v[s] for k, v in self.per_scale.items()})
            rows.append(row)
        return rows

    def state(self) -> dict[str, object]:
        """What :meth:`from_state` needs (plain JSON types), e.g. to keep a measurement with a
        run so that a resumed run uses the same table."""
        return {
            "size": list(self.size),
            "batch": self.batch,
            "threads": self.threads,
            "channels_last": self.channels_last,
            "per_scale": self.per_scale,
            "stem": self.stem,
            "decoder_fixed": self.decoder_fixed,
            "device": self.device,
        }

    @classmethod
    def from_state(cls, config: RoutingSpaceConfig, data: dict[str, Any]) -> NodeLatency:
        """Inverse of :meth:`state` for ``config``."""
        return cls(
            config=config,
            size=(int(data["size"][0]), int(data["size"][1])),
            batch=int(data["batch"]),
            threads=int(data["threads"]),
            channels_last=bool(data["channels_last"]),
            per_scale=data["per_scale"],
            stem=float(data["stem"]),
            decoder_fixed=float(data["decoder_fixed"]),
            device=str(data.get("device", "cpu")),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "model": self.config.name,
            "size": list(self.size),
            "batch": self.batch,
            "threads": self.threads,
            "channels_last": self.channels_last,
            "unit": self.unit,
            "stem": self.stem,
            "decoder_fixed": self.decoder_fixed,
            "device": self.device,
            "repeats": self.repeats,
            "per_scale": self.scale_rows(),
        }


def _memory(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _module(
    m: nn.Module, channels_last: bool, fold: bool, device: torch.device | None = None
) -> nn.Module:
    m = m.eval().to(device or "cpu")
    if fold:
        from dynviz.inference.folding import fold_batchnorm

        m = fold_batchnorm(m, inplace=True)
    return m.to(memory_format=torch.channels_last) if channels_last else m


def _probe_cells(config: RoutingSpaceConfig) -> dict[int, tuple[int, int]]:
    """For each scale, the cell of the network whose nodes are timed for that scale: the first
    one that owns the most transforms (a cell below the last layer has up and down where its
    scale allows them)."""
    out: dict[int, tuple[int, int]] = {}
    for layer, scale in config.cells:
        if layer == 0:
            continue  # the initial cell (not charged, and it has no up)
        best = out.get(scale)
        if best is None or len(config.directions(layer, scale)) > len(config.directions(*best)):
            out[scale] = (layer, scale)
    return out


def measure_node_latency(
    config: RoutingSpaceConfig,
    size: tuple[int, int] = (512, 1024),
    *,
    repeats: int = 5,
    batch: int = 1,
    threads: int | None = None,
    channels_last: bool = True,
    fold: bool = False,
    min_time: float = 2e-3,
    max_wait: float | None = None,
    tune_malloc: bool = False,
    device: str | torch.device | None = None,
) -> NodeLatency:
    """Time every component of ``config`` at ``size`` on this machine.

    Args:
        config: the routing space (widths, scales, gate kind).
        size: input (H, W), padded to a multiple of the largest stride as the network does.
        repeats: timed repeats per component (the median is kept).
        batch: samples per call.
        threads: ``torch.set_num_threads`` for the measurement (restored afterwards).
        channels_last: time in the channels-last memory format (what the network uses for
            CPU inference, ``RoutingNetwork.channels_last_inference``).
        fold: time with BN folded into the convs (``dynviz.inference.folding.fold_batchnorm``).
        min_time: a sample loops a call until this many seconds have passed.
        max_wait: retake samples that waited longer for a CPU (:func:`measure_calls`).
        tune_malloc: time with glibc keeping freed memory for reuse, as ``dynviz bench`` does
            (:func:`dynviz.inference.allocator.malloc_tuned`); without it the large 1/4-scale
            tensors are page-faulted back in on every call and those nodes look 2-3x slower. The
            CLI commands already run tuned (:func:`dynviz.commands.guarded`); afterwards the
            thresholds go back to what they were (glibc's initial ones, without its dynamic
            adjustment, if they were never set).
        device: where to time (default CPU): the device the network runs on. On CUDA every
            sample is bracketed by ``torch.cuda.synchronize`` (the kernels are timed, not their
            launch), channels-last and malloc tuning are CPU matters and the CPU-wait retakes
            do not apply.
    """
    from dynviz.inference.allocator import malloc_tuned

    device = torch.device(device or "cpu")
    cuda = device.type == "cuda"
    if cuda:
        channels_last, tune_malloc, max_wait = False, False, None

    tuned = malloc_tuned(True) if tune_malloc else contextlib.nullcontext()
    with torch_threads(threads), tuned:
        stride = config.max_stride
        height = -(-size[0] // stride) * stride
        width = -(-size[1] // stride) * stride
        gen = torch.Generator().manual_seed(0)
        calls: dict[str, Callable[[], object]] = {}
        keep_alive: list[object] = []

        def rand(*shape: int) -> torch.Tensor:
            return _memory(torch.randn(*shape, generator=gen), channels_last).to(device)

        # the network's own nodes: the functions its forward runs, on its modules
        net = _module(RoutingNetwork(config), channels_last, fold, device)
        probes = _probe_cells(config)
        for s in range(config.num_scales):
            c = config.channels(s)
            h, w = height // 4 >> s, width // 4 >> s
            x = rand(batch, c, h, w)
            cell = net.cell(*probes[s]) if s in probes else None
            if cell is not None:
                calls[f"op.{s}"] = lambda cell=cell, x=x: cell.hidden(x, inplace=True)
                with torch.no_grad():
                    r = cell.hidden(x)  # ReLU(H), what the transforms take
                if cell.gate is not None:
                    calls[f"gate.{s}"] = lambda cell=cell, x=x: cell.gate(x)
                    alpha = torch.rand(batch, 1, 1, 1, generator=gen).to(device)
                    calls[f"keep.{s}"] = lambda x=x, a=alpha: x * a
                for d in (Direction.UP, Direction.DOWN):
                    if d in cell.directions:
                        calls[f"{d.label}.{s}"] = lambda cell=cell, d=d, r=r: cell.transform(d, r)
                keep_alive.append(r)
            other = rand(batch, c, h, w)
            calls[f"add.{s}"] = lambda x=x, other=other: x + other
            top = s == config.num_scales - 1
            y_in = rand(batch, c, h, w) if not top else torch.zeros_like(x)
            calls[f"lateral.{s}"] = lambda s=s, y=y_in, x=x: net.decoder.top_down(s, y + x)
            keep_alive += [x, other, y_in]
        images = rand(batch, 3, height, width)
        calls["stem"] = lambda: net.stem(images)
        y0 = rand(batch, config.base_channels, height // 4, width // 4)

        def run_fixed() -> torch.Tensor:
            return net.decoder.head(y0, (height, width))

        calls["decoder_fixed"] = run_fixed
        with torch.inference_mode():
            timings = measure_calls(
                calls,
                repeats=repeats,
                warmup=1,
                min_time=min_time,
                max_wait=max_wait,
                sync=(lambda: torch.cuda.synchronize(device)) if cuda else None,
            )
        times = timings.median
        quarts = timings.quartiles
    per_scale: dict[str, list[float | None]] = {
        k: [times.get(f"{k}.{s}") for s in range(config.num_scales)] for k in COMPONENTS
    }
    spread: dict[str, list[tuple[float, float] | None]] = {
        k: [
            (quarts[f"{k}.{s}"][0], quarts[f"{k}.{s}"][2]) if f"{k}.{s}" in quarts else None
            for s in range(config.num_scales)
        ]
        for k in COMPONENTS
    }
    if not config.has_gates:
        per_scale["keep"] = [0.0] * config.num_scales
    return NodeLatency(
        config=config,
        size=(size[0], size[1]),
        batch=batch,
        threads=torch.get_num_threads() if threads is None else threads,
        channels_last=channels_last,
        per_scale=per_scale,
        stem=times["stem"],
        decoder_fixed=times["decoder_fixed"],
        repeats=repeats,
        spread=spread,
        device=str(device),
    )


class LatencyTable(CostTable):
    """A :class:`~dynviz.model.cost.CostTable` whose unit is seconds instead of MACs.

    ``op``, ``gate``, ``path`` and ``node_add`` are float64 tensors of seconds in the cost
    table's layout; ``stem``, ``decoder_lateral`` and ``decoder_fixed`` are seconds. Each item's
    ``macs`` field holds integer *nanoseconds* (so ``CostItem`` stays as it is); the aggregate
    methods convert back to seconds. ``real`` / ``expected`` / ``backbone_expected`` /
    ``backbone_all_open`` therefore return seconds per image.
    """

    unit = "s"
    latency: NodeLatency | None = None

    def by_component(self) -> dict[str, float]:  # type: ignore[override]
        return {k: v / GIGA for k, v in super().by_component().items()}

    def by_module(self, op: str | None = None) -> dict[str, float]:  # type: ignore[override]
        return {k: v / GIGA for k, v in super().by_module(op).items()}

    def total(self) -> float:  # type: ignore[override]
        """Seconds with every path open (gates included when the network has them)."""
        return sum(item.macs for item in self.items) / GIGA


def measure_node_latency_isolated(
    config: RoutingSpaceConfig, size: tuple[int, int] = (512, 1024), **options: Any
) -> NodeLatency:
    """:func:`measure_node_latency` in the main thread of a fresh spawned process (the module
    docstring says why); takes the same arguments."""
    from dynviz.support.processes import spawn_pool

    with spawn_pool(1) as pool:
        return pool.submit(measure_node_latency, config, size, **options).result()


def latency_cost_table(
    config: RoutingSpaceConfig,
    size: tuple[int, int] = (512, 1024),
    *,
    route: Route | None = None,
    latency: NodeLatency | None = None,
    normalise: bool = False,
    **measure: object,
) -> LatencyTable:
    """A cost table in seconds (or normalised to the all-open time) for ``config`` at ``size``.

    Args:
        config: the routing space.
        size: input (H, W).
        route: lay out the static network of this route (as :func:`dynviz.model.cost.cost_table`).
        latency: reuse a measurement (else :func:`measure_node_latency` runs with ``measure``).
        normalise: divide everything by the all-open backbone time (cells and transforms), so
            ``backbone_all_open() == 1`` and the numbers are shares of it.
        **measure: passed to :func:`measure_node_latency` (``repeats``, ``batch``, ...).

    The layout follows the paper counting of :func:`dynviz.model.cost.cost_table` (the initial
    cell's op and gate are not charged, nor the last layer's keep), so a latency budget constrains
    the same terms as the MACs budget.
    """
    if latency is None:
        latency = measure_node_latency(config, size, **measure)  # type: ignore[arg-type]
    macs = cost_table(config, size, counting=Counting.PAPER, route=route)
    per = latency.per_scale
    shape = macs.op.shape
    op = torch.zeros(shape, dtype=torch.float64)
    gate = torch.zeros(shape, dtype=torch.float64)
    path = torch.zeros(macs.path.shape, dtype=torch.float64)
    node_add = torch.zeros(shape, dtype=torch.float64)
    names = {Direction.KEEP: "keep", Direction.UP: "up", Direction.DOWN: "down"}
    for layer, scale in config.cells:
        node_add[layer, scale] = per["add"][scale] or 0.0
        if macs.op[layer, scale] > 0:
            op[layer, scale] = per["op"][scale] or 0.0
        if macs.gate[layer, scale] > 0:
            gate[layer, scale] = per["gate"][scale] or 0.0
        for d in Direction:
            if macs.path[layer, scale, int(d)] > 0:
                path[layer, scale, int(d)] = per[names[d]][scale] or 0.0
    lateral = [
        (per["lateral"][s] or 0.0) if m > 0 else 0.0 for s, m in enumerate(macs.decoder_lateral)
    ]
    stem, fixed = latency.stem, latency.decoder_fixed
    scale_by = 1.0
    if normalise:
        scale_by = float(op.sum() + path.sum()) or 1.0
    op, gate, path, node_add = (t / scale_by for t in (op, gate, path, node_add))
    stem, fixed = stem / scale_by, fixed / scale_by
    lateral = [v / scale_by for v in lateral]
    items = _items(config, op, gate, path, stem, lateral, fixed)
    table = LatencyTable(
        config=config,
        size=(size[0], size[1]),
        counted_size=macs.counted_size,
        counting=Counting.PAPER,
        items=items,
        op=op,
        gate=gate,
        path=path,
        node_add=node_add,
        stem=stem,  # type: ignore[arg-type]
        decoder_lateral=lateral,
        decoder_fixed=fixed,  # type: ignore[arg-type]
        with_gates=macs.with_gates,
    )
    table.latency = latency
    table.unit = "share of the all-open backbone time" if normalise else "s"
    return table


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def _items(
    config: RoutingSpaceConfig,
    op: torch.Tensor,
    gate: torch.Tensor,
    path: torch.Tensor,
    stem: float,
    lateral: list[float],
    fixed: float,
) -> list[CostItem]:
    """Cost items in nanoseconds, one per timed component (for totals and breakdowns)."""
    items = [CostItem("stem", "stem", "time", _ns(stem))]
    for layer, scale in config.cells:
        where = {"layer": layer, "scale": scale}
        prefix = f"cells.{layer}_{scale}"
        if op[layer, scale] > 0:
            items.append(
                CostItem("cell", f"{prefix}.op", "time", _ns(float(op[layer, scale])), **where)
            )
        if gate[layer, scale] > 0:
            items.append(
                CostItem("gate", f"{prefix}.gate", "time", _ns(float(gate[layer, scale])), **where)
            )
        for d in Direction:
            t = float(path[layer, scale, int(d)])
            if t > 0:
                items.append(
                    CostItem(
                        "transform", f"{prefix}.{d.label}", "time", _ns(t), direction=d, **where
                    )
                )
    for s, t in enumerate(lateral):
        if t > 0:
            items.append(CostItem("decoder", f"decoder.lateral.{s}", "time", _ns(t)))
    items.append(CostItem("decoder", "decoder.predictor", "time", _ns(fixed)))
    return items


# ------------------------------------------------------------------------------- reporting
@dataclass(frozen=True)
class LatencyRow:
    """One component at one scale: its MACs (paper counting) and measured seconds."""

    scale: int
    stride: int
    component: str
    macs: float
    seconds: float  # median of the repeats
    low: float | None = None  # first quartile of the repeats, seconds
    high: float | None = None  # third quartile

    @property
    def gmacs_per_s(self) -> float:
        return self.macs / self.seconds / GIGA if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "scale": self.scale,
            "stride": self.stride,
            "component": self.component,
            "mmacs": self.macs / 1e6,
            "ms": self.seconds * 1e3,
            "ms_q1": None if self.low is None else self.low * 1e3,
            "ms_q3": None if self.high is None else self.high * 1e3,
            "gmacs_per_s": self.gmacs_per_s,
        }


def latency_rows(latency: NodeLatency, table: CostTable | None = None) -> list[LatencyRow]:
    """Per scale: the cell op, gate, up and down transforms and decoder lateral, with MACs.

    MACs come from ``table`` (default: the paper-counting cost table of the same config and
    size), taken at a layer where the cell has every transform.
    """
    config = latency.config
    if table is None:
        table = cost_table(config, latency.size)
    rows = []
    for s in range(config.num_scales):
        layer = min(max(2, s), config.num_layers - 1)
        macs = {
            "op": float(table.op[layer, s]),
            "gate": float(table.gate[layer, s]),
            "up": float(table.path[layer, s, int(Direction.UP)]),
            "down": float(table.path[layer, s, int(Direction.DOWN)]),
            "lateral": float(table.decoder_lateral[s]),
        }
        for component, m in macs.items():
            t = latency.per_scale[component][s]
            if t is None or m == 0:
                continue
            quartiles = (latency.spread.get(component) or [None] * config.num_scales)[s]
            low, high = quartiles if quartiles is not None else (None, None)
            rows.append(LatencyRow(s, config.stride(s), component, m, float(t), low, high))
    return rows


ALL_OPEN_STATIC = "every path open, no gates"
"""The all-open row of :func:`route_times`: the static network of every path, which has no gates
(the dynamic model with every path open costs its gates more)."""


def route_times(latency: NodeLatency, routes: Mapping[str, Route]) -> list[dict[str, object]]:
    """Each static route's MACs and estimated time (the sum of its nodes' measured times, laid
    out as the paper counts MACs) beside the all-open network's: where equal MACs do not mean
    equal time.

    Returns:
        One dict per route, all-open first: ``route``, ``gmacs``, ``ms``, ``gmacs_ratio`` and
        ``time_ratio`` (to all open) and ``time_per_macs`` (their quotient: above 1, the route
        spends its MACs where they are slow).
    """
    config, size = latency.config, latency.size
    everything = {ALL_OPEN_STATIC: Route.all_open(config), **routes}
    rows: list[dict[str, object]] = []
    for name, route in everything.items():
        macs = cost_table(config, size, route=route).total()
        seconds = latency_cost_table(config, size, route=route, latency=latency).total()
        rows.append({"route": name, "gmacs": macs / GIGA, "ms": seconds * 1e3})
    base = rows[0]
    for row in rows:
        row["gmacs_ratio"] = float(row["gmacs"]) / float(base["gmacs"])
        row["time_ratio"] = float(row["ms"]) / float(base["ms"])
        row["time_per_macs"] = row["time_ratio"] / row["gmacs_ratio"]
    return rows


def format_latency(latency: NodeLatency, table: CostTable | None = None) -> str:
    """A plain-text table of :func:`latency_rows` with the op spread across scales."""
    rows = latency_rows(latency, table)
    unit = mac_unit(r.macs / GIGA for r in rows)  # one prefix for the column
    head = ["scale", "component", unit.label, "ms", "ms Q1-Q3", "GMAC/s"]
    body = [
        [
            f"1/{r.stride}",
            r.component,
            f"{unit(r.macs / GIGA):.3g}",
            f"{r.seconds * 1e3:.3g}",
            "-" if r.low is None else f"{r.low * 1e3:.3g}-{r.high * 1e3:.3g}",
            f"{r.gmacs_per_s:.3g}",
        ]
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in [head, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    ops = [r.seconds for r in rows if r.component == "op"]
    h, w = latency.size
    lines.insert(
        0,
        f"time per node at {h}x{w}, batch {latency.batch}, threads "
        f"{latency.threads} ({'channels_last' if latency.channels_last else 'NCHW'}) on "
        f"{latency.device}, median of {latency.repeats} interleaved repeats",
    )
    if ops:
        lines.append(
            f"cell op: slowest scale {max(ops) / min(ops):.1f}x the fastest; stem "
            f"{latency.stem * 1e3:.2f} ms, predictor + upsampling "
            f"{latency.decoder_fixed * 1e3:.2f} ms"
        )
    return "\n".join(lines)
