"""The common network (Sec. 4.3 of the paper): the paths that most images take.

The paper keeps the routes whose activation probability exceeds 95% and retrains them as a
static network (Common-A/B/C of Table 1). Paths that pass the threshold do not always form a
network: a path may start in a cell whose input paths did not pass (no input from the stem) or
end in a cell whose onward paths did not pass (no way to the decoder). :func:`prune_dangling`
removes such paths until none is left, so the result is a valid
:class:`~dynviz.model.route.Route` that ``dynviz.build_model`` builds as a static network.
:func:`summarize_common` gives its size and cost beside the dynamic model's, and
:func:`write_common` writes it as a route spec (what ``dynviz extract`` does).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from dynviz.model.config import Direction, PathKey, RoutingSpaceConfig
from dynviz.model.cost import CostTable, cost_table, param_table
from dynviz.model.route import Route, RouteError, format_path
from dynviz.model.topology import live
from dynviz.rules import COMMON_THRESHOLD
from dynviz.units import GIGA, format_macs

if TYPE_CHECKING:
    from dynviz.record import Records

__all__ = [
    "PAPER_SIZE",
    "CommonNetError",
    "CommonSummary",
    "extract_common",
    "path_probability",
    "prune_dangling",
    "summarize_common",
    "write_common",
]

PAPER_SIZE = (1024, 2048)
"""Cityscapes' input size, where the paper counts its GFLOPs."""

logger = logging.getLogger(__name__)


class CommonNetError(RouteError):
    """No valid common network at this threshold; the message says why."""


def path_probability(source: pd.DataFrame) -> dict[PathKey, float]:
    """Activation probability of each recorded path: ``{(layer, scale_index, direction): p}``.

    Args:
        source: the gate rows of one model (``layer``, ``scale`` or ``scale_index``,
            ``direction``, ``active``, ``image_id``), or their per-path activation
            probabilities (:func:`~dynviz.analysis.activation_probability`: a ``p`` column).
    """
    from dynviz.analysis.routes import activation_probability

    if "model" in source.columns and source["model"].nunique() > 1:
        raise ValueError("the frame holds several models; filter it by 'model' first")
    frame = source.drop(columns=["model"], errors="ignore")
    if "scale_index" not in frame.columns:
        frame = frame.assign(scale_index=frame["scale"].map(lambda s: int(round(math.log2(s / 4)))))
    if "p" not in frame.columns:
        frame = activation_probability(frame, by=("layer", "scale_index", "direction"))
    return {
        (int(layer), int(scale), Direction.parse(d)): float(p)
        for layer, scale, d, p in zip(
            frame["layer"], frame["scale_index"], frame["direction"], frame["p"], strict=True
        )
    }


def prune_dangling(config: RoutingSpaceConfig, paths: Iterable[PathKey]) -> frozenset[PathKey]:
    """Remove paths that leave a dangling cell, repeatedly, until none is left.

    A path stays when its source cell receives an open path from the stem (the initial cell
    always does) and its target cell has an open way onward to the decoder (last-layer keeps end
    in the decoder).

    Returns:
        The largest subset of ``paths`` that is a valid network (possibly empty).
    """
    opened = frozenset((int(a), int(b), Direction.parse(d)) for a, b, d in paths)
    kept = live(config, opened)  # dynviz.model.topology: the one reachability rule
    for path in sorted(opened - kept, key=lambda p: (p[0], p[1], int(p[2]))):
        logger.debug("pruned dangling path %s", format_path(path))
    return kept


def extract_common(
    source: Any,
    config: RoutingSpaceConfig | None = None,
    *,
    threshold: float = COMMON_THRESHOLD,
    name: str | None = None,
    description: str | None = None,
) -> Route:
    """The common network: paths active in more than ``threshold`` of the images, pruned of
    dangling cells.

    Args:
        source: a gates frame of one model, :class:`dynviz.record.Records`, or the per-path
            activation probabilities of one model (``activation_probability(gates)``: columns
            ``layer, scale, direction, p, images``), which is much faster on large records.
        config: the routing space (default: the records' config; required for a frame).
        threshold: keep paths whose activation probability is strictly above this (0 <= t < 1).
        name: the route's name (default ``common-<percent>``).
        description: the route's description (default: how it was made).

    Returns:
        A valid :class:`Route` of ``config``; ``route.meta["notes"]`` says what was kept and
        pruned.

    Raises:
        CommonNetError: no path passes the threshold, or none of those that pass forms a path
            from the stem to the decoder (the message names the threshold).
        ValueError: a bad threshold, or no config for a frame.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold {threshold} must be in [0, 1)")
    gates = getattr(source, "gates", source)
    if config is None:
        config = getattr(source, "config", None)
        if config is None:
            raise ValueError("extract_common needs the routing-space config for a gates frame")
    if not isinstance(gates, pd.DataFrame) or gates.empty:
        raise CommonNetError("no gate rows to extract a common network from")
    per_path = "p" in gates.columns and "active" not in gates.columns
    images = int(gates["images"].max()) if per_path else int(gates["image_id"].nunique())
    probability = path_probability(gates)
    passing = {path for path, p in probability.items() if p > threshold}
    percent = f"{100 * threshold:g}%"
    if not passing:
        best = max(probability.items(), key=lambda item: item[1])
        raise CommonNetError(
            f"threshold {threshold:g} emptied the common network: no path is active in more "
            f"than {percent} of the {images} images (the most frequent, {format_path(best[0])},"
            f" in {100 * best[1]:.1f}%); lower the threshold"
        )
    kept = prune_dangling(config, passing)
    if not kept:
        raise CommonNetError(
            f"threshold {threshold:g} emptied the common network: {len(passing)} path(s) are "
            f"active in more than {percent} of the {images} images, but none of them lies on a "
            "route from the stem to the decoder (all leave dangling cells); lower the threshold"
        )
    pruned = len(passing) - len(kept)
    notes = (
        f"Paths active in more than {percent} of {images} images: {len(passing)} of "
        f"{len(probability)} recorded paths pass, {pruned} removed as dangling, "
        f"{len(kept)} kept in {len({(a, b) for a, b, _ in kept})} cells."
    )
    logger.debug("common network at threshold %g: %s", threshold, notes)
    return Route(
        config,
        kept,
        name=name or f"common-{100 * threshold:g}",
        description=description
        or f"common network (paths active in more than {percent} of {images} images)",
        meta={"notes": notes},
    )


@dataclass(frozen=True)
class CommonSummary:
    """A common network beside the dynamic model it comes from.

    Attributes:
        route: the common network (:func:`extract_common`).
        costs: its static network's cost table at ``size``.
        size: the input size of ``costs``, ``gmacs`` and ``dynamic_gmacs``.
        params, gmacs: the static network's parameters and GMACs at ``size``.
        gmacs_paper: its GMACs at the paper's 1024x2048.
        dynamic_params, dynamic_gmacs: the dynamic model's, every path open, at ``size``.
    """

    route: Route
    costs: CostTable
    size: tuple[int, int]
    params: int
    gmacs: float
    gmacs_paper: float
    dynamic_params: int
    dynamic_gmacs: float

    @property
    def paths(self) -> int:
        return len(self.route)

    @property
    def cells(self) -> int:
        return len(self.route.cells)


def summarize_common(
    source: Any,
    config: RoutingSpaceConfig | None = None,
    *,
    threshold: float = COMMON_THRESHOLD,
    size: tuple[int, int] = PAPER_SIZE,
    name: str | None = None,
    description: str | None = None,
) -> CommonSummary:
    """:func:`extract_common` (same ``source``, ``config``, ``threshold``, ``name``,
    ``description``), with the static network's parameters and GMACs at ``size`` and at the
    paper's size, beside the dynamic model's with every path open (raises
    :class:`CommonNetError` as :func:`extract_common`)."""
    if config is None:
        config = getattr(source, "config", None)
    route = extract_common(source, config, threshold=threshold, name=name, description=description)
    config = route.space
    costs = cost_table(config, size, route=route)
    return CommonSummary(
        route=route,
        costs=costs,
        size=(int(size[0]), int(size[1])),
        params=param_table(config, route=route).total,
        gmacs=costs.total() / GIGA,
        gmacs_paper=cost_table(config, PAPER_SIZE, route=route).total() / GIGA,
        dynamic_params=param_table(config).total,
        dynamic_gmacs=cost_table(config, size).total() / GIGA,
    )


def write_common(
    records_dir: str | Path | Records,
    out: str | Path,
    *,
    threshold: float = COMMON_THRESHOLD,
    name: str | None = None,
    size: tuple[int, int] | None = None,
) -> Route:
    """Extract the common network of a records folder and write its route spec.

    The file starts with a comment naming the source records and threshold; its ``notes`` give
    the parameters and GMACs of the static network. It is checked to build before returning.

    Args:
        records_dir: the records folder, or records already read (:func:`read_records`).
        out: the YAML file to write.
        threshold: keep paths active in more than this share of images.
        name: the route's name (default: the file's stem).
        size: input size for the GMACs in the notes (default: the records' first input size).

    Returns:
        The route, as read back from the written file.
    """
    from dynviz.model import build_model
    from dynviz.model.checkpoint import atomic_write
    from dynviz.record import Records, read_records

    records = records_dir if isinstance(records_dir, Records) else read_records(records_dir)
    source = records.path if records.path is not None else records.label
    out = Path(out)
    name = name or out.stem
    label = records.label
    images = len(records.images)
    size = size or records.sidecar.input_size or PAPER_SIZE
    summary = summarize_common(
        records,
        threshold=threshold,
        size=size,
        name=name,
        description=f"common network of {label}: paths active in more than "
        f"{100 * threshold:g}% of {images} images",
    )
    route = summary.route
    notes = (
        f"{route.meta.get('notes', '')} Static network: {summary.params:,} parameters, "
        f"{format_macs(summary.gmacs)} at {size[0]}x{size[1]} (paper counting); the dynamic "
        f"model with every path open: {format_macs(summary.dynamic_gmacs)}."
    )
    route = Route(
        route.space,
        route.paths,
        name=route.name,
        description=route.description,
        meta={"notes": notes},
    )
    checkpoint = records.sidecar.checkpoint
    header = [
        f"# Common network extracted by `dynviz extract` from {source}",
        f"# ({label}: {images} images of {records.sidecar.data_label}; checkpoint sha256 "
        f"{((checkpoint.sha256 if checkpoint else None) or 'none (untrained)')[:16]}).",
        f"# Paths active in more than {100 * threshold:g}% of the images, dangling cells removed.",
        f"# Build: dynviz.build_model({str(out)!r}); retrain: dynviz train {out} --data SPEC",
    ]
    if records.skipped:  # the images it was extracted from are not all the recorded ones
        header.append(f"# {records.skipped_note}")
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(header) + "\n" + route.to_yaml()
    atomic_write(out, lambda handle: handle.write(text.encode("utf-8")))  # whole or not at all
    written = Route.from_yaml(out)
    build_model(written)  # fail here, not at training time, if it does not build
    return written
