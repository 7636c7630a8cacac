"""Gates of any dynamic network: the gate protocol, ``watch`` for networks nobody wrote for
dynviz, the routing space as one kind of gate graph, and two reference networks.

- :mod:`dynviz.gates.graph`: :class:`GateGraph`, :class:`GatePoint`, :class:`Option`,
  :class:`PointKind` (plain data; the records sidecar's ``graph``).
- :mod:`dynviz.gates.collect`: the protocol, :func:`report` in a forward pass and
  :func:`collect` around it; :class:`GatedModel` (a model with ``gate_graph()``).
- :mod:`dynviz.gates.watch`: :func:`watch` attaches points to existing modules by name.
- :mod:`dynviz.gates.routing`: the routing space as a gate graph.
- :mod:`dynviz.gates.skipnet` and :mod:`dynviz.gates.moe`: the two reference networks, a
  block-skipping residual network and a mixture of experts with a top-k router, each with
  ``static(keep)`` for the static network of a plan.

docs/any-network.md walks through wrapping a model.
"""

from __future__ import annotations

from dynviz.gates.collect import Collector, Decision, GatedModel, collect, gate_graph_of, report
from dynviz.gates.graph import GateGraph, GatePoint, Option, PointKind
from dynviz.gates.moe import MoEConfig, MoENet, build_moe, load_balance_loss
from dynviz.gates.routing import cell_point, routing_decisions, routing_graph
from dynviz.gates.skipnet import SkipNet, SkipNetConfig, build_skipnet
from dynviz.gates.watch import Halt, Sigmoid, TopK, Watch, watch

__all__ = [
    "Collector",
    "Decision",
    "GateGraph",
    "GatePoint",
    "GatedModel",
    "Halt",
    "Option",
    "PointKind",
    "Sigmoid",
    "TopK",
    "Watch",
    "cell_point",
    "collect",
    "gate_graph_of",
    "report",
    "routing_decisions",
    "routing_graph",
    "watch",
    "MoEConfig",
    "MoENet",
    "SkipNet",
    "SkipNetConfig",
    "build_moe",
    "build_skipnet",
    "load_balance_loss",
]
