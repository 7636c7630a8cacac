"""The dynamic-routing network (Fig. 2) with real skipping of closed paths and cells.

Two forward modes compute the same function (Eqs. 5-6):

* ``soft`` (training, differentiable): every cell runs on the whole batch and each output is
  multiplied by its alpha; a sample whose paths are all closed passes X through its keep output.
* ``skip`` (inference, the default in ``eval()``): a path with alpha 0 is not computed and a cell
  whose paths are all closed is not computed (X passes through). Each node runs only on the
  samples that need it (gather, compute, scatter); at batch 1 this is plain skipping.

A route (``dynviz.model.route.Route``) can replace the gates: open paths get alpha 1, closed 0.
A network built *with* a route is static: only the route's cells and transforms exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dynviz.model.cell import RoutingCell
from dynviz.model.config import Direction, RoutingSpaceConfig
from dynviz.model.ops import ConvBNReLU, SoftConditionalGate, Stem, init_weights
from dynviz.model.route import Route, RouteError

__all__ = ["Decoder", "RoutingNetwork", "RoutingOutput", "RouteLike"]

RouteLike = Route | Sequence[Route] | torch.Tensor


@dataclass
class RoutingOutput:
    """What a forward pass returns.

    Attributes:
        logits: ``(B, num_classes, H, W)`` at the input size.
        gates: ``(B, L + 1, S, 3)`` alpha of every path per sample (0 where closed, absent, or
            where the cell never received input); forced routes give 1 on open paths.
        route_mask: ``(L + 1, S, 3)`` bool, the paths that exist in this network.
        threshold: a path is active when its alpha is above this.
    """

    logits: torch.Tensor
    gates: torch.Tensor
    route_mask: torch.Tensor
    threshold: float = 0.0

    @property
    def active(self) -> torch.Tensor:
        """``(B, L + 1, S, 3)`` bool: the paths that were computed."""
        return self.gates > self.threshold


class Decoder(nn.Module):
    """Naive decoder: 1x1 ConvBNReLU per scale with top-down add and x2 upsampling, a 3x3
    predictor with bias, x4 upsampling. A scale that is absent (its last-layer cell received
    nothing) is skipped per sample, as the official code does for a dropped scale."""

    def __init__(self, config: RoutingSpaceConfig) -> None:
        super().__init__()
        c = config.channels
        self.lateral = nn.ModuleList(
            ConvBNReLU(c(s), c(s) // 2 if s > 0 else c(0)) for s in range(config.num_scales)
        )
        self.predictor = nn.Conv2d(c(0), config.num_classes, 3, padding=1, bias=True)

    def forward(
        self,
        features: list[torch.Tensor | None],
        present: list[torch.Tensor],
        size: tuple[int, int],
    ) -> torch.Tensor:
        y: torch.Tensor | None = None
        has = torch.zeros_like(present[0])
        for s in reversed(range(len(self.lateral))):
            f = features[s]  # (B, C_s, h_s, w_s) or None when absent for the whole batch
            if f is not None:
                y = f if y is None else y + f
                has = has | present[s]
            if y is None:
                continue
            y = self.lateral[s](y)
            if not bool(has.all()):
                y = y * has.view(-1, 1, 1, 1).to(y.dtype)  # nothing has arrived for these samples
            if s > 0:
                y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        if y is None:  # no scale reached the decoder for any sample
            b = present[0].shape[0]
            y = self.predictor.weight.new_zeros(
                b, self.predictor.in_channels, size[0] // 4, size[1] // 4
            )
        # (B, K, H/4, W/4); back to the default layout before the large upsampling, which is
        # cheaper than converting the full-size logits afterwards
        logits = self.predictor(y).contiguous()
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class _Accumulator:
    """Routed outputs waiting for their receiving node, summed when the node runs.

    Each part is ``(y, index)``: ``y`` was computed for the samples ``index`` (absolute sample
    ids, sorted; None = the whole batch). A node's input is kept compact: it covers only the
    samples that received something, so no full-batch buffer is built between cells (the next
    cell would have to gather its samples back out of it).
    """

    def __init__(self, batch: int, *, inplace: bool) -> None:
        self.batch = batch
        self.inplace = inplace  # no autograd: the first part may be summed into
        self.parts: dict[object, list[tuple[torch.Tensor, torch.Tensor | None]]] = {}

    def add(self, key: object, y: torch.Tensor, index: torch.Tensor | None) -> None:
        """Route ``y`` (computed for the samples ``index``, None = all) into node ``key``."""
        self.parts.setdefault(key, []).append((y, index))

    def pop(self, key: object) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The summed input of node ``key`` and the samples it covers.

        Returns:
            ``(x, index)``: ``x`` is ``(n, C, h, w)`` for the sorted sample ids ``index`` (None =
            the whole batch, ``n = B``); ``(None, None)`` when nothing arrived.
        """
        parts = self.parts.pop(key, None)
        if not parts:
            return None, None
        union = _union([index for _, index in parts], self.batch)
        x: torch.Tensor | None = None
        owned = False
        for y, index in parts:
            if _same(index, union):
                if x is None:
                    x, owned = y, self.inplace
                elif owned:
                    x.add_(y)
                else:
                    x, owned = x + y, True
                continue
            if x is None:
                n = self.batch if union is None else int(union.numel())
                x, owned = _zeros(y, n), True
            elif not owned:
                x, owned = x.clone(memory_format=torch.preserve_format), True
            where = index if union is None else torch.searchsorted(union, index)
            x.index_add_(0, where, y)
        return x, union


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a is b or (a.numel() == b.numel() and bool(torch.equal(a, b)))


def _union(indices: list[torch.Tensor | None], batch: int) -> torch.Tensor | None:
    """Sorted union of sample ids (None = all samples)."""
    if any(index is None for index in indices):
        return None
    first = indices[0]
    assert first is not None
    if all(_same(first, index) for index in indices[1:]):
        return first
    union = torch.unique(torch.cat(indices))  # type: ignore[arg-type]  # sorted
    return None if union.numel() == batch else union


def _zeros(like: torch.Tensor, n: int) -> torch.Tensor:
    """Zeros ``(n, *like.shape[1:])`` in the memory format of ``like``."""
    fmt = torch.channels_last if _is_channels_last(like) else torch.contiguous_format
    return torch.empty(
        (n, *like.shape[1:]), dtype=like.dtype, device=like.device, memory_format=fmt
    ).zero_()


def _subset(
    mask: torch.Tensor, index: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Local and absolute sample indices where ``mask`` holds; (None, index) when it all does."""
    if bool(mask.all()):
        return None, index
    local = mask.nonzero().squeeze(1)
    return local, (local if index is None else index[local])


def _take(x: torch.Tensor, local: torch.Tensor | None) -> torch.Tensor:
    """The samples ``local`` of ``x`` (all when None), in the memory format of ``x``."""
    if local is None:
        return x
    if _is_channels_last(x):  # index_select would return the default layout
        return x.permute(0, 2, 3, 1).index_select(0, local).permute(0, 3, 1, 2)
    return x.index_select(0, local)


def _is_channels_last(x: torch.Tensor) -> bool:
    return (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def _scatter(x: torch.Tensor, index: torch.Tensor | None, batch: int) -> torch.Tensor:
    """``x`` computed for the samples ``index`` as a full-batch tensor (zero elsewhere)."""
    if index is None:
        return x
    out = _zeros(x, batch)
    out.index_copy_(0, index, x)
    return out


def _present(index: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
    if index is None:
        return torch.ones(batch, dtype=torch.bool, device=device)
    out = torch.zeros(batch, dtype=torch.bool, device=device)
    out[index] = True
    return out


class RoutingNetwork(nn.Module):
    """Stem, initial cell, L routing layers and decoder (Fig. 2).

    Args:
        config: the routing space.
        route: if given, a static network: only the route's cells and transforms exist and the
            gates are not built.
    """

    def __init__(self, config: RoutingSpaceConfig, *, route: Route | None = None) -> None:
        super().__init__()
        if route is not None and (route.space.num_layers, route.space.num_scales) != (
            config.num_layers,
            config.num_scales,
        ):
            raise RouteError(
                f"route {route.name!r} is for a space with L={route.space.num_layers},"
                f" not {config.name!r} (L={config.num_layers})"
            )
        self.config = config
        self.route = route
        self.stem = Stem(config.base_channels)
        cells = {}
        for layer, scale in config.cells:
            if route is not None:
                directions = route.directions(layer, scale)
                if not directions:
                    continue
                gate = None
            else:
                directions = config.directions(layer, scale)
                gate = None
                if config.has_gates:
                    gate = SoftConditionalGate(
                        config.channels(scale),
                        len(directions),
                        small=config.gate.value == "small",
                        bias_init=config.gate_bias_init,
                    )
            cells[f"{layer}_{scale}"] = RoutingCell(config.channels(scale), directions, gate=gate)
        self.cells = nn.ModuleDict(cells)
        self.decoder = Decoder(config)
        exists = route.mask() if route is not None else Route.all_open(config).mask()
        self.register_buffer("route_mask", exists, persistent=False)
        # CPU inference runs channels-last (same function, other memory layout); set False to
        # keep the input's layout.
        self.channels_last_inference = True
        init_weights(self)

    @property
    def is_static(self) -> bool:
        return self.route is not None

    @property
    def is_dynamic(self) -> bool:
        """Whether the paths are chosen per image by gates."""
        return self.route is None and self.config.has_gates

    def cell(self, layer: int, scale: int) -> RoutingCell | None:
        key = f"{layer}_{scale}"
        return self.cells[key] if key in self.cells else None  # type: ignore[return-value]

    # ------------------------------------------------------------------------------ forward
    def forward(
        self, images: torch.Tensor, route: RouteLike | None = None, *, skip: bool | None = None
    ) -> RoutingOutput:
        """Run the network.

        Args:
            images: ``(B, 3, H, W)`` normalised images; any H, W (padded to a multiple of the
                largest stride, logits cropped back).
            route: force a route instead of the gates: a :class:`Route` for every sample, one
                route per sample, or a bool/float tensor ``(L + 1, S, 3)`` or ``(B, L + 1, S, 3)``
                of alphas.
            skip: compute only open paths (default: ``not self.training``).
        """
        b, _, height, width = images.shape
        stride = self.config.max_stride
        pad_h, pad_w = (-height) % stride, (-width) % stride
        x = F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images
        forced = self._forced_alpha(route, b, images)
        if skip is None:
            skip = not self.training
        if self._channels_last(x):
            x = x.contiguous(memory_format=torch.channels_last)
        stem = self.stem(x)  # (B, C, H/4, W/4)
        run = self._forward_skip if skip else self._forward_soft
        features, present, gates = run(stem, forced)
        logits = self.decoder(features, present, (x.shape[-2], x.shape[-1]))
        logits = logits[..., :height, :width]
        return RoutingOutput(logits, gates, self.route_mask, self.config.active_threshold)

    def _channels_last(self, x: torch.Tensor) -> bool:
        """Whether this forward runs in the channels-last memory format: CPU inference (no
        autograd) with ``channels_last_inference`` on. Depthwise 3x3 convs, which dominate the
        1/4-scale cells, run several times faster in it on CPU (docs/performance.md)."""
        return (
            self.channels_last_inference
            and x.device.type == "cpu"
            and x.dim() == 4
            and not torch.is_grad_enabled()
            and not x.is_contiguous(memory_format=torch.channels_last)
        )

    def _forced_alpha(
        self, route: RouteLike | None, batch: int, like: torch.Tensor
    ) -> torch.Tensor | None:
        """``(B, L + 1, S, 3)`` alphas replacing the gates, or None to use the gates."""
        if route is None:
            if self.is_dynamic:
                return None
            mask = self.route_mask
        elif isinstance(route, Route):
            mask = self._check_route(route).mask(like.device)
        elif isinstance(route, torch.Tensor):
            mask = route.to(like.device)
        else:
            routes = list(route)
            if len(routes) != batch:
                raise ValueError(f"got {len(routes)} routes for a batch of {batch}")
            mask = torch.stack([self._check_route(r).mask(like.device) for r in routes])
        expected = tuple(self.route_mask.shape)
        if tuple(mask.shape[-3:]) != expected or mask.dim() not in (3, 4):
            raise ValueError(
                f"route tensor has shape {tuple(mask.shape)}, expected {expected} "
                f"or (B, *{expected})"
            )
        if bool((mask.bool() & ~self.route_mask).any()):
            raise RouteError("the forced route opens paths this network does not have")
        alpha = mask.to(like.dtype).expand(batch, *expected)
        return alpha

    def _check_route(self, route: Route) -> Route:
        if (route.space.num_layers, route.space.num_scales) != (
            self.config.num_layers,
            self.config.num_scales,
        ):
            raise RouteError(
                f"route {route.name!r} is for L={route.space.num_layers} with "
                f"{route.space.num_scales} scales, this network has "
                f"L={self.config.num_layers} and {self.config.num_scales} scales"
            )
        return route

    def _alpha(
        self,
        cell: RoutingCell,
        layer: int,
        scale: int,
        x: torch.Tensor,
        forced: torch.Tensor | None,
        index: torch.Tensor | None,
    ) -> torch.Tensor:
        """alpha ``(b, num_paths)`` for the samples ``index`` of a cell, thresholded."""
        if forced is not None:
            dirs = [int(d) for d in cell.directions]
            alpha = forced[:, layer, scale, dirs]
            alpha = _take(alpha, index)
        else:
            alpha = cell.gate(x)
        threshold = self.config.active_threshold
        return torch.where(alpha > threshold, alpha, torch.zeros_like(alpha))

    def _forward_soft(self, stem: torch.Tensor, forced: torch.Tensor | None):
        config = self.config
        b = stem.shape[0]
        gates = stem.new_zeros(b, config.num_layers + 1, config.num_scales, len(Direction))
        inputs: dict[tuple[int, int], torch.Tensor] = {(0, 0): stem}
        has_input = {(0, 0): torch.ones(b, dtype=torch.bool, device=stem.device)}
        features: list[torch.Tensor | None] = [None] * config.num_scales
        present = [torch.zeros(b, dtype=torch.bool, device=stem.device)] * config.num_scales
        for layer, scale in config.cells:
            cell = self.cell(layer, scale)
            if cell is None or (layer, scale) not in inputs:
                continue
            x = inputs.pop((layer, scale))  # (B, C, h, w): zero for samples without input
            has = has_input.pop((layer, scale))
            alpha = self._alpha(cell, layer, scale, x, forced, None)
            alpha = alpha * has.unsqueeze(1).to(alpha.dtype)  # nothing runs without input
            gates[:, layer, scale, [int(d) for d in cell.directions]] = alpha
            active = alpha > 0
            passthrough = has & ~active.any(1)  # Eq. 5-6: X passes through the keep output
            r = cell.hidden(x)
            for j, d in enumerate(cell.directions):
                y = alpha[:, j].view(-1, 1, 1, 1) * cell.transform(d, r)
                arrived = active[:, j]
                if d is Direction.KEEP:
                    y = y + passthrough.view(-1, 1, 1, 1).to(y.dtype) * x
                    arrived = arrived | passthrough
                target = config.target(layer, scale, d)
                if target is None:
                    features[scale], present[scale] = y, arrived
                else:
                    inputs[target] = y if target not in inputs else inputs[target] + y
                    has_input[target] = arrived | has_input.get(target, arrived)
            if Direction.KEEP not in cell.directions and bool(passthrough.any()):
                raise RouteError(
                    f"cell (layer {layer}, 1/{config.stride(scale)}) has no keep "
                    "output to pass its input through"
                )
        return features, present, gates

    def _forward_skip(self, stem: torch.Tensor, forced: torch.Tensor | None):
        config = self.config
        b = stem.shape[0]
        device = stem.device
        inplace = not torch.is_grad_enabled()  # no autograd graph: buffers may be reused
        gates = stem.new_zeros(b, config.num_layers + 1, config.num_scales, len(Direction))
        nodes = _Accumulator(b, inplace=inplace)
        nodes.add((0, 0), stem, None)
        decoder = _Accumulator(b, inplace=inplace)
        for layer, scale in config.cells:
            x, index = nodes.pop((layer, scale))  # (b, C, h, w) for the samples with input
            cell = self.cell(layer, scale)
            if cell is None or x is None:
                continue  # no input arrived: the cell is not computed
            alpha = self._alpha(cell, layer, scale, x, forced, index)
            dirs = [int(d) for d in cell.directions]
            if index is None:
                gates[:, layer, scale, dirs] = alpha
            else:
                gates[index.unsqueeze(1), layer, scale, torch.tensor(dirs, device=device)] = alpha
            active = alpha > 0
            on = active.any(1)

            def emit(
                d: Direction,
                y: torch.Tensor,
                where: torch.Tensor | None,
                source: tuple[int, int] = (layer, scale),
            ) -> None:
                target = config.target(*source, d)
                if target is None:
                    decoder.add(source[1], y, where)
                else:
                    nodes.add(target, y, where)

            if not bool(on.all()):  # Eq. 5-6: X passes through the keep output
                if Direction.KEEP not in cell.directions:
                    raise RouteError(
                        f"cell (layer {layer}, 1/{config.stride(scale)}) has no keep "
                        "output to pass its input through"
                    )
                p_local, p_index = _subset(~on, index)
                emit(Direction.KEEP, _take(x, p_local), p_index)
            if not bool(on.any()):
                continue
            o_local, o_index = _subset(on, index)
            alpha_on, active_on = _take(alpha, o_local), _take(active, o_local)
            # ReLU(H), only for samples with an open path
            r = _hidden(cell, _take(x, o_local), inplace=inplace)
            del x
            for j, d in enumerate(cell.directions):
                if not bool(active_on[:, j].any()):
                    continue  # closed for every sample: never computed
                d_local, d_index = _subset(active_on[:, j], o_index)
                y = cell.transform(d, _take(r, d_local))
                a = _take(alpha_on[:, j], d_local)
                if forced is None or not bool((a == 1).all()):  # forced routes: alpha is 1
                    y = y * a.view(-1, 1, 1, 1)
                emit(d, y, d_index)
        features: list[torch.Tensor | None] = []
        present = []
        for scale in range(config.num_scales):
            f, index = decoder.pop(scale)
            features.append(None if f is None else _scatter(f, index, b))
            present.append(
                _present(index, b, device)
                if f is not None
                else torch.zeros(b, dtype=torch.bool, device=device)
            )
        return features, present, gates


def _hidden(cell: RoutingCell, x: torch.Tensor, *, inplace: bool) -> torch.Tensor:
    """``cell.hidden(x)``, ReLU(O(X) + X), without temporaries when autograd is off."""
    if not inplace:
        return cell.hidden(x)
    h = cell.op(x)  # a fresh tensor: BN (or the folded conv) output
    h += x
    return h.relu_()
