"""Gates for a network nobody wrote for dynviz: forward hooks on its gate modules, by name.

::

    from dynviz.gates import watch, Sigmoid, TopK

    watched = watch(model, {
        "layer1.0.gate": Sigmoid(threshold=0.5, macs=2.4e6),   # a block's run/skip gate
        "moe.router": TopK(k=2, macs=[1.2e6] * 4),             # a top-2 router over 4 experts
        "exit1.score": Halt(threshold=0.9),                    # an early exit's halting score
    }, base_macs=3.1e6)
    model.dynviz_gate_graph                                    # the GateGraph, read by record
    watched.remove()                                           # the hooks go again

The model's code is not edited: a hook reads each named module's output on every forward pass
and reports it (:func:`dynviz.gates.report`, a no-op outside :func:`dynviz.gates.collect`). The
watched module must compute what the model decides with, so the threshold or ``k`` given here
is the model's own rule, stated once more for the records:

- :class:`Sigmoid`: one value per input, the probability that the block runs (``logits=True``
  applies the sigmoid first); the block runs where it is above ``threshold``.
- :class:`TopK`: ``(N, E)`` router scores (``(N, ..., E)`` over positions: each expert's value is
  its mean weight over the input's positions, and it ran if any position chose it); the softmax
  is applied first unless ``logits=False``; the ``k`` largest run.
- :class:`Halt`: one value per input, the probability of stopping at this exit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dynviz.gates.collect import report
from dynviz.gates.graph import GateGraph, GatePoint
from dynviz.model import ConfigError

__all__ = ["Halt", "Sigmoid", "TopK", "Watch", "watch"]


def _one_per_input(name: str, out: torch.Tensor) -> torch.Tensor:
    if out.dim() == 0 or out[0].numel() != 1:
        raise ConfigError(
            f"watched module {name!r} returned {tuple(out.shape)}; a gate gives one value per "
            "input ((N,) or (N, 1, ...))"
        )
    return out.reshape(out.shape[0])


@dataclass(frozen=True)
class _Probability:
    """A module that gives one probability (or its logit) per input, and the threshold above
    which the model acts on it."""

    threshold: float = 0.5
    logits: bool = False
    macs: float | None = None

    def decide(self, name: str, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = _one_per_input(name, out.float())
        if self.logits:
            p = torch.sigmoid(p)
        return p, p > self.threshold


@dataclass(frozen=True)
class Sigmoid(_Probability):
    """A run/skip gate: the module gives the probability of running (or its logit)."""

    def point(self, name: str, module: nn.Module) -> GatePoint:
        return GatePoint.skip(name, macs=self.macs)


@dataclass(frozen=True)
class Halt(_Probability):
    """An early exit: the module gives the probability of stopping here (or its logit)."""

    def point(self, name: str, module: nn.Module) -> GatePoint:
        return GatePoint.exit(name, macs=self.macs)


@dataclass(frozen=True)
class TopK:
    """A top-``k`` router over ``experts`` options (read from a ``nn.Linear``'s
    ``out_features`` when not given)."""

    k: int = 1
    experts: int | None = None
    names: Sequence[str] | None = None
    logits: bool = True
    macs: Sequence[float] | None = None

    def point(self, name: str, module: nn.Module) -> GatePoint:
        count = self.experts or (len(self.names) if self.names else None)
        if count is None:
            count = getattr(module, "out_features", None)
        if not isinstance(count, int):
            raise ConfigError(
                f"watched router {name!r}: say how many experts (TopK(experts=N)); "
                f"{type(module).__name__} does not tell"
            )
        names = list(self.names) if self.names else [f"expert{i}" for i in range(count)]
        return GatePoint.router(name, names, k=self.k, macs=self.macs)

    def decide(self, name: str, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = out.float()
        if scores.dim() < 2:
            raise ConfigError(
                f"watched router {name!r} returned {tuple(out.shape)}; expected (N, E)"
            )
        weights = scores.softmax(-1) if self.logits else scores
        chosen = torch.zeros_like(weights, dtype=torch.bool)
        chosen.scatter_(-1, weights.topk(self.k, dim=-1).indices, True)
        n, e = weights.shape[0], weights.shape[-1]
        if weights.dim() > 2:  # positions: mean weight, ran if any position chose it
            return weights.reshape(n, -1, e).mean(1), chosen.reshape(n, -1, e).any(1)
        return weights, chosen


Spec = Sigmoid | Halt | TopK


class Watch:
    """The hooks :func:`watch` attached; :meth:`remove` takes them off again."""

    def __init__(self, model: nn.Module, graph: GateGraph, handles: list[Any]) -> None:
        self.model = model
        self.graph = graph
        self._handles = handles

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if getattr(self.model, "dynviz_gate_graph", None) is self.graph:
            del self.model.dynviz_gate_graph

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def watch(
    model: nn.Module,
    points: Mapping[str, Spec],
    *,
    name: str | None = None,
    base_macs: float | None = None,
) -> Watch:
    """Attach gate points to existing modules of ``model`` by their names.

    Args:
        model: any ``nn.Module``; its code is not edited.
        points: ``{module name: Sigmoid(...) | TopK(...) | Halt(...)}`` in the order the
            points run (the module names of ``model.named_modules()``).
        name: the network's name in the records (default: its class name).
        base_macs: the cost every input pays, for per-input real costs.

    Returns:
        The :class:`Watch` (``.graph`` is the :class:`GateGraph`, also set as
        ``model.dynviz_gate_graph`` for :func:`dynviz.gates.gate_graph_of`).

    Raises:
        ConfigError: a name that is not a module of ``model`` (with the closest names), or a
            spec that is not one of the three.
    """
    modules = dict(model.named_modules())
    graph_points, handles = [], []
    for point_name, spec in points.items():
        if point_name not in modules:
            close = [n for n in modules if n and point_name.split(".")[-1] in n][:5]
            hint = f"; modules with a similar name: {close}" if close else ""
            raise ConfigError(f"watch: {type(model).__name__} has no module {point_name!r}{hint}")
        if not isinstance(spec, Sigmoid | Halt | TopK):
            raise ConfigError(
                f"watch: {point_name!r} must be Sigmoid(...), TopK(...) or Halt(...), not {spec!r}"
            )
        module = modules[point_name]
        graph_points.append(spec.point(point_name, module))

        def hook(_module: nn.Module, _inputs: Any, out: Any, *, p=point_name, s=spec) -> None:
            tensor = out[0] if isinstance(out, tuple | list) else out
            if not isinstance(tensor, torch.Tensor):
                raise ConfigError(
                    f"watched module {p!r} returned {type(out).__name__}, not a tensor"
                )
            values, ran = s.decide(p, tensor.detach())
            report(p, values, ran)

        handles.append(module.register_forward_hook(hook))
    graph = GateGraph(tuple(graph_points), name=name or type(model).__name__, base_macs=base_macs)
    model.dynviz_gate_graph = graph
    return Watch(model, graph, handles)
