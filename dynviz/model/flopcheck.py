"""The analytic cost model against an independent counter on the network that really ran.

:func:`check_flops` runs one image through a network (the skipping forward: a dynamic network
executes its own route for that image, a static one its route) under an independent counter
and compares, by component and by operator, what the counter saw with the analytic MACs of what
ran (:mod:`dynviz.model.cost`, ``complete`` counting: the paper's rules plus what they leave out,
restricted to the cells, gates, transforms and decoder laterals that ran).

Counters:

* ``fvcore``: fvcore's ``FlopCountAnalysis`` (one fused multiply-add = 1, as dynviz): it traces
  the executed forward and counts convolutions, batch norms (2 per element), bilinear
  upsampling (4 per output element) and global pooling (1 per input element); ReLUs, adds and
  multiplies are not counted (it ignores or does not support them).
* ``torch``: ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per MAC, halved here): only
  convolutions (and matrix products, which the networks do not have).

``auto`` takes fvcore when it is installed (``pip install 'dynviz[flops]'``), else torch's.
"""

from __future__ import annotations

import enum
import importlib.util
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dynviz.errors import UserError, require
from dynviz.model.cost import CostItem, CostTable, cost_table, propagate
from dynviz.model.network import RoutingNetwork

__all__ = [
    "FlopCheck",
    "FlopCheckError",
    "check_dataset",
    "check_flops",
    "component_of",
    "executed_items",
    "FlopCounter",
    "resolve_counter",
]

logger = logging.getLogger(__name__)


class FlopCounter(enum.Enum):
    """The independent counter of :func:`check_flops`."""

    AUTO = "auto"
    FVCORE = "fvcore"
    TORCH = "torch"


OPERATORS = ("conv", "bn", "interp", "pool")
"""The analytic operators an independent counter can count, in display order."""

OPERATOR_NAMES = {
    "conv": "convolution",
    "bn": "batch norm",
    "interp": "interpolation",
    "pool": "pooling",
    "relu": "ReLU",
    "add": "add",
    "mul": "multiply",
}

# what each counter's operator keys are, as the cost model's operators
_FVCORE_OPS = {
    "conv": "conv",
    "batch_norm": "bn",
    "upsample_bilinear2d": "interp",
    "adaptive_avg_pool2d": "pool",
}
_TORCH_OPS = {"convolution": "conv"}
_COUNTED = {FlopCounter.FVCORE: ("conv", "bn", "interp", "pool"), FlopCounter.TORCH: ("conv",)}


class FlopCheckError(UserError):
    """A network or image the check cannot count (the message says why)."""


@dataclass(frozen=True)
class FlopCheck:
    """One image's analytic MACs of what ran beside an independent counter's.

    ``analytic`` and ``counted`` map component -> operator -> MACs; ``compared`` are the
    operators the counter counts (the others appear in ``analytic`` only).
    """

    counter: str
    size: tuple[int, int]
    kind: str  # static | dynamic
    active_paths: int
    total_paths: int
    analytic: dict[str, dict[str, int]]
    counted: dict[str, dict[str, int]]
    compared: tuple[str, ...]

    def analytic_by(self, *, component: str | None = None, op: str | None = None) -> int:
        """Analytic MACs of the compared operators (one component or operator, or all)."""
        return _sum(self.analytic, component, op, self.compared)

    def counted_by(self, *, component: str | None = None, op: str | None = None) -> int:
        return _sum(self.counted, component, op, self.compared)

    @property
    def components(self) -> list[str]:
        seen = {c for table in (self.analytic, self.counted) for c in table}
        return [c for c in _COMPONENTS if c in seen] + sorted(seen - set(_COMPONENTS))

    @property
    def relative(self) -> float:
        """(counted - analytic) / analytic over the compared operators."""
        return relative_difference(self.counted_by(), self.analytic_by())

    @property
    def uncounted(self) -> dict[str, int]:
        """Analytic MACs of the operators the counter does not count, by operator."""
        out: dict[str, int] = defaultdict(int)
        for ops in self.analytic.values():
            for op, macs in ops.items():
                if op not in self.compared:
                    out[op] += macs
        return dict(out)

    def to_json(self) -> dict[str, Any]:
        def rows(keys: list[str], key: str) -> dict[str, dict[str, float]]:
            out = {}
            for k in keys:
                a = self.analytic_by(**{key: k})
                c = self.counted_by(**{key: k})
                out[k] = {"analytic": a, "counted": c, "relative": relative_difference(c, a)}
            return out

        return {
            "counter": self.counter,
            "size": list(self.size),
            "kind": self.kind,
            "active_paths": self.active_paths,
            "total_paths": self.total_paths,
            "compared": list(self.compared),
            "analytic_macs": self.analytic_by(),
            "counted_macs": self.counted_by(),
            "relative": self.relative,
            "by_component": rows(self.components, "component"),
            "by_operator": rows(list(self.compared), "op"),
            "uncounted_macs": self.uncounted,
        }


_COMPONENTS = ("stem", "cell", "gate", "transform", "node", "decoder")


def _sum(
    table: dict[str, dict[str, int]],
    component: str | None,
    op: str | None,
    compared: tuple[str, ...],
) -> int:
    return sum(
        macs
        for comp, ops in table.items()
        if component is None or comp == component
        for o, macs in ops.items()
        if o in compared and (op is None or o == op)
    )


def relative_difference(counted: float, analytic: float) -> float:
    """``(counted - analytic) / analytic``; 0 when both are 0, inf when only ``analytic`` is."""
    if analytic == 0:
        return 0.0 if counted == 0 else float("inf")
    return (counted - analytic) / analytic


def resolve_counter(counter: FlopCounter | str) -> FlopCounter:
    """``auto`` -> ``fvcore`` when fvcore is installed, else ``torch``; ``fvcore`` without
    fvcore raises :class:`~dynviz.errors.MissingExtraError` naming the extra.

    Raises:
        FlopCheckError: not a counter's name.
    """
    try:
        counter = FlopCounter(counter)
    except ValueError:
        names = ", ".join(c.value for c in FlopCounter)
        raise FlopCheckError(f"counter {counter!r} is not one of {names}") from None
    if counter is FlopCounter.AUTO:
        found = importlib.util.find_spec("fvcore") is not None
        return FlopCounter.FVCORE if found else FlopCounter.TORCH
    if counter is FlopCounter.FVCORE:
        require("fvcore.nn", extra="flops", purpose="counting with fvcore")
    return counter


def component_of(module: str) -> str:
    """The cost model's component of a dotted module name of a network: ``stem.sep1.dw`` ->
    ``stem``, ``cells.3_1.op.pw1`` -> ``cell``, ``cells.3_1.gate`` -> ``gate``,
    ``cells.3_1.up.conv`` -> ``transform``, ``cells.3_1`` (adds, alpha multiplies) -> ``node``,
    ``decoder.lateral.2.conv`` -> ``decoder``; anything else ``other``."""
    parts = module.split(".")
    if parts[0] in ("stem", "decoder"):
        return parts[0]
    if parts[0] == "cells" and len(parts) >= 3:
        return {"op": "cell", "gate": "gate", "up": "transform", "down": "transform"}.get(
            parts[2], "node"
        )
    if parts[0] == "cells" and len(parts) == 2:
        return "node"
    return "other"


def executed_items(
    table: CostTable, active: torch.Tensor, *, gates_ran: bool
) -> dict[str, dict[str, int]]:
    """Component -> operator -> MACs of what one forward pass ran: the items of ``table``
    (built for the network's space or route) whose cell operation, gate, transform or decoder
    lateral ran for the computed paths ``active`` ``(L + 1, S, 3)`` (as :meth:`CostTable.real`
    decides), with the node sums' adds of this route.

    Summed over every operator this is ``table.real(active[None], gates_ran=gates_ran)``.
    """
    config = table.config
    active = active.bool().unsqueeze(0)
    has, on, count = propagate(config, active)
    has, on, count = has[0], on[0], count[0]
    present = has[-1]
    reached = present.flip(-1).cummax(-1).values.flip(-1)  # some scale >= s reaches the decoder
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def ran(item: CostItem) -> bool:
        if item.component == "stem":
            return True
        if item.component == "cell":
            return bool(on[item.layer, item.scale])
        if item.component == "gate":
            return gates_ran and bool(has[item.layer, item.scale])
        if item.component == "transform":
            return bool(active[0, item.layer, item.scale, int(item.direction)])
        if item.component == "node":
            return False  # the adds of this route's node sums, below
        if item.module.startswith("decoder.lateral."):
            return bool(reached[int(item.module.split(".")[2])])
        return True  # the predictor and the final upsampling

    for item in table.items:
        if ran(item):
            out[item.component][item.op] += item.macs
    extra = (count - 1).clamp(min=0).double() * table.node_add
    if float(extra.sum()) > 0:
        out["node"]["add"] += int(round(float(extra.sum())))
    return {c: dict(ops) for c, ops in out.items()}


class _Executed(nn.Module):
    """The network's skipping forward with tensor outputs only (logits and alphas: the alphas
    keep every gate that ran in a traced graph, also where it closed every path)."""

    def __init__(self, net: RoutingNetwork) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(images, skip=True)
        return out.logits, out.gates


def _exclusive(inclusive: dict[str, Counter]) -> dict[str, Counter]:
    """Per-module counts that include the submodules' (as both counters report them) to each
    module's own: a module's count less those of its nearest listed descendants."""
    own = {name: Counter(counts) for name, counts in inclusive.items()}
    for name, counts in inclusive.items():
        parent = name
        while parent:
            parent = parent.rpartition(".")[0]
            if parent in inclusive:
                own[parent].subtract(counts)
                break
    return own


def _by_component(own: dict[str, Counter], prefix: str, ops: dict[str, str]) -> dict:
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for name, counts in own.items():
        if name != prefix.rstrip(".") and not name.startswith(prefix):
            continue
        module = name[len(prefix) :] if name.startswith(prefix) else ""
        for op, value in counts.items():
            if value:
                key = str(op).split(".")[-1]
                out[component_of(module) if module else "other"][ops.get(key, key)] += int(value)
    return {c: dict(v) for c, v in out.items()}


def _count_fvcore(wrapper: _Executed, images: torch.Tensor) -> dict[str, dict[str, int]]:
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(wrapper, (images,))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    inclusive = {name: Counter(ops) for name, ops in analysis.by_module_and_operator().items()}
    inclusive.pop("", None)  # the wrapper itself: everything, already in "net"
    return _by_component(_exclusive(inclusive), "net.", _FVCORE_OPS)


def _count_torch(wrapper: _Executed, images: torch.Tensor) -> dict[str, dict[str, int]]:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        wrapper(images)
    root = type(wrapper).__name__
    inclusive = {
        name: Counter({str(op).split(".")[-1]: flops // 2 for op, flops in ops.items()})
        for name, ops in counter.get_flop_counts().items()
        if name != "Global" and name != root
    }
    return _by_component(_exclusive(inclusive), f"{root}.net.", _TORCH_OPS)


def check_flops(
    model: RoutingNetwork,
    image: torch.Tensor,
    *,
    counter: FlopCounter | str = FlopCounter.AUTO,
) -> FlopCheck:
    """Count one image's forward pass with an independent counter, beside the analytic MACs
    of what ran.

    Args:
        model: a static network (its route runs) or a dynamic one (the gates choose the route
            of this image); put in eval mode for the count.
        image: ``(3, H, W)`` or ``(1, 3, H, W)`` normalised image (one image: a dynamic
            network's route is per image).
        counter: ``auto``, ``fvcore`` or ``torch`` (see the module docstring).

    Raises:
        FlopCheckError: more than one image, or an unknown counter.
        MissingExtraError: ``counter="fvcore"`` without fvcore.
    """
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise FlopCheckError(
            f"the check counts one (1, 3, H, W) image at a time, not {tuple(image.shape)}"
        )
    chosen = resolve_counter(counter)
    image = image.to(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            active = model(image, skip=True).active[0].cpu()
            wrapper = _Executed(model)
            if chosen is FlopCounter.FVCORE:
                counted = _count_fvcore(wrapper, image)
            else:
                counted = _count_torch(wrapper, image)
    finally:
        model.train(was_training)
    size = (int(image.shape[-2]), int(image.shape[-1]))
    table = cost_table(model.config, size, counting="complete", route=model.route)
    analytic = executed_items(table, active, gates_ran=model.is_dynamic)
    paths = model.route_mask.cpu()
    check = FlopCheck(
        counter=chosen.value,
        size=size,
        kind="dynamic" if model.is_dynamic else "static",
        active_paths=int(active.sum()),
        total_paths=int(paths.sum()),
        analytic=analytic,
        counted=counted,
        compared=_COUNTED[chosen],
    )
    logger.debug("flop check %s: %s", chosen.value, check.to_json())
    return check


def check_dataset(
    model: RoutingNetwork,
    dataset: Any,
    count: int,
    *,
    counter: FlopCounter | str = FlopCounter.AUTO,
) -> list[tuple[str, FlopCheck]]:
    """:func:`check_flops` on the first ``count`` images of a dataset (as its transform gives
    them), as ``(image_id, check)`` pairs."""
    out = []
    for index in range(min(count, len(dataset))):
        item = dataset[index]
        out.append((str(item["image_id"]), check_flops(model, item["image"], counter=counter)))
    return out
