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

:func:`object_attribution` relates the maps to the objects of a labelled image (area, class), and
:func:`records_object_attribution` does so over the images of a records folder.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from dynviz.errors import UserError
from dynviz.model.config import Direction
from dynviz.model.network import RoutingNetwork

__all__ = [
    "TOP_FRACTION",
    "AttributionError",
    "ImageAttribution",
    "NodeAttribution",
    "attribute",
    "attribution_overlay",
    "attribution_vs_size",
    "object_attribution",
    "records_object_attribution",
    "top_share",
    "upsample_map",
    "write_attribution",
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


# ------------------------------------------------------------------------------- display
def attribution_overlay(
    image: np.ndarray,
    values: np.ndarray,
    *,
    opacity: float = 0.6,
    limit: float | None = None,
    cmap: str = "RdBu_r",
) -> np.ndarray:
    """An RGB uint8 overlay of a map (already at the image's size) on ``image``: a diverging
    colour scale centred at zero (red opens, blue closes), symmetric limits ``+-limit``
    (default ``max |values|``); the blend is stronger where ``|values|`` is larger."""
    import matplotlib

    values = np.asarray(values, dtype=np.float64)
    if values.shape != image.shape[:2]:
        raise ValueError(f"map {values.shape} and image {image.shape[:2]} differ in size")
    bound = float(np.abs(values).max()) if limit is None else float(limit)
    scaled = np.zeros_like(values) if bound == 0 else np.clip(values / bound, -1.0, 1.0)
    scaled = scaled.astype(np.float32)
    lut = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3].astype(np.float32)
    colours = lut[np.rint((scaled + 1.0) * 127.5).astype(np.uint8)] * 255.0  # 0 -> the middle
    weight = opacity * np.abs(scaled)[..., None]
    blend = (1.0 - weight) * image.astype(np.float32) + weight * colours
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def _png_name(layer: int, stride: int, direction: str) -> str:
    return f"layer{layer:02d}_s{stride:02d}_{direction}.png"


COLORBAR = "colorbar.png"
"""The colour scale of every overlay that :func:`write_attribution` writes."""


def write_colorbar(path: str | os.PathLike[str], *, cmap: str = "RdBu_r") -> Path:
    """The overlays' colour scale as a PNG: -1 to +1 of each map's own ``max |map|`` (its
    ``map_limit``), red pushing the gate's logit up (opening the path), blue down."""
    import matplotlib
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.0, 0.9), dpi=100, layout="constrained")  # no pyplot, no backend
    ax = figure.subplots()
    scale = matplotlib.cm.ScalarMappable(
        norm=matplotlib.colors.Normalize(-1.0, 1.0), cmap=matplotlib.colormaps[cmap]
    )
    bar = figure.colorbar(scale, cax=ax, orientation="horizontal", ticks=[-1, -0.5, 0, 0.5, 1])
    bar.set_label("map / map_limit: red opens the path, blue closes it")
    figure.savefig(path)
    return Path(path)


def write_attribution(
    attr: ImageAttribution,
    image: np.ndarray,
    out: str | os.PathLike[str],
    *,
    opacity: float = 0.6,
) -> Path:
    """Write one image's attribution into the folder ``out``:

    * ``attribution.parquet``: :meth:`ImageAttribution.frame` plus ``map`` (the path's map at
      the gate's resolution, row-major float32, ``map_height x map_width``) and ``png``;
    * ``maps/layerLL_sSS_DIR.png``: each map upsampled over the image as an overlay (diverging
      colours centred at zero, each map scaled to its own ``max |m|``);
    * ``region_down.png``, ``region_up.png`` and ``summary.csv``: the per-image summary;
    * ``colorbar.png``: the colour scale of the overlays (each map's limit is its
      ``map_limit``).

    Returns:
        The folder.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise AttributionError(f"{folder}: exists and is not a folder")
    (folder / "maps").mkdir(parents=True, exist_ok=True)
    if image.shape[:2] != attr.image_size:
        raise ValueError(f"image {image.shape[:2]} is not the attributed {attr.image_size}")
    frame = attr.frame()
    maps, pngs = [], []
    for row in frame.itertuples():
        node = attr.node(row.layer, row.scale_index)
        values = node.maps[node.index(row.direction)]
        maps.append(values.astype(np.float32).ravel())
        name = _png_name(row.layer, row.scale, row.direction)
        overlay = attribution_overlay(
            image, attr.upsampled(row.layer, row.scale_index, row.direction), opacity=opacity
        )
        Image.fromarray(overlay).save(folder / "maps" / name, compress_level=1)
        pngs.append(f"maps/{name}")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.append_column("map", pa.array(maps, type=pa.list_(pa.float32())))
    table = table.append_column("png", pa.array(pngs, type=pa.string()))
    pq.write_table(table, folder / "attribution.parquet")
    for direction, region in attr.region_maps().items():
        Image.fromarray(attribution_overlay(image, region, opacity=opacity)).save(
            folder / f"region_{direction}.png", compress_level=1
        )
    attr.summary().to_csv(folder / "summary.csv", index=False)
    write_colorbar(folder / COLORBAR)
    return folder


# --------------------------------------------------------------------- objects and scale
def object_attribution(
    attr: ImageAttribution,
    instances: np.ndarray,
    label: np.ndarray,
    *,
    image_id: str = "",
    ignore_index: int = 255,
) -> pd.DataFrame:
    """Attribution mass of each object of an image, per (node scale, direction).

    For every object (an instance id > 0 of ``instances``; its class is the majority of
    ``label`` under it) and every group of paths (the direction of the paths leaving nodes at
    one scale, averaged over layers), with ``m`` the group's mean upsampled map:

    * ``mass``: ``sum over the object's pixels of m / number of pixels``, the object's part of
      the mean logit (the masses of a partition of the image add up to mean(logit - bias));
    * ``density``: the mean of ``m`` over the object's pixels;
    * ``lift``: ``density`` minus the mean of ``m`` over the image (> 0: the object pushes the
      paths open more than an average location does).

    Returns:
        One row per (object, scale_index, direction): ``image_id``, ``object``, ``class``,
        ``area`` (pixels), ``area_fraction``, ``scale_index``, ``scale``, ``direction``,
        ``mass``, ``density``, ``lift``.
    """
    size = attr.image_size
    if instances.shape != size or label.shape != size:
        raise ValueError(
            f"instances {instances.shape} / label {label.shape} do not match the image {size}"
        )
    paths: dict[tuple[int, str], list[tuple[int, int, Direction]]] = {}
    for (layer, scale), node in attr.nodes.items():
        for d in node.directions:
            paths.setdefault((scale, d.label), []).append((layer, scale, d))
    groups = {group: attr.mean_map(members) for group, members in sorted(paths.items())}
    ids = np.unique(instances)
    ids = ids[ids > 0]
    total = instances.size
    rows = []
    for obj in ids.tolist():
        mask = instances == obj
        area = int(mask.sum())
        classes = label[mask]
        classes = classes[classes != ignore_index]
        cls = int(np.bincount(classes).argmax()) if classes.size else -1
        for (scale, direction), m in groups.items():
            inside = float(m[mask].sum())
            density = inside / area
            rows.append(
                {
                    "image_id": image_id,
                    "object": int(obj),
                    "class": cls,
                    "area": area,
                    "area_fraction": area / total,
                    "scale_index": int(scale),
                    "scale": attr.stride.get(scale, 4 * 2**scale),
                    "direction": direction,
                    "mass": inside / total,
                    "density": density,
                    "lift": density - float(m.mean()),
                }
            )
    return pd.DataFrame(rows, columns=_OBJECT_COLUMNS)


_OBJECT_COLUMNS = [
    "image_id",
    "object",
    "class",
    "area",
    "area_fraction",
    "scale_index",
    "scale",
    "direction",
    "mass",
    "density",
    "lift",
]


def _objects(dataset: Any, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image, label, instances)`` of one data-set image: the synthetic scenes' own instance
    maps, else one object per class present (no instance masks)."""
    sample = getattr(dataset, "sample", None)
    if callable(sample):
        s = sample(index)
        if getattr(s, "instances", None) is not None:
            return s.image, s.label, s.instances
    image, label = dataset.raw(index)
    ignore = int(getattr(dataset, "ignore_index", 255))
    instances = np.where(label == ignore, 0, label.astype(np.int32) + 1)
    return image, label, instances


def records_object_attribution(
    model: RoutingNetwork,
    dataset: Any,
    image_ids: Sequence[str],
    *,
    sizes: Sequence[tuple[int, int]] | None = None,
) -> pd.DataFrame:
    """:func:`object_attribution` over images of a data set (e.g. those of a records folder).

    Args:
        model: the records' dynamic network.
        dataset: the records' data set (``build_dataset(meta['data'], split=meta['split'])``).
        image_ids: the images, by id.
        sizes: ``(H, W)`` per image the model saw (records made with ``--size``): the image is
            resized (bilinear) and the label and instances (nearest) to it first.

    Returns:
        The rows of :func:`object_attribution` for every image, stacked.

    Raises:
        AttributionError: an image id is not in the data set.
    """
    from dynviz.data import Resize

    index = {str(dataset.image_id(i)): i for i in range(len(dataset))}
    frames = []
    for n, image_id in enumerate(image_ids):
        if str(image_id) not in index:
            raise AttributionError(f"image {image_id!r} is not in the data set {dataset!r}")
        image, label, instances = _objects(dataset, index[str(image_id)])
        if sizes is not None and tuple(sizes[n]) != image.shape[:2]:
            resize = Resize(tuple(int(v) for v in sizes[n]))
            image, label = resize(image, label)
            instances = resize(np.zeros((*instances.shape, 3), np.uint8), instances)[1]
        attr = attribute(model, image)
        frames.append(object_attribution(attr, instances, label, image_id=str(image_id)))
    if not frames:
        return pd.DataFrame(columns=_OBJECT_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def attribution_vs_size(objects: pd.DataFrame, *, value: str = "lift") -> pd.DataFrame:
    """Does object size predict the attribution of a path group? Per (class, scale_index,
    direction): the number of objects, the Spearman correlation of the area with
    ``value`` (negative: smaller objects push these paths open more), and the mean ``value``
    for the objects below and above the median area of the class.

    Returns:
        Columns ``class``, ``scale_index``, ``scale``, ``direction``, ``objects``,
        ``spearman``, ``small_mean``, ``large_mean``.
    """
    columns = [
        "class",
        "scale_index",
        "scale",
        "direction",
        "objects",
        "spearman",
        "small_mean",
        "large_mean",
    ]
    if objects.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (cls, scale_index, scale, direction), part in objects.groupby(
        ["class", "scale_index", "scale", "direction"], sort=True
    ):
        area = part["area"].to_numpy(dtype=np.float64)
        vals = part[value].to_numpy(dtype=np.float64)
        median = float(np.median(area))
        small, large = vals[area <= median], vals[area > median]
        rho = float("nan")
        if len(part) >= 3 and np.ptp(area) > 0 and np.ptp(vals) > 0:
            ranks = pd.Series(area).rank(), pd.Series(vals).rank()  # Spearman, no scipy
            rho = float(np.corrcoef(ranks[0].to_numpy(), ranks[1].to_numpy())[0, 1])
        rows.append(
            {
                "class": cls,
                "scale_index": scale_index,
                "scale": scale,
                "direction": direction,
                "objects": len(part),
                "spearman": rho,
                "small_mean": float(small.mean()) if small.size else float("nan"),
                "large_mean": float(large.mean()) if large.size else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=columns)
