"""The gate protocol: how a network reports its per-input decisions.

A network that implements the protocol has a method ``gate_graph() -> GateGraph`` naming its
gate points, and calls :func:`report` in its forward pass at each point::

    from dynviz.gates import GatePoint, GateGraph, report

    class Block(nn.Module):
        def forward(self, x):
            p = torch.sigmoid(self.gate(x))               # (N,) probability of running
            run = p > 0.5
            report(self.point, p, run)                    # values and decisions, per input
            out = x.clone()
            if run.any():                                 # real skipping: only those inputs
                out[run] = x[run] + self.body(x[run])
            return out

:func:`report` costs nothing outside :func:`collect` (one context-variable lookup). Inside it,
every report of one forward pass is kept::

    with collect(model.gate_graph()) as seen:
        logits = model(x)
    seen.decisions["block1"].ran                           # (N, 2) bool: skip, run

A network that does not implement it gets the same reports from :func:`dynviz.gates.watch`,
which attaches forward hooks to its gate modules by name.

Values are what the gate computed for each option (a probability, a router's softmax weight, a
halting score); ``ran`` says which options ran. For a ``SKIP`` or ``EXIT`` point a single
column (the probability of ``run`` or ``exit``) is accepted and expanded to ``[1 - p, p]``. A
point that did not report for some inputs (an early exit stopped them before it) holds NaN
values and no option ran for those inputs.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from dynviz.gates.graph import GateGraph, PointKind
from dynviz.model import ConfigError

__all__ = ["Collector", "Decision", "GatedModel", "collect", "gate_graph_of", "report"]


@runtime_checkable
class GatedModel(Protocol):
    """A network that names its gate points (and calls :func:`report` in its forward)."""

    def gate_graph(self) -> GateGraph: ...


def gate_graph_of(model: object) -> GateGraph:
    """The gate graph a model declares (its ``gate_graph()``, or the one
    :func:`dynviz.gates.watch` attached as ``model.dynviz_gate_graph``).

    Raises:
        ConfigError: the model declares none.
    """
    graph = getattr(model, "dynviz_gate_graph", None)
    if graph is None and isinstance(model, GatedModel):
        graph = model.gate_graph()
    if not isinstance(graph, GateGraph):
        raise ConfigError(
            f"{type(model).__name__} reports no gate graph: implement gate_graph() and call "
            "dynviz.gates.report in its forward, or attach gates with dynviz.gates.watch"
        )
    return graph


@dataclass
class Decision:
    """One point's decisions over a batch.

    Attributes:
        values: ``(N, K)`` float32, each option's value per input (NaN where the point did not
            run for that input).
        ran: ``(N, K)`` bool, which options ran.
    """

    values: torch.Tensor
    ran: torch.Tensor


@dataclass
class Collector:
    """The reports of one or more forward passes (see :func:`collect`)."""

    graph: GateGraph | None = None
    decisions: dict[str, Decision] = field(default_factory=dict)
    batch: int | None = None  # inputs in the forward pass, set by the first report

    def add(
        self,
        point: str,
        values: torch.Tensor,
        ran: torch.Tensor,
        index: torch.Tensor | None = None,
        batch: int | None = None,
    ) -> None:
        values = values.detach().float()
        ran = ran.detach().bool()
        kind = self.graph[point].kind if self.graph is not None else None
        values, ran = _columns(point, kind, values, ran)
        width = self.graph[point].options.__len__() if self.graph is not None else values.shape[1]
        if values.shape[1] != width:
            raise ConfigError(
                f"gate point {point!r} reported {values.shape[1]} option values; its graph "
                f"names {width} options"
            )
        if index is None:
            n = batch if batch is not None else values.shape[0]
            if values.shape[0] != n:
                raise ConfigError(
                    f"gate point {point!r} reported {values.shape[0]} rows for {n} inputs "
                    "(pass index= for a subset)"
                )
        else:
            index = index.detach().long().reshape(-1)
            if index.numel() != values.shape[0]:
                raise ConfigError(
                    f"gate point {point!r}: {index.numel()} indices, {values.shape[0]} rows"
                )
            n = batch if batch is not None else self.batch
            if n is None:
                raise ConfigError(
                    f"gate point {point!r} reported a subset (index=) before any point reported "
                    "the whole batch: pass batch= with it"
                )
            full_values = torch.full((n, values.shape[1]), float("nan"))
            full_ran = torch.zeros((n, values.shape[1]), dtype=torch.bool)
            full_values[index] = values.cpu()
            full_ran[index] = ran.cpu()
            values, ran = full_values, full_ran
        if self.batch is None:
            self.batch = n
        elif n != self.batch:
            raise ConfigError(
                f"gate point {point!r} reported {n} inputs; the batch has {self.batch}"
            )
        if point in self.decisions:
            raise ConfigError(
                f"gate point {point!r} reported twice in one forward pass (a module called twice "
                "needs one point name per call)"
            )
        self.decisions[point] = Decision(values.cpu(), ran.cpu())

    def complete(self) -> dict[str, Decision]:
        """Every point of the graph, in its order: a point that never reported holds NaN values
        and no option ran (its inputs stopped before it).

        Raises:
            ConfigError: a point reported that the graph does not name.
        """
        if self.graph is None:
            return dict(self.decisions)
        unknown = sorted(set(self.decisions) - set(self.graph.point_names))
        if unknown:
            raise ConfigError(
                f"gate points {unknown} reported but not in gate graph {self.graph.name!r} "
                f"(it names {list(self.graph.point_names)[:8]})"
            )
        n = self.batch or 0
        out = {}
        for p in self.graph:
            out[p.name] = self.decisions.get(p.name) or Decision(
                torch.full((n, len(p.options)), float("nan")),
                torch.zeros((n, len(p.options)), dtype=torch.bool),
            )
        return out

    def clear(self) -> None:
        self.decisions.clear()
        self.batch = None


def _columns(
    point: str, kind: PointKind | None, values: torch.Tensor, ran: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, K)`` values and decisions; a single column of a two-option point is expanded."""
    if values.dim() == 1 or (values.dim() == 2 and values.shape[1] == 1):
        if kind not in (PointKind.SKIP, PointKind.EXIT, None):
            raise ConfigError(
                f"gate point {point!r}: one value per input, but it is a {kind.value} point"
            )
        p = values.reshape(-1)
        r = ran.reshape(-1)
        if r.numel() != p.numel():
            raise ConfigError(f"gate point {point!r}: {p.numel()} values, {r.numel()} decisions")
        return torch.stack([1.0 - p, p], 1), torch.stack([~r, r], 1)
    if values.dim() != 2:
        raise ConfigError(
            f"gate point {point!r}: values must be (N,) or (N, options), not {tuple(values.shape)}"
        )
    if ran.shape != values.shape:
        raise ConfigError(
            f"gate point {point!r}: decisions {tuple(ran.shape)} do not match values "
            f"{tuple(values.shape)}"
        )
    return values, ran


_ACTIVE: contextvars.ContextVar[Collector | None] = contextvars.ContextVar(
    "dynviz_gate_collector", default=None
)


def report(
    point: str,
    values: torch.Tensor,
    ran: torch.Tensor,
    *,
    index: torch.Tensor | None = None,
    batch: int | None = None,
) -> None:
    """Report one gate point's per-input values and decisions (a no-op outside
    :func:`collect`).

    Args:
        point: the point's name in the gate graph.
        values: ``(N, K)`` each option's value, or ``(N,)`` the probability of ``run``/``exit``
            of a two-option point.
        ran: the same shape, bool: which options ran.
        index: the rows of the batch these ``N`` inputs are, when only some inputs reached the
            point (after an early exit).
        batch: the number of inputs in the whole forward pass (needed with ``index`` when no
            point reported the whole batch before).
    """
    collector = _ACTIVE.get()
    if collector is not None:
        collector.add(point, values, ran, index, batch)


@contextmanager
def collect(graph: GateGraph | None = None) -> Iterator[Collector]:
    """Keep every :func:`report` made inside the block (checked against ``graph`` if given)."""
    collector = Collector(graph)
    token = _ACTIVE.set(collector)
    try:
        yield collector
    finally:
        _ACTIVE.reset(token)
