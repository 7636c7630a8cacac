"""A route as a plain straight-line module (:class:`StaticNetwork`), its fused oneDNN kernels,
and the helpers that build one from a model or a checkpoint.

An extracted route (a special case of Fig. 3, a Common net of Table 1, or any route forced on a
trained dynamic model) is a static network: no gates, no per-sample bookkeeping.
:class:`StaticNetwork` re-expresses it as a straight-line module graph that reuses the network's
own submodules (so weights are shared, not copied) and returns logits only; its forward has no
tensor-dependent Python control flow, so tracing it gives a correct graph
(:mod:`dynviz.inference.onnx` writes it to ONNX).
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dynviz.inference.folding import ExportError, fold_batchnorm
from dynviz.model import build_model, fused
from dynviz.model.config import RoutingSpaceConfig
from dynviz.model.network import RoutingNetwork
from dynviz.model.route import Route, RouteError
from dynviz.model.skip import route_plan, run_plan
from dynviz.model.zoo import load_spec

__all__ = [
    "StaticNetwork",
    "load_for_export",
    "route_in_space",
    "static_network",
    "transfer_to_route",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- static graph
class StaticNetwork(nn.Module):
    """A route as a straight-line module graph: stem, the route's cells in order, decoder.

    This is the dynamic network specialised to a fixed route, not another model: its steps are
    the route's part of the network's graph (:func:`dynviz.model.skip.route_plan`) and each
    step runs the network's own node functions (``RoutingCell.hidden``, ``RoutingCell.transform``,
    ``Decoder.top_down``, ``Decoder.head``); what it drops is the per-sample bookkeeping (gates,
    gather/scatter, masks), and on float32 CPU inference with BN folded it runs the same nodes
    as fused oneDNN kernels. It reuses the submodules of ``network`` (no copy: weights are
    shared), holds only the route's cells, never runs a gate, and returns the logits tensor
    only. Built on a dynamic
    network its cells still carry their (unused) gates; :func:`static_network` copies the
    route's weights into a gate-free static network first, which is what export uses.

    The forward's Python control flow depends only on the route, never on tensor values or
    sizes, so ``torch.export`` (the ONNX exporter) records it correctly with symbolic sizes.
    Like the network, CPU inference runs channels-last inside (``channels_last_inference``),
    except when tracing.

    Args:
        network: a static network (its own route is used) or a dynamic one with ``route``.
        route: the route to run; for a static network it must be a subset of its route.

    Raises:
        ExportError: no route, or the network lacks a path of the route.
    """

    def __init__(self, network: RoutingNetwork, route: Route | None = None) -> None:
        super().__init__()
        route = network.route if route is None else route
        if route is None:
            raise ExportError(
                f"{network.config.name!r} is a dynamic network: give the route to export"
            )
        config = network.config
        if (route.space.num_layers, route.space.num_scales) != (
            config.num_layers,
            config.num_scales,
        ):
            raise ExportError(
                f"route {route.name!r} is for L={route.space.num_layers} with "
                f"{route.space.num_scales} scales, the network has "
                f"L={config.num_layers} and {config.num_scales} scales"
            )
        if bool((route.mask() & ~network.route_mask.cpu()).any()):
            raise ExportError(f"route {route.name!r} opens paths the network does not have")
        self.config: RoutingSpaceConfig = config
        self.route = route
        self.stem = network.stem
        # the route's part of the network's graph (dynviz.model.topology), in forward order
        self._plan = route_plan(config, route.paths)
        self.cells = nn.ModuleDict({key: network.cells[key] for key, _, _ in self._plan})
        self.decoder = network.decoder
        self.channels_last_inference = network.channels_last_inference
        # fused oneDNN conv + ReLU / + residual in float32 CPU inference once BN is folded
        self.fuse = True

    @property
    def fuse(self) -> bool:
        """Whether the blocks run fused oneDNN kernels once BN is folded (default True;
        :mod:`dynviz.model.fused`). Setting it sets every block's ``fused_kernels``: the blocks
        are the network's own, so a copy (``copy.deepcopy``) is what to switch for comparison."""
        return self._fuse

    @fuse.setter
    def fuse(self, on: bool) -> None:
        self._fuse = bool(on)
        for module in self.modules():
            if hasattr(module, "fused_kernels"):
                module.fused_kernels = self._fuse

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images to ``(B, num_classes, H, W)`` logits."""
        height, width = images.shape[-2], images.shape[-1]
        stride = self.config.max_stride
        # symbolic sizes while exporting (dynamic height and width): pad without a test on them
        pad_h, pad_w = (-height) % stride, (-width) % stride
        tracing = fused.tracing()
        x = F.pad(images, (0, pad_w, 0, pad_h)) if tracing or pad_h or pad_w else images
        inplace = not torch.is_grad_enabled() and not tracing
        if self.channels_last_inference and inplace and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)  # as RoutingNetwork does
        return self._run(x, inplace=inplace)[..., :height, :width]

    def _run(self, x: torch.Tensor, *, inplace: bool) -> torch.Tensor:
        # the dynamic network's straight-line runner of one route (dynviz.model.skip)
        _, features = run_plan(self, self._plan, self.stem(x), inplace=inplace)
        return self._decode(features, (x.shape[-2], x.shape[-1]))

    def _decode(self, features: list[torch.Tensor | None], size: tuple[int, int]) -> torch.Tensor:
        """The network's decoder (``Decoder.top_down`` / ``Decoder.head``) on the scales the route
        reaches (every sample has them: no per-sample masks)."""
        decoder = self.decoder
        y: torch.Tensor | None = None
        for s in reversed(range(len(decoder.lateral))):
            f = features[s]
            if f is not None:
                y = f if y is None else y + f
            if y is not None:
                y = decoder.top_down(s, y)
        assert y is not None  # a valid route reaches the decoder
        return decoder.head(y, size)


# ------------------------------------------------------------------------------ building
def transfer_to_route(model: RoutingNetwork, route: Route) -> RoutingNetwork:
    """The static network of ``route`` with the weights of ``model`` (a dynamic network or a
    static one that contains the route): ``build_model(config, route=route)`` and
    ``load_state_dict(strict=False)``; gate weights and closed paths are left out.

    Raises:
        ExportError: a weight the static network needs is missing from ``model``.
    """
    route = route_in_space(route, model.config)
    param = next(model.parameters())
    static = build_model(model.config, route=route).to(device=param.device, dtype=param.dtype)
    missing, _ = static.load_state_dict(model.state_dict(), strict=False)
    if missing:
        raise ExportError(
            f"{model.config.name!r} lacks weights of route {route.name!r}: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    return static.eval()


def route_in_space(route: Route, config: RoutingSpaceConfig) -> Route:
    """``route`` re-expressed in ``config`` (a route spec names e.g. layer16-fix; the paths are
    the same in layer16).

    Raises:
        ExportError: the spaces differ in layers or scales.
    """
    if route.space == config:
        return route
    if (route.space.num_layers, route.space.num_scales) != (config.num_layers, config.num_scales):
        raise ExportError(
            f"route {route.name!r} is for L={route.space.num_layers} with "
            f"{route.space.num_scales} scales, the model {config.name!r} has "
            f"L={config.num_layers} and {config.num_scales} scales"
        )
    try:
        return Route(
            config,
            route.paths,
            name=route.name,
            description=route.description,
            meta=dict(route.meta),
        )
    except RouteError as err:  # pragma: no cover - same topology, same validity
        raise ExportError(str(err)) from None


def static_network(
    model: RoutingNetwork, route: Route | None = None, *, fold: bool = True
) -> StaticNetwork:
    """The exportable static network of ``route`` (default: the model's own route).

    The model is not changed: the route's weights are copied into a static network, BN is
    folded (``fold=True``), and the result is wrapped in a :class:`StaticNetwork` in eval mode.
    """
    if route is None:
        if model.route is None:
            raise ExportError(
                f"{model.config.name!r} is a dynamic network: give the route to export"
            )
        static = copy.deepcopy(model).eval()
    else:
        static = transfer_to_route(model, route)
    if fold:
        static = fold_batchnorm(static, inplace=True)
    return StaticNetwork(static).eval()


def _route_ref(ref: str | os.PathLike[str] | Route) -> Route:
    if isinstance(ref, Route):
        return ref
    spec = load_spec(ref)
    if not isinstance(spec, Route):
        raise ExportError(f"{ref}: not a route spec (no 'space' key)")
    return spec


def load_for_export(
    ref: str | os.PathLike[str], route: str | os.PathLike[str] | Route | None = None
) -> tuple[RoutingNetwork, Route, dict[str, Any]]:
    """Resolve what ``dynviz export`` was given.

    Args:
        ref: a preset name or YAML path (a route spec gives its static network, freshly
            initialised; a routing space needs ``route``), a checkpoint file or a run directory
            (``dynviz.model.checkpoint.load_model``).
        route: the route to export (a preset name, YAML path or :class:`Route`).

    Returns:
        ``(model, route, meta)``: the source network in eval mode, the route in its space, and
        the checkpoint metadata (empty for zoo models).
    """
    path = Path(ref)
    meta: dict[str, Any] = {}
    if path.is_dir() or path.suffix in (".pt", ".pth"):
        from dynviz.model.checkpoint import load_model

        model, meta = load_model(path)
    else:
        spec = load_spec(ref)
        model = build_model(spec)
    model.eval()
    chosen = _route_ref(route) if route is not None else model.route
    if chosen is None:
        raise ExportError(
            f"{ref}: a dynamic network; give --route (a route spec such as "
            "fcn32s or an extracted Common net)"
        )
    return model, route_in_space(chosen, model.config), meta
