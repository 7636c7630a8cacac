"""Why this route: exact attribution maps of the soft conditional gates.

The gate of a node (Eq. 2) computes ``z = ReLU(BN(F(w1, X)))`` (X resized by 0.25 first for a
small gate), averages ``z`` over space and applies a 1x1 conv (``W``, ``beta``). The logit of path
``p`` is therefore exactly the bias plus the mean over locations of a per-location contribution::

    G_p = beta_p + mean_{i,j} m_p(i, j),     m_p(i, j) = sum_c W[p, c] z[c, i, j]

``m_p`` is the *attribution map* of the path: where in the node's input the evidence for opening
(positive) or closing (negative) the path lies. Nothing is approximated: the maps are computed from
the gate module's own pre-pooling features (:meth:`SoftConditionalGate.features`, so paper and
official semantics, full and small gates are all covered), on the node input X captured by a
forward hook during the network's own forward pass, and every node records the logit the network
itself computed (a hook on the gate's last conv) so the decomposition can be checked.

Typical use::

    attr = attribute(model, image)             # one image, the network's own forward pass
    node = attr.node(5, 1)                     # layer 5, scale 1/8
    node.maps[node.index(Direction.DOWN)]      # (h, w) at the gate's resolution
    attr.frame()                               # one row per path: logit, bias, alpha, error...
    attr.region_maps()                         # which regions open the down / up paths

This module is the gate maths, about the network only. Writing the maps as PNG overlays is in
:mod:`dynviz.plots.attribution_png`; relating them to the objects of labelled images is in
:mod:`dynviz.analysis.attribution`, which re-exports the names of all three.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from dynviz.errors import UserError
from dynviz.model.config import Direction
from dynviz.model.network import RoutingNetwork

__all__ = [
    "TOP_FRACTION",
    "AttributionError",
    "ImageAttribution",
    "NodeAttribution",
    "attribute",
    "top_share",
    "upsample_map",
]

logger = logging.getLogger(__name__)

TOP_FRACTION = 0.1
"""Share of locations whose share of the attribution mass is reported (the top 10%)."""


class AttributionError(UserError):
    """The model or input cannot be attributed (no gates, forced route, bad image)."""


# ------------------------------------------------------------------------------ one node
def top_share(values: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Share of the attribution mass (sum of ``|m|``) held by the ``fraction`` of locations
    with the largest ``|m|``: ``fraction`` for a uniform map, 1 when a few locations decide.
    NaN for an all-zero map."""
    flat = np.abs(np.asarray(values, dtype=np.float64)).ravel()
    total = float(flat.sum())
    if flat.size == 0 or total == 0.0:
        return float("nan")
    k = max(1, math.ceil(fraction * flat.size))
    top = np.partition(flat, flat.size - k)[flat.size - k :]
    return float(top.sum() / total)


@dataclass(frozen=True)
class NodeAttribution:
    """The gate of one node (layer, scale) on one image.

    Attributes:
        layer: routing layer (0 = the initial cell).
        scale: scale index (0 = 1/4).
        directions: the node's paths, in gate order.
        maps: ``(P, h, w)`` float64 per-location contributions at the gate's resolution (the
            node's, or about a quarter of it for a small gate).
        bias: ``(P,)`` the gate's bias beta.
        logits: ``(P,)`` the logit G the network computed in its forward pass (before tanh).
        gate_alpha: ``(P,)`` what the gate returned, max(0, tanh(G)).
        alpha: ``(P,)`` the alpha the route used (after the model's threshold).
        node_size: ``(h, w)`` of the node input X.
    """

    layer: int
    scale: int
    directions: tuple[Direction, ...]
    maps: np.ndarray
    bias: np.ndarray
    logits: np.ndarray
    gate_alpha: np.ndarray
    alpha: np.ndarray
    node_size: tuple[int, int]

    @property
    def reconstructed(self) -> np.ndarray:
        """``(P,)`` mean(map) + bias: equals :attr:`logits` up to float rounding."""
        return self.maps.mean(axis=(1, 2)) + self.bias

    @property
    def error(self) -> float:
        """max over paths of ``|mean(map) + bias - logit|``."""
        return float(np.abs(self.reconstructed - self.logits).max())

    @property
    def map_size(self) -> tuple[int, int]:
        return int(self.maps.shape[1]), int(self.maps.shape[2])

    def index(self, direction: Direction | str | int) -> int:
        """Position of ``direction`` among the node's paths (raises KeyError if absent)."""
        d = Direction.parse(direction)
        if d not in self.directions:
            raise KeyError(f"node (layer {self.layer}, scale {self.scale}) has no {d.label} path")
        return self.directions.index(d)

    def top_share(self, direction: Direction | str | int, fraction: float = TOP_FRACTION) -> float:
        """:func:`top_share` of one path's map."""
        return top_share(self.maps[self.index(direction)], fraction)


# ----------------------------------------------------------------------------- one image
def upsample_map(values: np.ndarray, size: tuple[int, int], padded: tuple[int, int]) -> np.ndarray:
    """A map over the padded input, bilinearly upsampled to ``padded`` and cropped to ``size``
    (the image): ``(H, W)`` float64."""
    t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))[None, None]
    up = F.interpolate(t, size=padded, mode="bilinear", align_corners=False)[0, 0]
    return up[: size[0], : size[1]].numpy()


@dataclass(frozen=True)
class ImageAttribution:
    """Every gate's attribution on one image. Nodes whose gate did not run are absent (paper
    semantics: no input arrived; official semantics also runs a gate on the zeros of closed
    paths, but a dropped cell feeds its keep path only).

    Attributes:
        nodes: ``(layer, scale) -> NodeAttribution``, in the network's order.
        image_size: ``(H, W)`` of the image.
        padded_size: ``(H, W)`` after padding to the network's largest stride.
    """

    nodes: dict[tuple[int, int], NodeAttribution]
    image_size: tuple[int, int]
    padded_size: tuple[int, int]
    stride: dict[int, int] = field(default_factory=dict)  # scale index -> stride

    def node(self, layer: int, scale: int) -> NodeAttribution:
        try:
            return self.nodes[(layer, scale)]
        except KeyError:
            raise KeyError(
                f"node (layer {layer}, scale {scale}) ran no gate on this image"
            ) from None

    @property
    def max_error(self) -> float:
        """max over nodes and paths of ``|mean(map) + bias - logit|``."""
        return max((n.error for n in self.nodes.values()), default=0.0)

    @property
    def max_abs_logit(self) -> float:
        return max((float(np.abs(n.logits).max()) for n in self.nodes.values()), default=0.0)

    def upsampled(self, layer: int, scale: int, direction: Direction | str | int) -> np.ndarray:
        """One path's map upsampled over the image: ``(H, W)``."""
        node = self.node(layer, scale)
        return upsample_map(node.maps[node.index(direction)], self.image_size, self.padded_size)

    def frame(self, *, fraction: float = TOP_FRACTION) -> pd.DataFrame:
        """One row per (node, path): ``layer``, ``scale`` (the stride), ``scale_index``,
        ``direction``, ``logit`` (the network's), ``bias``, ``map_mean``, ``error``
        (``|map_mean + bias - logit|``), ``alpha``, ``active``, ``top_share``, ``map_limit``
        (``max |map|``, the colour limit of its overlay), ``map_height``, ``map_width``,
        ``node_height``, ``node_width``."""
        rows = []
        for (layer, scale), node in self.nodes.items():
            for j, d in enumerate(node.directions):
                mean = float(node.maps[j].mean())
                rows.append(
                    {
                        "layer": layer,
                        "scale": self.stride.get(scale, 4 * 2**scale),
                        "scale_index": scale,
                        "direction": d.label,
                        "logit": float(node.logits[j]),
                        "bias": float(node.bias[j]),
                        "map_mean": mean,
                        "error": abs(mean + float(node.bias[j]) - float(node.logits[j])),
                        "alpha": float(node.alpha[j]),
                        "active": bool(node.alpha[j] > 0),
                        "top_share": top_share(node.maps[j], fraction),
                        "map_limit": float(np.abs(node.maps[j]).max()),
                        "map_height": node.map_size[0],
                        "map_width": node.map_size[1],
                        "node_height": node.node_size[0],
                        "node_width": node.node_size[1],
                    }
                )
        return pd.DataFrame(rows)

    def region_maps(
        self, directions: Iterable[Direction | str] = (Direction.DOWN, Direction.UP)
    ) -> dict[str, np.ndarray]:
        """The per-image summary: for each direction, the mean over the nodes that have that
        path of its upsampled map, ``(H, W)`` in logit units. Its mean over the image is the
        mean of ``logit - bias`` over those paths; positive regions push the direction's paths
        open (down = deeper, coarser; up = the up-sampling paths towards finer scales)."""
        out: dict[str, np.ndarray] = {}
        for direction in directions:
            d = Direction.parse(direction)
            keys = [key for key, node in self.nodes.items() if d in node.directions]
            if keys:
                out[d.label] = self.mean_map([(layer, scale, d) for layer, scale in keys])
        return out

    def mean_map(self, paths: Sequence[tuple[int, int, Direction | str]]) -> np.ndarray:
        """The mean of the upsampled maps of ``paths`` ``(layer, scale, direction)``: ``(H, W)``
        (summed one at a time: a real-size image holds one full-size map at a time)."""
        total = np.zeros(self.image_size, dtype=np.float64)
        for layer, scale, d in paths:
            total += self.upsampled(layer, scale, d)
        return total / max(1, len(paths))

    def summary(self, *, fraction: float = TOP_FRACTION) -> pd.DataFrame:
        """One row per direction: how many nodes have it, how many were open, the mean logit,
        and where its region map (:meth:`region_maps`) puts the evidence: ``top_share`` of its
        absolute mass, the share of positive mass and the positive mass's centre (``row``,
        ``col`` as fractions of the image)."""
        frame = self.frame(fraction=fraction)
        regions = self.region_maps(tuple(Direction))
        rows = []
        for d in Direction:
            part = frame[frame["direction"] == d.label] if len(frame) else frame
            if d.label not in regions or part.empty:
                continue
            region = regions[d.label]
            positive = np.clip(region, 0.0, None)
            mass = float(positive.sum())
            rr, cc = np.indices(region.shape)
            rows.append(
                {
                    "direction": d.label,
                    "paths": len(part),
                    "open": int(part["active"].sum()),
                    "mean_logit": float(part["logit"].mean()),
                    "top_share": top_share(region, fraction),
                    "positive_share": mass / float(np.abs(region).sum() or np.nan),
                    "center_row": float((positive * rr).sum() / mass / region.shape[0])
                    if mass > 0
                    else float("nan"),
                    "center_col": float((positive * cc).sum() / mass / region.shape[1])
                    if mass > 0
                    else float("nan"),
                }
            )
        return pd.DataFrame(rows)


def _as_batch(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``(1, 3, H, W)`` network input from a normalised tensor or an RGB uint8 array."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise AttributionError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
        from dynviz.data import normalize

        return normalize(np.ascontiguousarray(image, dtype=np.uint8)).unsqueeze(0)
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise AttributionError(
            f"attribute() takes one image (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}"
        )
    return image


@contextmanager
def _no_tf32(device: torch.device) -> Iterator[None]:
    """On CUDA, convs and matmuls in full float32 (no TF32) while attributing: the logits the
    network computes then carry float32 rounding only, which the maps reproduce."""
    if device.type != "cuda":
        yield
        return
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def attribute(model: RoutingNetwork, image: torch.Tensor | np.ndarray) -> ImageAttribution:
    """The exact attribution maps of every gate that runs on ``image``.

    The network runs its own forward pass (eval mode, closed paths skipped, the model's
    semantics); a forward hook on each gate takes the node input X it receives and splits the
    gate's logits over the locations of ``gate.features(X)``; a hook on the gate's last conv
    takes the logit the network computed. On CUDA the pass runs without TF32.

    Args:
        model: a dynamic :class:`~dynviz.model.RoutingNetwork` (with gates).
        image: ``(3, H, W)`` / ``(1, 3, H, W)`` normalised tensor, or ``(H, W, 3)`` uint8 RGB.

    Raises:
        AttributionError: the network has no gates (a static network or ``gate: none``), or the
            input is not one image.
    """
    if not model.is_dynamic:
        raise AttributionError(
            f"{model.config.name!r} has no gates to attribute "
            f"({'a static network' if model.is_static else 'gate: none'})"
        )
    x = _as_batch(image)
    param = next(model.parameters())
    x = x.to(device=param.device, dtype=param.dtype)
    captured: dict[tuple[int, int], dict[str, Any]] = {}
    handles = []

    def on_logit(key: tuple[int, int]):
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            captured.setdefault(key, {})["logits"] = output.detach().flatten(1)

        return hook

    def on_gate(key: tuple[int, int]):
        def hook(module: Any, args: tuple[Any, ...], output: torch.Tensor) -> None:
            entry = captured.setdefault(key, {})
            if "maps" in entry:
                raise RuntimeError(f"gate of node {key} ran twice in one forward pass")
            (x_node,) = args
            z = module.features(x_node).detach()  # (1, C/2, h, w): the gate's own computation
            weight = module.conv2.weight.detach().flatten(1).to(torch.float64)  # (P, C/2)
            maps = torch.einsum("pc,chw->phw", weight, z[0].to(torch.float64))
            entry["maps"] = maps.cpu().numpy()
            entry["bias"] = module.conv2.bias.detach().to(torch.float64).cpu().numpy()
            entry["gate_alpha"] = output.detach()[0].double().cpu().numpy()
            entry["node_size"] = (int(x_node.shape[-2]), int(x_node.shape[-1]))

        return hook

    for layer, scale in model.config.cells:
        cell = model.cell(layer, scale)
        if cell is None or cell.gate is None:
            continue
        handles.append(cell.gate.conv2.register_forward_hook(on_logit((layer, scale))))
        handles.append(cell.gate.register_forward_hook(on_gate((layer, scale))))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _no_tf32(x.device):
            out = model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    config = model.config
    stride = config.max_stride
    height, width = int(x.shape[-2]), int(x.shape[-1])
    padded = (height + (-height) % stride, width + (-width) % stride)
    gates = out.gates[0].double().cpu().numpy()  # (L + 1, S, 3)
    nodes: dict[tuple[int, int], NodeAttribution] = {}
    for layer, scale in config.cells:
        entry = captured.get((layer, scale))
        if not entry or "maps" not in entry:
            continue
        cell = model.cell(layer, scale)
        assert cell is not None
        dirs = tuple(cell.directions)
        nodes[(layer, scale)] = NodeAttribution(
            layer=layer,
            scale=scale,
            directions=dirs,
            maps=entry["maps"],
            bias=entry["bias"],
            logits=entry["logits"][0].double().cpu().numpy(),
            gate_alpha=entry["gate_alpha"],
            alpha=gates[layer, scale, [int(d) for d in dirs]],
            node_size=entry["node_size"],
        )
    result = ImageAttribution(
        nodes,
        (height, width),
        padded,
        {s: config.stride(s) for s in range(config.num_scales)},
    )
    logger.debug(
        "attributed %d gates on a %dx%d image: max |mean(map) + bias - logit| = %.3g",
        len(nodes),
        height,
        width,
        result.max_error,
    )
    return result
