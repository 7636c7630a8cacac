"""The zoo as a catalogue: a model's analytic cost by component (:class:`ModelCost`), the paper's
special cases (the route specs carrying Table 1 numbers) and the zoo's routing spaces.

``dynviz flops`` prints these (:mod:`dynviz.commands.flops`); the explorer's special-case and
latency pages show them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from dynviz.cost import Counting, cost_table, param_table
from dynviz.model.config import RoutingSpaceConfig
from dynviz.model.route import Route
from dynviz.model.zoo import load_spec, preset_names

__all__ = [
    "COMPONENTS",
    "ModelCost",
    "model_cost",
    "routing_spaces",
    "special_case_routes",
    "special_case_table",
    "special_cases",
]

COMPONENTS = ("stem", "cell", "gate", "transform", "node", "decoder")


@dataclass(frozen=True)
class ModelCost:
    name: str
    kind: str  # dynamic | fix | static
    params: int
    macs: int
    breakdown: dict[str, int]
    params_breakdown: dict[str, int]
    size: tuple[int, int]
    counting: str
    counted_size: tuple[int, int] | None = None  # None: ``size`` (see CostTable.counted_size)
    paper: dict[str, float] | None = None
    notes: str = ""

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "model": self.name,
            "kind": self.kind,
            "params": self.params,
            "gmacs": self.gmacs,
            "macs": self.macs,
            "size": list(self.size),
            "counted_size": list(self.counted_size or self.size),
            "counting": self.counting,
            "unit": "GMACs (1e9 multiply-adds; the paper's GFLOPs)",
            "breakdown_gmacs": {k: v / 1e9 for k, v in self.breakdown.items()},
            "params_breakdown": self.params_breakdown,
        }
        if self.paper:
            out["paper"] = self.paper
        return out


def model_cost(
    spec: RoutingSpaceConfig | Route,
    *,
    size: tuple[int, int] = (1024, 2048),
    counting: Counting | str = Counting.PAPER,
) -> ModelCost:
    """Cost of a dynamic model with every path open, or of a static route network."""
    route = spec if isinstance(spec, Route) else None
    config = spec.space if isinstance(spec, Route) else spec
    table = cost_table(config, size, counting=counting, route=route)
    params = param_table(config, route=route)
    breakdown = {k: v for k, v in table.by_component().items()}
    if route is not None:
        kind = "static"
    else:
        kind = "dynamic" if config.has_gates else "fix"
    return ModelCost(
        name=route.name if route is not None else config.name,
        kind=kind,
        params=params.total,
        macs=table.total(),
        breakdown={k: breakdown[k] for k in COMPONENTS if k in breakdown},
        params_breakdown=params.as_dict(),
        size=size,
        counting=Counting(counting).value,
        counted_size=table.counted_size,
        paper=dict(route.meta.get("paper", {})) if route is not None else None,
        notes=str(route.meta.get("notes", "")) if route is not None else "",
    )


def special_cases(
    *, size: tuple[int, int] = (1024, 2048), counting: Counting | str = Counting.PAPER
) -> list[ModelCost]:
    """Every route spec in the zoo that carries the paper's Table 1 numbers."""
    out = []
    for name in preset_names():
        spec = load_spec(name)
        if isinstance(spec, Route) and "paper" in spec.meta:
            out.append(model_cost(spec, size=size, counting=counting))
    return out


def special_case_table(
    *, size: tuple[int, int] = (1024, 2048), counting: Counting | str = Counting.PAPER
) -> pd.DataFrame:
    """:func:`special_cases` as a frame: each case's parameters (M) and GMACs at ``size`` beside
    the paper's Table 1 numbers, and its notes."""
    rows = []
    for cost in special_cases(size=size, counting=counting):
        paper = cost.paper or {}
        rows.append(
            {
                "model": cost.name,
                "params (M)": cost.params / 1e6,
                "GMACs": cost.gmacs,
                "paper params (M)": paper.get("params_m"),
                "paper GFLOPs": paper.get("gflops"),
                "paper mIoU": paper.get("miou"),
                "notes": " ".join(cost.notes.split()),
            }
        )
    return pd.DataFrame(rows)


def special_case_routes(space: RoutingSpaceConfig | None = None) -> dict[str, Route]:
    """``{preset name: route}`` of the zoo's special cases (route specs with the paper's
    numbers), only those drawn in ``space`` when given."""
    out = {}
    for name in preset_names():
        spec = load_spec(name)
        if isinstance(spec, Route) and "paper" in spec.meta:
            if space is None or spec.space == space:
                out[name] = spec
    return out


def routing_spaces() -> dict[str, RoutingSpaceConfig]:
    """``{preset name: config}`` of the zoo's routing spaces (route specs left out)."""
    out = {}
    for name in preset_names():
        spec = load_spec(name)
        if isinstance(spec, RoutingSpaceConfig):
            out[name] = spec
    return out
