"""Which paths the images take: activation probabilities (Fig. 5), alphas, and routing versus
object scale.

Inputs are the records' frames (:mod:`dynviz.record`): ``gates`` with one row per (image, path)
and columns ``image_id, layer, scale, scale_index, direction, alpha, active``, and ``images``
with one row per image. Frames combined from several records carry a ``model`` column
(:func:`dynviz.record.combine_records`); every function here then works per model.

A path's *activation probability* is the share of images in which it was active (alpha above the
threshold, the paper's alpha > 0), as in Fig. 5 of the paper.

The module runs to about 520 lines: every analysis here is a group-by over the same two
frames, per model, and they share its column rules.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "REGIMES",
    "ROUTING_METRICS",
    "SCALE_STATS",
    "ScaleSummary",
    "activation_probability",
    "alpha_histogram",
    "cell_probability",
    "coarsen_histogram",
    "probability_distribution",
    "probability_matrix",
    "regime_labels",
    "routing_vs_scale",
    "scale_summary",
]

logger = logging.getLogger(__name__)

REGIMES: dict[int, str] = {0: "tiny", 1: "huge", 2: "mixed"}
"""``stat_regime_code`` of the synthetic scenes (``dynviz.data.REGIME_CODES`` inverted)."""

SCALE_STATS: tuple[str, ...] = (
    "stat_mean_object_area",
    "stat_median_object_area",
    "stat_max_object_area",
    "stat_small_fraction",
    "stat_object_count",
    "stat_foreground_fraction",
)
"""Image statistics the routing-versus-scale summary correlates with, when present."""

ROUTING_METRICS: tuple[str, ...] = (
    "fine_share",
    "mean_scale_index",
    "max_scale_index",
    "n_active",
    "fine_cost_share",
    "real_gmacs",
)
"""Per-image routing measures of :func:`routing_vs_scale` used by :func:`scale_summary`."""


def _keys(frame: pd.DataFrame, by: Sequence[str]) -> list[str]:
    keys = list(by)
    if "model" in frame.columns and "model" not in keys:
        keys.insert(0, "model")
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        raise KeyError(f"the frame has no column(s) {', '.join(missing)}")
    return keys


@dataclass(frozen=True)
class _Groups:
    """Rows mapped to dense group numbers: ``ids[i]`` is row i's group (-1: a missing key, left
    out as ``observed=True`` groupbys do); ``keys`` holds one row per group, in sorted key
    order, and ``size`` the number of groups."""

    ids: np.ndarray
    keys: pd.DataFrame

    @property
    def size(self) -> int:
        return len(self.keys)

    def sum(self, weights: np.ndarray | None = None) -> np.ndarray:
        """Per group, the number of rows (or the sum of ``weights``)."""
        if self.complete:
            return np.bincount(self.ids, weights=weights, minlength=self.size)
        keep = self.ids >= 0
        w = None if weights is None else np.asarray(weights)[keep]
        return np.bincount(self.ids[keep], weights=w, minlength=self.size)

    @property
    def complete(self) -> bool:
        """Every row belongs to a group (no missing key)."""
        return not len(self.ids) or bool(self.ids.min() >= 0)


def _factorize(column: pd.Series, *, sort: bool) -> tuple[np.ndarray, pd.Series]:
    """``pd.factorize`` as compact integer codes (-1 for missing) and a Series of the uniques;
    small-range integer columns (layers, scales) through a lookup table, several times faster
    than a hash table."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        level = pd.Series(column.cat.categories).astype(column.dtype)
        return column.cat.codes.to_numpy(), level
    if sort and isinstance(column.dtype, np.dtype) and column.dtype.kind in "iu" and len(column):
        values = column.to_numpy()
        low, high = int(values.min()), int(values.max())
        if high - low <= max(len(values), 1 << 16):
            offset = values.astype(np.int64) - low if low else values
            present = np.flatnonzero(np.bincount(offset, minlength=high - low + 1))
            table = np.zeros(high - low + 1, dtype=np.int32)
            table[present] = np.arange(len(present), dtype=np.int32)
            return table[offset], pd.Series(present + low, dtype=column.dtype)
    code, uniques = pd.factorize(column, sort=sort)
    return code, pd.Series(uniques, dtype=column.dtype)


def _groups(frame: pd.DataFrame, keys: Sequence[str], *, sort: bool = True) -> _Groups:
    """Group ``frame`` by ``keys`` with integer codes and ``np.bincount``: a linear pass, several
    times faster than ``DataFrame.groupby(...).agg`` on the 10^7 rows of large records.
    Categorical keys keep their dtype in ``keys``; groups are the observed combinations, in
    sorted key order (categories in their order), or with ``sort=False`` other keys in order of
    first appearance."""
    factors = [_factorize(frame[key], sort=sort) for key in keys]
    shape = tuple(max(len(level), 1) for _, level in factors)
    cells = int(np.prod(shape, dtype=np.int64)) if shape else 1
    n = len(frame)
    flat = np.zeros(n, dtype=np.int32 if cells < 2**31 else np.int64)
    missing: np.ndarray | None = None
    for (code, _), size in zip(factors, shape, strict=True):
        if len(code) and code.min() < 0:
            missing = (code < 0) if missing is None else (missing | (code < 0))
            code = np.maximum(code, 0)
        if size > 1:  # in place: no new arrays of the frame's length
            np.multiply(flat, size, out=flat)
            np.add(flat, code, out=flat, casting="unsafe")
    present = flat if missing is None else flat[~missing]
    if cells <= max(4 * n, 1 << 16):
        seen = np.flatnonzero(np.bincount(present, minlength=cells))
        dense = np.full(cells, -1, dtype=flat.dtype)
        dense[seen] = np.arange(len(seen), dtype=flat.dtype)
        ids = dense[flat]
    else:  # too many combinations for a dense table: sort instead
        seen, inverse = np.unique(present, return_inverse=True)
        ids = np.full(n, -1, dtype=np.int64)
        ids[slice(None) if missing is None else ~missing] = inverse
    if missing is not None:
        ids[missing] = -1
    index = np.unravel_index(seen, shape) if shape else ()
    table = pd.DataFrame(
        {
            key: level.iloc[i].reset_index(drop=True)
            for key, (_, level), i in zip(keys, factors, index, strict=True)
        }
    )
    return _Groups(ids, table)


def activation_probability(
    gates: pd.DataFrame, *, by: Sequence[str] = ("layer", "scale", "direction")
) -> pd.DataFrame:
    """Activation probability and alpha statistics per group (per path by default).

    Args:
        gates: the gate rows (a ``model`` column, when present, is always grouped by).
        by: grouping columns: ``("layer", "scale", "direction")`` per path, ``("layer",)`` per
            layer, ``("scale",)`` per scale, ``("direction",)`` per direction.

    Returns:
        One row per group, sorted: the ``by`` columns, ``p`` (share of rows with an active
        path: per path, the share of images), ``mean_alpha``, ``std_alpha`` (population std,
        ddof 0), ``count`` (rows), ``images`` (distinct images) and, when the rows hold the
        gates' own alphas, ``mean_gate_alpha`` (how far a path was from opening where the
        records' active threshold closed it).
    """
    keys = _keys(gates, by)
    groups = _groups(gates, keys)
    alpha = gates["alpha"].to_numpy(dtype=np.float64)
    count = groups.sum()
    mean = groups.sum(alpha) / count
    m2 = groups.sum(alpha * alpha) / count  # std from E[a^2] - E[a]^2
    out = groups.keys.assign(
        p=groups.sum(gates["active"].to_numpy(dtype=np.float64)) / count,
        mean_alpha=mean,
        std_alpha=np.sqrt(np.clip(m2 - mean * mean, 0.0, None)),
        count=count.astype(np.int64),
    )
    if "gate_alpha" in gates.columns:
        out["mean_gate_alpha"] = groups.sum(gates["gate_alpha"].to_numpy(np.float64)) / count
    if {"layer", "direction"} <= set(keys) and {"scale", "scale_index"} & set(keys):
        out["images"] = out["count"]  # records hold one row per image and path
    else:
        image = pd.factorize(gates["image_id"])[0].astype(np.int64)
        pairs = pd.DataFrame({"group": groups.ids, "image": image})
        pairs = pairs[pairs["group"] >= 0].drop_duplicates()
        out["images"] = np.bincount(pairs["group"].to_numpy(), minlength=groups.size)
    return out


def probability_distribution(gates: pd.DataFrame, *, bins: int = 10) -> pd.DataFrame:
    """The distribution of per-path activation probabilities (the paper's Fig. 5), per model.

    Args:
        gates: the gate rows, optionally with a ``model`` column.
        bins: equal-width bins over [0, 1] (the last bin includes 1).

    Returns:
        One row per (model, bin): ``model``, ``bin_left``, ``bin_right``, ``count`` (paths whose
        probability falls in the bin) and ``fraction`` (of the model's paths).
    """
    per_path = activation_probability(gates)
    if "model" not in per_path.columns:
        per_path.insert(0, "model", "model")
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for model, group in per_path.groupby("model", observed=True, sort=False):
        counts, _ = np.histogram(group["p"].to_numpy(), bins=edges)
        total = max(int(counts.sum()), 1)
        for left, right, count in zip(edges[:-1], edges[1:], counts, strict=True):
            rows.append(
                {
                    "model": model,
                    "bin_left": float(left),
                    "bin_right": float(right),
                    "count": int(count),
                    "fraction": float(count) / total,
                }
            )
    return pd.DataFrame(rows, columns=["model", "bin_left", "bin_right", "count", "fraction"])


def cell_probability(gates: pd.DataFrame) -> pd.DataFrame:
    """Per cell, the share of images in which it ran (at least one of its paths active).

    Returns:
        Columns ``[model,] layer, scale, scale_index, p, mean_max_alpha`` (the mean over
        images of the cell's largest alpha).
    """
    keys = _keys(gates, ("image_id", "layer", "scale", "scale_index"))
    per_image = (
        gates.groupby(keys, observed=True, sort=False)
        .agg(on=("active", "any"), max_alpha=("alpha", "max"))
        .reset_index()
    )
    cell_keys = [k for k in keys if k != "image_id"]
    out = (
        per_image.groupby(cell_keys, observed=True, sort=True)
        .agg(p=("on", "mean"), mean_max_alpha=("max_alpha", "mean"))
        .reset_index()
    )
    out["p"] = out["p"].astype("float64")
    out["mean_max_alpha"] = out["mean_max_alpha"].astype("float64")
    return out


def probability_matrix(
    gates: pd.DataFrame, *, direction: str | None = None, value: str = "p"
) -> pd.DataFrame:
    """A layer x scale matrix for heatmaps (one model: filter a combined frame first).

    Args:
        gates: the gate rows of one model.
        direction: None for the cell probability (:func:`cell_probability`), or ``keep``,
            ``up``, ``down`` for that path's activation probability.
        value: the column to spread (``p``; ``mean_max_alpha`` or ``mean_alpha``).

    Returns:
        Index ``layer``, columns the strides (4, 8, ...), NaN where no cell or path exists.
    """
    if "model" in gates.columns and gates["model"].nunique() > 1:
        raise ValueError("probability_matrix takes one model; filter the frame by 'model'")
    frame = gates.drop(columns=["model"], errors="ignore")
    if direction is None:
        table = cell_probability(frame)
    else:
        table = activation_probability(frame[frame["direction"].astype(str) == direction])
    return table.pivot(index="layer", columns="scale", values=value).sort_index()


def alpha_histogram(
    gates: pd.DataFrame,
    *,
    bins: int = 20,
    by: Sequence[str] = ("direction",),
    value: str = "alpha",
) -> pd.DataFrame:
    """Histogram of alpha values over [0, 1] per group.

    Args:
        gates: the gate rows.
        bins: equal bins over [0, 1].
        by: grouping columns.
        value: ``alpha`` (what the route used: 0 on a closed path) or ``gate_alpha`` (the
            gates' own values, also below the records' active threshold).

    Returns:
        Columns ``[model,] <by>..., bin_left, bin_right, count, fraction``.
    """
    keys = _keys(gates, by)
    if value not in gates.columns:
        raise KeyError(f"the frame has no column(s) {value}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    groups = _groups(gates, keys)
    alpha = np.clip(gates[value].to_numpy(np.float64), 0.0, 1.0)
    # np.histogram's bins: [left, right) and the last one closed
    which = np.clip(np.searchsorted(edges, alpha, side="right") - 1, 0, bins - 1)
    keep = groups.ids >= 0
    counts = np.bincount(
        groups.ids[keep] * bins + which[keep], minlength=groups.size * bins
    ).reshape(groups.size, bins)
    totals = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    out = groups.keys.loc[np.repeat(np.arange(groups.size), bins)].reset_index(drop=True)
    out["bin_left"] = np.tile(edges[:-1], groups.size)
    out["bin_right"] = np.tile(edges[1:], groups.size)
    out["count"] = counts.ravel().astype(np.int64)
    out["fraction"] = (counts / totals).ravel()
    return out[[*keys, "bin_left", "bin_right", "count", "fraction"]]


def coarsen_histogram(histogram: pd.DataFrame, *, by: Sequence[str]) -> pd.DataFrame:
    """Merge the groups of an :func:`alpha_histogram` into coarser ones: a per-path histogram
    (``by=("layer", "scale", "direction")``) summed per direction, scale or layer gives what
    ``alpha_histogram(gates, by=...)`` would, without the gate rows.

    Returns:
        Columns ``[model,] <by>..., bin_left, bin_right, count, fraction``.
    """
    keys = _keys(histogram, by)
    out = (
        histogram.groupby([*keys, "bin_left", "bin_right"], observed=True, sort=True)["count"]
        .sum()
        .reset_index()
    )
    totals = out.groupby(keys, observed=True)["count"].transform("sum")
    out["count"] = out["count"].astype(np.int64)
    out["fraction"] = out["count"] / totals.clip(lower=1)
    return out


def regime_labels(images: pd.DataFrame) -> pd.Series:
    """The scale regime of each image (``tiny``/``huge``/``mixed``) from ``stat_regime_code``,
    ``"n/a"`` where unknown."""
    if "stat_regime_code" not in images.columns:
        return pd.Series("n/a", index=images.index, dtype="string")
    codes = images["stat_regime_code"]
    labels = codes.map(lambda c: REGIMES.get(int(c), f"regime {int(c)}") if pd.notna(c) else "n/a")
    return labels.astype("string")


def routing_vs_scale(
    gates: pd.DataFrame, images: pd.DataFrame, *, path_costs: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per image: where the route spends its paths (and cost) across scales, with the image's
    scale statistics.

    Args:
        gates: the gate rows.
        images: the image rows (``stat_*`` columns are carried over).
        path_costs: optional per-path backbone MACs (``dynviz.record.path_cost_frame``): adds the
            share of the real backbone cost (active transforms plus the operations of cells
            that ran) spent at each scale.

    Returns:
        One row per image: ``[model,] image_id``, ``n_active`` (active paths),
        ``share_s{stride}`` (share of active paths starting at each stride), ``fine_share``
        (= ``share_s4``), ``mean_scale_index`` and ``max_scale_index`` (of the active paths'
        source cells: the route's depth in scale), optionally ``cost_share_s{stride}`` and
        ``fine_cost_share``, then the image columns (``real_gmacs``, ``miou``, ``stat_*``) and
        ``regime``. Shares are NaN for an image without an active path.
    """
    keys = _keys(gates, ("image_id",))
    image = _groups(gates, keys, sort=False)  # images in order of first appearance
    path = _groups(gates, ("layer", "scale", "scale_index", "direction"))
    # (images, paths) matrix of active-row counts: everything below is a small matrix product
    active = gates["active"].to_numpy(dtype=bool)
    if not image.complete:
        active &= image.ids >= 0
    flat = image.ids[active].astype(np.int64) * path.size + path.ids[active]
    on = np.bincount(flat, minlength=image.size * path.size).reshape(image.size, path.size)
    on = on.astype(np.float64)
    strides = sorted(int(v) for v in path.keys["scale"].unique())
    scale_of_path = _one_hot(path.keys["scale"].to_numpy(), strides)  # (paths, scales)
    counts = on @ scale_of_path
    total = counts.sum(axis=1)
    out = image.keys.copy()
    out["n_active"] = total.astype("int64")
    denominator = np.where(total > 0, total, np.nan)
    for i, stride in enumerate(strides):
        out[f"share_s{stride}"] = counts[:, i] / denominator
    out["fine_share"] = out[f"share_s{strides[0]}"] if strides else np.nan
    depth = path.keys["scale_index"].to_numpy(dtype=np.float64)
    out["mean_scale_index"] = (on @ depth) / denominator
    deepest = np.where(on > 0, depth, -np.inf).max(axis=1, initial=-np.inf)
    out["max_scale_index"] = np.where(np.isfinite(deepest), deepest, np.nan)
    if path_costs is not None:
        cost = _cost_by_scale(on, path.keys, strides, path_costs)
        cost_total = cost.sum(axis=1)
        cost_total = np.where(cost_total > 0, cost_total, np.nan)
        for i, stride in enumerate(strides):
            out[f"cost_share_s{stride}"] = cost[:, i] / cost_total
        out["fine_cost_share"] = out[f"cost_share_s{strides[0]}"] if strides else np.nan
    out["image_id"] = out["image_id"].astype(images["image_id"].dtype)
    image_keys = [k for k in keys if k in images.columns]
    extra = images.drop(columns=["confusion"], errors="ignore")
    out = out.merge(extra, on=image_keys, how="left", validate="one_to_one")
    out["regime"] = regime_labels(out)
    return out


def _one_hot(values: np.ndarray, levels: Sequence[int]) -> np.ndarray:
    """``(len(values), len(levels))`` indicator matrix of each value's level."""
    return (np.asarray(values)[:, None] == np.asarray(levels)[None, :]).astype(np.float64)


def _cost_by_scale(
    on: np.ndarray, paths: pd.DataFrame, strides: Sequence[int], path_costs: pd.DataFrame
) -> np.ndarray:
    """Per image and scale, the MACs of the active paths plus the operations of the cells with
    an active path: an (images, scales) array from the (images, paths) activity matrix."""
    costs = path_costs[["layer", "scale", "direction", "path_macs", "op_macs"]].copy()
    costs["direction"] = costs["direction"].astype(str)
    keys = paths[["layer", "scale", "direction"]].assign(direction=paths["direction"].astype(str))
    table = keys.merge(costs, on=["layer", "scale", "direction"], how="left", validate="m:1")
    path_macs = np.nan_to_num(table["path_macs"].to_numpy(dtype=np.float64))
    scale_of_path = _one_hot(paths["scale"].to_numpy(), strides)
    cost = (on * path_macs) @ scale_of_path
    cells = keys[["layer", "scale"]].drop_duplicates().reset_index(drop=True)
    cell_of_path = (
        keys[["layer", "scale"]]
        .merge(cells.reset_index(), on=["layer", "scale"], how="left")["index"]
        .to_numpy()
    )
    ran = (on @ _one_hot(cell_of_path, range(len(cells)))) > 0  # (images, cells)
    cell_costs = cells.merge(
        costs.drop_duplicates(["layer", "scale"]), on=["layer", "scale"], how="left"
    )
    op_macs = np.nan_to_num(cell_costs["op_macs"].to_numpy(dtype=np.float64))
    return cost + (ran * op_macs) @ _one_hot(cells["scale"].to_numpy(), strides)


@dataclass(frozen=True)
class ScaleSummary:
    """What :func:`scale_summary` finds.

    Attributes:
        correlations: ``[model,] metric, stat, pearson, spearman, n``: how each routing measure
            follows each scale statistic over images.
        by_regime: ``[model,] regime, images`` and the mean of each routing measure per regime.
    """

    correlations: pd.DataFrame
    by_regime: pd.DataFrame


def scale_summary(
    per_image: pd.DataFrame,
    *,
    stats: Sequence[str] = SCALE_STATS,
    metrics: Sequence[str] = ROUTING_METRICS,
) -> ScaleSummary:
    """Correlations of routing measures with object-scale statistics, and per-regime means.

    Args:
        per_image: the output of :func:`routing_vs_scale`.
        stats: statistic columns to correlate with (missing ones are skipped).
        metrics: routing measures (missing ones are skipped).

    Returns:
        A :class:`ScaleSummary`. Correlations are NaN when a column is constant.
    """
    stats = [s for s in stats if s in per_image.columns]
    metrics = [m for m in metrics if m in per_image.columns]
    has_model = "model" in per_image.columns
    groups = (
        per_image.groupby("model", observed=True, sort=False) if has_model else [(None, per_image)]
    )
    rows = []
    for model, group in groups:
        for metric in metrics:
            for stat in stats:
                pair = group[[metric, stat]].astype("float64").dropna()
                row = {
                    "metric": metric,
                    "stat": stat,
                    "n": len(pair),
                    "pearson": _corr(pair, "pearson"),
                    "spearman": _corr(pair, "spearman"),
                }
                rows.append({"model": model, **row} if has_model else row)
    columns = (["model"] if has_model else []) + ["metric", "stat", "pearson", "spearman", "n"]
    correlations = pd.DataFrame(rows, columns=columns)
    keys = (["model"] if has_model else []) + ["regime"]
    frame = (
        per_image
        if "regime" in per_image.columns
        else per_image.assign(regime=regime_labels(per_image))
    )
    by_regime = (
        frame.groupby(keys, observed=True, sort=True)
        .agg(images=("image_id", "size"), **{m: (m, "mean") for m in metrics})
        .reset_index()
    )
    return ScaleSummary(correlations=correlations, by_regime=by_regime)


def _corr(pair: pd.DataFrame, method: str) -> float:
    if len(pair) < 3 or (pair.nunique() < 2).any():
        return float("nan")
    x, y = pair.iloc[:, 0], pair.iloc[:, 1]
    if method == "spearman":  # Pearson of average ranks (no scipy needed)
        x, y = x.rank(), y.rank()
    return float(np.corrcoef(x.to_numpy(np.float64), y.to_numpy(np.float64))[0, 1])
