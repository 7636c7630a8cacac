"""The zoo as a catalogue: a model's analytic cost by component (:class:`ModelCost`), the paper's
special cases (the route specs carrying Table 1 numbers) and the zoo's routing spaces; and the
models by name, as timm and torchvision users expect: :func:`list_models`, :func:`create_model`
(optionally with a checkpoint's weights) and :func:`load_model` (a trained run), also at the top
level (``dynviz.create_model``).

``dynviz flops`` and ``dynviz models`` print these (:mod:`dynviz.commands.flops`,
:mod:`dynviz.commands.models`); the explorer's special-case and latency pages show them.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass

import pandas as pd

from dynviz.model import RoutingNetwork, build_model
from dynviz.model.checkpoint import CheckpointError, find_checkpoint, load_checkpoint
from dynviz.model.checkpoint import load_model as load_checkpoint_model
from dynviz.model.config import RoutingSpaceConfig
from dynviz.model.cost import Counting, cost_table, param_table
from dynviz.model.route import Route
from dynviz.model.zoo import load_spec, preset_names
from dynviz.units import GIGA

__all__ = [
    "COMPONENTS",
    "ModelCost",
    "create_model",
    "list_models",
    "load_model",
    "model_cost",
    "model_kind",
    "routing_spaces",
    "special_case_routes",
    "special_case_table",
    "special_cases",
]

COMPONENTS = ("stem", "cell", "gate", "transform", "node", "decoder")


def model_kind(spec: RoutingSpaceConfig | Route) -> str:
    """``static`` for a route spec (no gates), else ``dynamic`` (gated routing space) or ``fix``
    (every path open, no gates: Network-Fix)."""
    if isinstance(spec, Route):
        return "static"
    return "dynamic" if spec.has_gates else "fix"


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
        return self.macs / GIGA

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
            "breakdown_gmacs": {k: v / GIGA for k, v in self.breakdown.items()},
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
    return ModelCost(
        name=route.name if route is not None else config.name,
        kind=model_kind(spec),
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


# ------------------------------------------------------------------------------ models by name
def list_models(pattern: str = "*") -> list[str]:
    """The zoo's model names (presets of ``models/`` or ``$DYNVIZ_MODELS``), sorted; ``pattern``
    is a shell-style filter as timm's (``"dynamic-*"``)."""
    return [name for name in preset_names() if fnmatch.fnmatchcase(name, pattern)]


def create_model(
    name: str | os.PathLike[str],
    *,
    num_classes: int | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
) -> RoutingNetwork:
    """The network of a zoo name or YAML path, optionally with a checkpoint's weights.

    Args:
        name: a preset (:func:`list_models`) or a YAML file (routing space or route spec).
        num_classes: output classes (default: the checkpoint's, else the preset's).
        checkpoint: a dynviz checkpoint file or run directory whose weights fit ``name``'s
            network; loaded strictly (every tensor, each of the same shape).

    Returns:
        The network on the CPU: in eval mode with a checkpoint, else freshly initialised in
        train mode (as ``torch.nn`` modules start).

    Raises:
        ConfigError: an unknown name or a bad YAML file (named).
        CheckpointError: the checkpoint is unreadable, or its weights or class count do not fit
            the network (the message names the file and the first tensors that differ).
    """
    if checkpoint is None:
        overrides = {} if num_classes is None else {"num_classes": int(num_classes)}
        return build_model(name, **overrides)
    file = find_checkpoint(checkpoint)
    data = load_checkpoint(file)
    saved = data.get("num_classes")
    if num_classes is not None and saved is not None and int(num_classes) != int(saved):
        raise CheckpointError(
            f"{file}: predicts {saved} classes, not num_classes={num_classes}; leave num_classes "
            "out to take the checkpoint's"
        )
    classes = int(num_classes if num_classes is not None else saved or 0) or None
    model = build_model(name, **({} if classes is None else {"num_classes": classes}))
    own = model.state_dict()
    state = data["model"]
    missing = [k for k in own if k not in state]
    unused = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unused or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} of other shape ({', '.join(shapes[:2])})")
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:2])})")
        if unused:
            parts.append(f"{len(unused)} not in {name} ({', '.join(unused[:2])})")
        raise CheckpointError(
            f"{file}: its weights do not fit {name}: tensors {'; '.join(parts)}; "
            "use dynviz.load_model to rebuild the checkpoint's own network"
        )
    model.load_state_dict(state)
    return model.eval()


def load_model(path: str | os.PathLike[str]) -> RoutingNetwork:
    """The trained network of a checkpoint file or run directory (its ``checkpoint_best.pt``,
    else ``checkpoint_latest.pt``), rebuilt from the network the checkpoint records, in eval
    mode on the CPU. :func:`dynviz.model.checkpoint.load_model` also returns the checkpoint's
    metadata.

    Raises:
        CheckpointError: nothing usable at ``path`` (the message names it).
    """
    return load_checkpoint_model(path)[0]
