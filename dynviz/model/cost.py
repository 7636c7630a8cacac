"""Analytic cost model: MACs per component, real and expected cost per image, parameters.

Unit: MACs (1 multiply-add = 1), reported as GMACs (1e9 MACs); the paper's "FLOPs" are the same
unit. Two counting modes:

``paper``
    The official rules (``research/official_repo.md`` section 5): conv = k*k*(Cin/groups)*Cout*
    Hout*Wout (bias not counted), affine BN = 2 per element, ReLU = 1 per element, global pool =
    1 per input element; interpolation and element-wise adds are not counted; the initial cell's
    own operation and gate are not charged, nor is the keep ReLU of the last layer. Transforms are
    charged to the path that runs them. The decoder is costed at its true (non-square) size.
``complete``
    Also charges what ran but the paper leaves out: the initial cell's operation and gate, the
    last layer's keep ReLU, the identity add of each cell, the sums of node inputs, the alpha
    multiplies of gated paths, bilinear interpolation (4 per output element, as fvcore) in up
    transforms, small gates and the decoder, and the decoder's adds.
``official``
    What the official code's counters report (docs/official.md): the paper rules, but the
    decoder is costed on ``h x h`` maps (the official ``output_shape`` uses the height for both
    sides) with all four laterals always charged, every gate of layers 1..L is charged in every
    image (also where its cell received nothing or was dropped), a cell's operation is charged
    when its alpha sum is above 1e-4 and a transform when its alpha is above 1e-4. Expected
    cost (:meth:`CostTable.backbone_expected`) is the official ``expt_flops``. The size is the
    one given, not padded (the official ``FIX_SIZE_FOR_FLOPS``): every map is floor-divided
    from it as ``cal_op_flops`` does (a 200x400 input is counted on 50x100 maps at 1/4, where
    the network runs on the 224x416 padded input and the other countings count 56x104).

Per image, *real* cost counts what was executed (cells with input run their gate; a cell runs its
operation when one of its paths is open; each open path runs its transform); *expected* cost is
Eq. 7 summed by Eq. 8, differentiable in alpha: ``max_j(alpha_j) * C(op) + sum_j alpha_j * C(T_j)``
plus the gates, stem and decoder that ran.

The module runs to about 550 lines on purpose: the counting rules above are one idea, and the
table, its per-part builders (stem, cell, gate, transform, node sums, decoder) and the parameter
count apply them together; the reachability they rely on is :func:`dynviz.model.topology.propagate`.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from dynviz.model.config import (
    OFFICIAL_DROP_THRESHOLD,
    ConfigError,
    Direction,
    RoutingSpaceConfig,
)
from dynviz.model.ops import small_gate_size
from dynviz.model.route import Route
from dynviz.model.topology import propagate

__all__ = [
    "CostItem",
    "CostTable",
    "Counting",
    "ParamTable",
    "cost_table",
    "param_table",
    "propagate",
]

BILINEAR_PER_OUTPUT = 4  # fvcore's convention for upsample_bilinear2d


class Counting(enum.Enum):
    PAPER = "paper"
    COMPLETE = "complete"
    OFFICIAL = "official"


@dataclass(frozen=True)
class CostItem:
    """One counted operation. ``module`` is the dotted name of the module that runs it."""

    component: str  # stem | cell | gate | transform | node | decoder
    module: str
    op: str  # conv | bn | relu | pool | interp | add | mul
    macs: int
    layer: int | None = None
    scale: int | None = None
    direction: Direction | None = None


def _conv(k: int, cin: int, cout: int, hw: int, groups: int = 1) -> int:
    return k * k * (cin // groups) * cout * hw


@dataclass
class CostTable:
    """Per-component MACs of one network at one input size.

    ``op``, ``gate`` and ``path`` hold the cost of each cell operation, gate and path (transform)
    as ``(L + 1, S)`` / ``(L + 1, S, 3)`` float64 tensors, zero where absent or not charged.
    ``size`` is the input size asked for; ``counted_size`` the size counted at: the input padded
    to a multiple of the largest stride as the network runs it (paper and complete counting), or
    ``size`` itself (official counting, as the official counters do).
    """

    config: RoutingSpaceConfig
    size: tuple[int, int]
    counted_size: tuple[int, int]
    counting: Counting
    items: list[CostItem]
    op: torch.Tensor
    gate: torch.Tensor
    path: torch.Tensor
    node_add: torch.Tensor  # (L + 1, S): C*h*w of a node, per extra input (complete only)
    stem: int
    decoder_lateral: list[int]
    decoder_fixed: int  # predictor and final upsampling
    with_gates: bool = field(default=True)

    # ------------------------------------------------------------------------- aggregates
    def by_component(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for item in self.items:
            out[item.component] += item.macs
        return dict(out)

    def by_module(self, op: str | None = None) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for item in self.items:
            if op is None or item.op == op:
                out[item.module] += item.macs
        return dict(out)

    @property
    def decoder(self) -> int:
        return sum(self.decoder_lateral) + self.decoder_fixed

    def total(self) -> int:
        """Every path open (gates included when the network has them)."""
        return sum(item.macs for item in self.items)

    def backbone_all_open(self) -> float:
        """The budget normaliser: Eq. 7-8 with every alpha 1 (cells and transforms only)."""
        return float(self.op.sum() + self.path.sum())

    # ------------------------------------------------------------------------- per image
    def _decoder_cost(self, present: torch.Tensor) -> torch.Tensor:
        """Decoder MACs per sample; a lateral runs when its scale or a coarser one is present."""
        reached = present.flip(-1).cummax(-1).values.flip(-1)  # (B, S): some scale >= s present
        lateral = torch.tensor(self.decoder_lateral, dtype=torch.float64, device=present.device)
        return (reached.to(torch.float64) * lateral).sum(-1) + self.decoder_fixed

    def real(self, active: torch.Tensor, *, gates_ran: bool | None = None) -> torch.Tensor:
        """MACs executed per sample, ``(B,)`` float64.

        Args:
            active: ``(B, L + 1, S, 3)`` bool, the paths that were computed (``out.active``),
                or the alphas (``out.gates``): official counting then applies its 1e-4 rules.
            gates_ran: whether the gates were evaluated (False for forced routes and static
                networks); defaults to whether the table includes gates.
        """
        gates_ran = self.with_gates if gates_ran is None else gates_ran
        if self.counting is Counting.OFFICIAL:
            return self._official_real(active, gates_ran=gates_ran)
        if active.is_floating_point():
            active = active > self.config.active_threshold
        active = active.bool()
        has, on, count = propagate(self.config, active)
        f = torch.float64
        cost = (on.to(f) * self.op).sum((1, 2))
        cost = cost + (active.to(f) * self.path).sum((1, 2, 3))
        if gates_ran:
            cost = cost + (has.to(f) * self.gate).sum((1, 2))
        cost = cost + ((count - 1).clamp(min=0).to(f) * self.node_add).sum((1, 2))
        return cost + self.stem + self._decoder_cost(has[:, -1])

    def real_from(
        self,
        gates: torch.Tensor,
        active: torch.Tensor | None = None,
        *,
        gates_ran: bool | None = None,
    ) -> torch.Tensor:
        """:meth:`real` of a forward pass, read as this counting reads it: official counting
        from the alphas ``gates`` (its 1e-4 rules), the others from the computed paths
        ``active`` (default: the alphas above the config's ``active_threshold``)."""
        if self.counting is Counting.OFFICIAL:
            return self.real(gates, gates_ran=gates_ran)
        if active is None:
            active = gates > self.config.active_threshold
        return self.real(active, gates_ran=gates_ran)

    def expected(self, gates: torch.Tensor, *, gates_ran: bool | None = None) -> torch.Tensor:
        """Eq. 7-8 per sample, differentiable in ``gates`` ``(B, L + 1, S, 3)``, plus the gates,
        stem and decoder that ran. Equals :meth:`real` when every alpha is 0 or 1."""
        gates_ran = self.with_gates if gates_ran is None else gates_ran
        op = self.op.to(gates)
        path = self.path.to(gates)
        cost = (gates.amax(-1) * op).sum((1, 2)) + (gates * path).sum((1, 2, 3))
        if self.counting is Counting.OFFICIAL:  # gates in every image, decoder constant
            fixed = self.stem + self.decoder + (float(self.gate.sum()) if gates_ran else 0.0)
            return cost + fixed
        with torch.no_grad():
            active = gates > self.config.active_threshold
            has, _, count = propagate(self.config, active)
            fixed = ((count - 1).clamp(min=0).double() * self.node_add).sum((1, 2))
            if gates_ran:
                fixed = fixed + (has.double() * self.gate).sum((1, 2))
            fixed = fixed + self.stem + self._decoder_cost(has[:, -1])
        return cost + fixed.to(cost.dtype)

    def _official_real(self, active: torch.Tensor, *, gates_ran: bool) -> torch.Tensor:
        """The official real counter: ops with alpha sum > 1e-4, transforms with alpha > 1e-4,
        every gate of layers 1..L, the stem and the (constant) decoder."""
        f = torch.float64
        if active.is_floating_point():
            alpha = active.to(f)
            paths = alpha > OFFICIAL_DROP_THRESHOLD
            on = alpha.sum(-1) > OFFICIAL_DROP_THRESHOLD
        else:
            paths = active.bool()
            on = paths.any(-1)
        cost = (on.to(f) * self.op).sum((1, 2)) + (paths.to(f) * self.path).sum((1, 2, 3))
        if gates_ran:
            cost = cost + float(self.gate.sum())
        return cost + self.stem + self.decoder

    def backbone_expected(self, gates: torch.Tensor) -> torch.Tensor:
        """Eq. 7-8 over cells and transforms only, ``(B,)``: what the budget loss constrains."""
        op = self.op.to(gates)
        path = self.path.to(gates)
        return (gates.amax(-1) * op).sum((1, 2)) + (gates * path).sum((1, 2, 3))

    def route_cost(self, route: Route) -> int:
        """MACs of the static network of ``route`` (no gates)."""
        active = route.mask().unsqueeze(0)
        return int(round(float(self.real(active, gates_ran=False)[0])))


@dataclass(frozen=True)
class _Grid:
    """The map sizes a cost table counts at: ``(height, width)`` is the counted input size."""

    height: int
    width: int
    counting: Counting

    @property
    def complete(self) -> bool:
        return self.counting is Counting.COMPLETE

    @property
    def official(self) -> bool:
        return self.counting is Counting.OFFICIAL

    def sides(self, scale: int) -> tuple[int, int]:
        return self.height // 4 >> scale, self.width // 4 >> scale

    def hw(self, scale: int) -> int:
        h, w = self.sides(scale)
        return h * w

    def hw_decoder(self, scale: int) -> int:
        """Official counting: h x h maps (its output_shape reads the height twice)."""
        return self.sides(scale)[0] ** 2 if self.official else self.hw(scale)


def _stem_items(config: RoutingSpaceConfig, grid: _Grid) -> list[CostItem]:
    """Stem: 3x3 s2 conv + BN + ReLU at 1/2, separable conv at 1/2, separable s2 conv to 1/4."""
    c0 = config.base_channels
    half = (grid.height // 2) * (grid.width // 2)
    stem = [
        ("stem.conv1", "conv", _conv(3, 3, c0, half)),
        ("stem.bn1", "bn", 2 * c0 * half),
        ("stem.bn1", "relu", c0 * half),
    ]
    for name, out_hw in (("stem.sep1", half), ("stem.sep2", grid.hw(0))):
        stem += [
            (f"{name}.dw", "conv", _conv(3, c0, c0, out_hw, groups=c0)),
            (f"{name}.pw", "conv", _conv(1, c0, c0, out_hw)),
            (f"{name}.bn", "bn", 2 * c0 * out_hw),
            (f"{name}.bn", "relu", c0 * out_hw),
        ]
    return [CostItem("stem", m, op, macs) for m, op, macs in stem]


def _op_items(config: RoutingSpaceConfig, grid: _Grid, layer: int, scale: int) -> list[CostItem]:
    """The cell operation ``SepConv`` (and, complete counting, its residual add)."""
    c, n = config.channels(scale), grid.hw(scale)
    prefix = f"cells.{layer}_{scale}"
    where = {"layer": layer, "scale": scale}
    items = [
        CostItem("cell", f"{prefix}.op.dw1", "conv", _conv(3, c, c, n, groups=c), **where),
        CostItem("cell", f"{prefix}.op.pw1", "conv", _conv(1, c, c, n), **where),
        CostItem("cell", f"{prefix}.op.bn1", "bn", 2 * c * n, **where),
        CostItem("cell", f"{prefix}.op.bn1", "relu", c * n, **where),
        CostItem("cell", f"{prefix}.op.dw2", "conv", _conv(3, c, c, n, groups=c), **where),
        CostItem("cell", f"{prefix}.op.pw2", "conv", _conv(1, c, c, n), **where),
        CostItem("cell", f"{prefix}.op.bn2", "bn", 2 * c * n, **where),
    ]
    if grid.complete:
        items.append(CostItem("cell", f"{prefix}.op", "add", c * n, **where))
    return items


def _gate_items(
    config: RoutingSpaceConfig, grid: _Grid, layer: int, scale: int, paths: int
) -> list[CostItem]:
    """The soft conditional gate of a cell with ``paths`` outputs."""
    c, gate_in = config.channels(scale), grid.hw(scale)
    prefix = f"cells.{layer}_{scale}"
    where = {"layer": layer, "scale": scale}
    items = []
    if config.gate.value == "small":
        h, w = grid.sides(scale)  # the official counter floors (an empty map costs 0)
        gh, gw = (h // 4, w // 4) if grid.official else small_gate_size(h, w)
        gate_in = gh * gw
        if grid.complete:
            macs = BILINEAR_PER_OUTPUT * c * gate_in
            items.append(CostItem("gate", f"{prefix}.gate", "interp", macs, **where))
    return [
        *items,
        CostItem("gate", f"{prefix}.gate.conv1", "conv", _conv(1, c, c // 2, gate_in), **where),
        CostItem("gate", f"{prefix}.gate.bn", "bn", 2 * (c // 2) * gate_in, **where),
        CostItem("gate", f"{prefix}.gate.bn", "relu", (c // 2) * gate_in, **where),
        CostItem("gate", f"{prefix}.gate", "pool", (c // 2) * gate_in, **where),
        CostItem("gate", f"{prefix}.gate.conv2", "conv", _conv(1, c // 2, paths, 1), **where),
    ]


def _transform_items(
    config: RoutingSpaceConfig,
    grid: _Grid,
    key: tuple[int, int, Direction],
    *,
    with_gates: bool,
) -> list[CostItem]:
    """The path ``key``: the cell's output ReLU, its up or down transform, and (complete
    counting, gated) the multiplication by its gate."""
    layer, scale, d = key
    c, n = config.channels(scale), grid.hw(scale)
    prefix = f"cells.{layer}_{scale}"
    pw = {"layer": layer, "scale": scale, "direction": d}
    items = []
    last_keep = d is Direction.KEEP and layer == config.num_layers
    if grid.complete or not last_keep:
        items.append(CostItem("transform", prefix, "relu", c * n, **pw))
    if d is Direction.UP:
        co, out = c // 2, n * 4
        items += [
            CostItem("transform", f"{prefix}.up.conv", "conv", _conv(1, c, co, n), **pw),
            CostItem("transform", f"{prefix}.up.bn", "bn", 2 * co * n, **pw),
            CostItem("transform", f"{prefix}.up.bn", "relu", co * n, **pw),
        ]
        if grid.complete:
            macs = BILINEAR_PER_OUTPUT * co * out
            items.append(CostItem("transform", f"{prefix}.up", "interp", macs, **pw))
    elif d is Direction.DOWN:
        co, out = 2 * c, (grid.sides(scale)[0] // 2) * (grid.sides(scale)[1] // 2)
        items += [
            CostItem("transform", f"{prefix}.down.conv", "conv", _conv(1, c, co, out), **pw),
            CostItem("transform", f"{prefix}.down.bn", "bn", 2 * co * out, **pw),
            CostItem("transform", f"{prefix}.down.bn", "relu", co * out, **pw),
        ]
    else:
        co, out = c, n
    if grid.complete and with_gates:
        items.append(CostItem("transform", prefix, "mul", co * out, **pw))
    return items


def _node_add_items(
    config: RoutingSpaceConfig, node_add: torch.Tensor, route: Route | None
) -> list[CostItem]:
    """Complete counting: the adds of the node sums in the all-open network (or the route's)."""
    open_mask = (route.mask() if route else Route.all_open(config).mask()).unsqueeze(0)
    counts = propagate(config, open_mask)[2][0]
    items = []
    for layer, scale in config.cells:
        extra = int(counts[layer, scale]) - 1
        if extra > 0:
            macs = extra * int(node_add[layer, scale])
            items.append(
                CostItem("node", f"cells.{layer}_{scale}", "add", macs, layer=layer, scale=scale)
            )
    return items


def _decoder_items(
    config: RoutingSpaceConfig, grid: _Grid, route: Route | None
) -> tuple[list[int], list[CostItem], list[CostItem]]:
    """Decoder: lateral ConvBNReLU per scale, top-down add and x2, 3x3 predictor, x4 upsampling.

    Returns:
        ``(lateral cost per scale, lateral items, fixed items)``; official counting counts
        every lateral.
    """
    lateral_cost, items = [], []
    last = config.num_layers
    top = max(
        s
        for s in range(config.num_scales)  # coarsest scale reaching the decoder
        if grid.official or route is None or route.directions(last, s)
    )
    for s in range(config.num_scales):
        if s > top:  # nothing arrives at or above this scale: the lateral never runs
            lateral_cost.append(0)
            continue
        c, n = config.channels(s), grid.hw_decoder(s)
        co = c // 2 if s > 0 else config.base_channels
        lat = [
            CostItem("decoder", f"decoder.lateral.{s}.conv", "conv", _conv(1, c, co, n)),
            CostItem("decoder", f"decoder.lateral.{s}.bn", "bn", 2 * co * n),
            CostItem("decoder", f"decoder.lateral.{s}.bn", "relu", co * n),
        ]
        if grid.complete and s < top:
            lat.append(CostItem("decoder", f"decoder.lateral.{s}", "add", c * n))
        if grid.complete and s > 0:
            macs = BILINEAR_PER_OUTPUT * co * n * 4
            lat.append(CostItem("decoder", f"decoder.lateral.{s}", "interp", macs))
        lateral_cost.append(sum(i.macs for i in lat))
        items += lat
    k, c0 = config.num_classes, config.base_channels
    fixed = [CostItem("decoder", "decoder.predictor", "conv", _conv(3, c0, k, grid.hw_decoder(0)))]
    if grid.complete:
        macs = BILINEAR_PER_OUTPUT * k * grid.height * grid.width
        fixed.append(CostItem("decoder", "decoder", "interp", macs))
    return lateral_cost, items, fixed


def cost_table(
    config: RoutingSpaceConfig,
    size: tuple[int, int] = (1024, 2048),
    *,
    counting: Counting | str = Counting.PAPER,
    route: Route | None = None,
) -> CostTable:
    """Build the cost table of ``config`` (or of the static network of ``route``) at ``size``.

    ``size`` is the input (H, W). Paper and complete counting pad it to a multiple of the largest
    stride as the network does; official counting counts at ``size`` itself, each map's sides
    floor-divided from it as the official counters do (``CostTable.counted_size`` says which).

    Raises:
        ConfigError: ``size`` is not two positive integers.
    """
    if len(size) != 2 or any(int(v) != v or v < 1 for v in size):
        raise ConfigError(f"input size {tuple(size)} must be two positive integers (H W)")
    counting = Counting(counting)
    stride = config.max_stride
    if counting is Counting.OFFICIAL:  # the official FIX_SIZE_FOR_FLOPS: not padded
        grid = _Grid(int(size[0]), int(size[1]), counting)
    else:
        pad = [-(-int(v) // stride) * stride for v in size]
        grid = _Grid(pad[0], pad[1], counting)
    with_gates = config.has_gates and route is None
    stem = _stem_items(config, grid)
    items = list(stem)

    shape = (config.num_layers + 1, config.num_scales)
    op_cost = torch.zeros(shape, dtype=torch.float64)
    gate_cost = torch.zeros(shape, dtype=torch.float64)
    path_cost = torch.zeros((*shape, len(Direction)), dtype=torch.float64)
    node_add = torch.zeros(shape, dtype=torch.float64)

    for layer, scale in config.cells:
        directions = route.directions(layer, scale) if route else config.directions(layer, scale)
        if not directions:
            continue
        charged = grid.complete or layer > 0  # the paper never charges the initial op and gate
        cell_items = _op_items(config, grid, layer, scale) if charged else []
        op_cost[layer, scale] = sum(i.macs for i in cell_items)
        items += cell_items
        if with_gates and charged:
            gate_items = _gate_items(config, grid, layer, scale, len(directions))
            gate_cost[layer, scale] = sum(i.macs for i in gate_items)
            items += gate_items
        for d in directions:
            t_items = _transform_items(config, grid, (layer, scale, d), with_gates=with_gates)
            path_cost[layer, scale, int(d)] = sum(i.macs for i in t_items)
            items += t_items

    if grid.complete:
        for layer, scale in config.cells:
            node_add[layer, scale] = config.channels(scale) * grid.hw(scale)
        items += _node_add_items(config, node_add, route)

    lateral_cost, lateral, fixed = _decoder_items(config, grid, route)
    items += lateral + fixed
    return CostTable(
        config=config,
        size=(int(size[0]), int(size[1])),
        counted_size=(grid.height, grid.width),
        counting=counting,
        items=items,
        op=op_cost,
        gate=gate_cost,
        path=path_cost,
        node_add=node_add,
        stem=sum(i.macs for i in stem),
        decoder_lateral=lateral_cost,
        decoder_fixed=sum(i.macs for i in fixed),
        with_gates=with_gates,
    )


# ----------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class ParamTable:
    """Analytic parameter counts by component (BN counts 2C; conv biases only where present)."""

    stem: int
    cells: int
    transforms: int
    gates: int
    decoder: int

    @property
    def total(self) -> int:
        return self.stem + self.cells + self.transforms + self.gates + self.decoder

    def as_dict(self) -> dict[str, int]:
        return {
            "stem": self.stem,
            "cells": self.cells,
            "transforms": self.transforms,
            "gates": self.gates,
            "decoder": self.decoder,
            "total": self.total,
        }


def param_table(config: RoutingSpaceConfig, *, route: Route | None = None) -> ParamTable:
    c0 = config.base_channels
    stem = (3 * c0 * 9 + 2 * c0) + 2 * (c0 * 9 + c0 * c0 + 2 * c0)
    cells = transforms = gates = 0
    for layer, scale in config.cells:
        directions = route.directions(layer, scale) if route else config.directions(layer, scale)
        if not directions:
            continue
        c = config.channels(scale)
        cells += 2 * c * c + 22 * c  # two separable convs and two BNs
        if Direction.UP in directions:
            transforms += c * c // 2 + c
        if Direction.DOWN in directions:
            transforms += 2 * c * c + 4 * c
        if config.has_gates and route is None:
            gates += c * c // 2 + c + len(directions) * (c // 2 + 1)
    decoder = 0
    for s in range(config.num_scales):
        c = config.channels(s)
        co = c // 2 if s > 0 else c0
        decoder += c * co + 2 * co
    decoder += 9 * c0 * config.num_classes + config.num_classes
    return ParamTable(stem, cells, transforms, gates, decoder)
