"""Gate attribution against the objects of labelled images: how much of each path's attribution
mass lies on an object, by object size and class (:func:`object_attribution` for one image,
:func:`records_object_attribution` over the images of a records folder,
:func:`attribution_vs_size` to bin the result by area).

The exact maps themselves are computed by :func:`dynviz.model.attribution.attribute` (the gate
maths) and written as PNG overlays by :func:`dynviz.plots.attribution_png.write_attribution`; both
modules' public names are re-exported here, where they were first published.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from dynviz.model.attribution import (
    TOP_FRACTION,
    AttributionError,
    ImageAttribution,
    NodeAttribution,
    attribute,
    top_share,
    upsample_map,
)
from dynviz.model.config import Direction
from dynviz.model.network import RoutingNetwork
from dynviz.plots.attribution_png import attribution_overlay, write_attribution

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
