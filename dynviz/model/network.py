"""The dynamic-routing network (Fig. 2) with real skipping of closed paths and cells.

Two forward modes compute the same function (Eqs. 5-6):

* ``soft`` (training, differentiable): every cell runs on the whole batch and each output is
  multiplied by its alpha; a sample whose paths are all closed passes X through its keep output.
* ``skip`` (inference, the default in ``eval()``): a path with alpha 0 is not computed and a cell
  whose paths are all closed is not computed (X passes through). Each node runs only on the
  samples that need it (gather, compute, scatter; the engine is ``dynviz.model.skip``); at
  batch 1 this is plain skipping.

``config.semantics`` chooses the function: ``paper`` (default) or ``official``, the official
code's inference function per sample (unpadded stem conv, a cell dropped when its alpha sum is
below 1e-4, closed paths delivering zeros that still feed their node; docs/official.md).

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
from dynviz.model.config import OFFICIAL_DROP_THRESHOLD, Direction, RoutingSpaceConfig
from dynviz.model.ops import ConvBNReLU, SoftConditionalGate, Stem, init_weights
from dynviz.model.route import Route, RouteError
from dynviz.model.skip import Features, _take, feeds_zeros, forward_route, forward_skip

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
        gate_alpha: ``(B, L + 1, S, 3)`` the gates' own alpha before the closing rule (equal
            to ``gates`` on open paths; on a path closed at alpha <= ``threshold``, the value
            it was closed at; 0 where the cell never ran), or None.
    """

    logits: torch.Tensor
    gates: torch.Tensor
    route_mask: torch.Tensor
    threshold: float = 0.0
    gate_alpha: torch.Tensor | None = None

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
            y = self.top_down(s, y)
            if not bool(has.all()):
                y = y * has.view(-1, 1, 1, 1).to(y.dtype)  # nothing has arrived for these samples
        if y is None:  # no scale reached the decoder for any sample
            b = present[0].shape[0]
            y = self.predictor.weight.new_zeros(
                b, self.predictor.in_channels, size[0] // 4, size[1] // 4
            )
        return self.head(y, size)

    def top_down(self, s: int, y: torch.Tensor) -> torch.Tensor:
        """One top-down step: the lateral ConvBNReLU of scale ``s`` on the sum ``y`` of the
        features at ``s`` and coarser, then x2 upsampling to the next finer scale (none at 1/4)."""
        y = self.lateral[s](y)
        if s > 0:
            y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        return y

    def head(self, y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The predictor on the 1/4 map and x4 upsampling to ``size``: ``(B, K, H, W)``.

        In channels-last inference the logits stay channels-last: the upsampling runs 2.2x
        faster in it and the prediction's ``max(1)`` over the classes 2x faster after it (16 ->
        7 ms and 32 -> 17 ms for 19 classes at 512x1024 on one core), equal within 5e-7."""
        logits = self.predictor(y)  # (B, K, H/4, W/4)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


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
        self.stem = Stem(config.base_channels, padding=0 if config.official else 1)
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
                        official_resize=config.official,
                    )
            cells[f"{layer}_{scale}"] = RoutingCell(config.channels(scale), directions, gate=gate)
        self.cells = nn.ModuleDict(cells)
        self.decoder = Decoder(config)
        exists = route.mask() if route is not None else Route.all_open(config).mask()
        self.register_buffer("route_mask", exists, persistent=False)
        # CPU inference runs channels-last (same function, other memory layout), and its logits
        # come out channels-last; set False to keep the input's layout.
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
        if skip and forced is not None and self._one_route(route):
            features, present, gates, own = forward_route(self, stem, forced)
        elif skip:
            features, present, gates, own = forward_skip(self, stem, forced)
        else:
            features, present, gates, own = self._forward_soft(stem, forced)
        logits = self.decoder(features, present, (x.shape[-2], x.shape[-1]))
        logits = logits[..., :height, :width]
        return RoutingOutput(
            logits, gates, self.route_mask, self.config.active_threshold, gate_alpha=own
        )

    def _forward_soft(self, stem: torch.Tensor, forced: torch.Tensor | None) -> Features:
        """The reference forward (Eqs. 1-6): every cell runs on the whole batch and each output
        is weighted by its alpha. Returns the last layer's output per scale, the samples that
        have it, the alphas ``(B, L + 1, S, 3)`` and the gates' own alphas before the closing
        rule (same shape). ``forward_skip`` computes the same."""
        config = self.config
        b = stem.shape[0]
        gates = stem.new_zeros(b, config.num_layers + 1, config.num_scales, len(Direction))
        own = torch.zeros_like(gates)
        inputs = {(0, 0): stem}  # X of each node: the sum of its incoming Y (Eq. 1)
        fed = {(0, 0): torch.ones(b, dtype=torch.bool, device=stem.device)}  # received input
        features: list[torch.Tensor | None] = [None] * config.num_scales
        present = [torch.zeros(b, dtype=torch.bool, device=stem.device)] * config.num_scales
        zeros_feed = feeds_zeros(config, forced)
        for layer, scale in config.cells:
            cell = self.cell(layer, scale)
            if cell is None or (layer, scale) not in inputs:
                continue
            x = inputs.pop((layer, scale))  # (B, C, h, w): zero for samples without input
            has = fed.pop((layer, scale))
            raw = self.gate_alpha(cell, layer, scale, x, forced) * has.unsqueeze(1)  # (B, paths)
            alpha = self.close(raw)
            dirs = [int(d) for d in cell.directions]
            gates[:, layer, scale, dirs] = alpha
            own[:, layer, scale, dirs] = raw.detach()
            on = (alpha > 0).any(1)  # the cell runs for these samples
            passthrough = has & ~on  # Eqs. 5-6: X passes through the keep output
            r = cell.hidden(x)  # ReLU(H), H = O(X) + X (Eq. 4)
            for j, d in enumerate(cell.directions):
                y = alpha[:, j].view(-1, 1, 1, 1) * cell.transform(d, r)  # Y = alpha T (Eq. 6)
                # paper: a closed path delivers nothing; official gates: zeros, which feed
                arrived = on if zeros_feed else alpha[:, j] > 0
                if d is Direction.KEEP:
                    y = y + passthrough.view(-1, 1, 1, 1).to(y.dtype) * x
                    arrived = arrived | passthrough
                target = config.target(layer, scale, d)
                if target is None:  # the last layer feeds the decoder
                    features[scale], present[scale] = y, arrived
                else:
                    inputs[target] = y if target not in inputs else inputs[target] + y
                    fed[target] = arrived | fed.get(target, arrived)
            if Direction.KEEP not in cell.directions and bool(passthrough.any()):
                raise RouteError(
                    f"cell (layer {layer}, 1/{config.stride(scale)}) has no keep "
                    "output to pass its input through"
                )
        return features, present, gates, own

    def gate_alpha(
        self,
        cell: RoutingCell,
        layer: int,
        scale: int,
        x: torch.Tensor,
        forced: torch.Tensor | None,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The gate's own alpha ``(b, num_paths)`` on X (Eqs. 2-3), or the forced route's, for
        the samples ``index`` (None = all): before the closing rule (:meth:`close` gives the
        alpha the route uses)."""
        if forced is not None:
            return _take(forced[:, layer, scale, [int(d) for d in cell.directions]], index)
        return cell.gate(x)

    def close(self, alpha: torch.Tensor) -> torch.Tensor:
        """The closing rule on a cell's alphas ``(b, num_paths)``: paper, a path is closed at
        alpha <= ``active_threshold``; official, a cell whose alpha sum is below 1e-4 is
        dropped (all its alphas 0), per sample."""
        zero = torch.zeros_like(alpha)
        if self.config.official:
            return torch.where(alpha.sum(1, keepdim=True) < OFFICIAL_DROP_THRESHOLD, zero, alpha)
        return torch.where(self.config.is_active(alpha), alpha, zero)

    def _one_route(self, route: RouteLike | None) -> bool:
        """Whether the forward runs one route on every sample with its paths fully open: a
        :class:`Route`, or none on a static network (its own route). Per-sample routes and
        alpha tensors go through :func:`forward_skip`."""
        return isinstance(route, Route) or (route is None and self.is_static)

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
