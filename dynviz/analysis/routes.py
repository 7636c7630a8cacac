"""Which paths the images take: activation probabilities (Fig. 5), alphas, and routing versus
object scale.

Inputs are the records' frames (:mod:`dynviz.record`): ``gates`` with one row per (image, path)
and columns ``image_id, layer, scale, scale_index, direction, alpha, active``, and ``images``
with one row per image. Frames combined from several records carry a ``model`` column
(:func:`dynviz.record.combine_records`); every function here then works per model.

A path's *activation probability* is the share of images in which it was active (alpha above the
threshold, the paper's alpha > 0), as in Fig. 5 of the paper.
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
        ddof 0), ``count`` (rows) and ``images`` (distinct images).
    """
    keys = _keys(gates, by)
    alpha = gates["alpha"].to_numpy(dtype=np.float64)
    frame = gates.assign(_alpha2=alpha * alpha)  # std from E[a^2] - E[a]^2: no Python lambda
    grouped = frame.groupby(keys, observed=True, sort=True)
    out = grouped.agg(
        p=("active", "mean"),
        mean_alpha=("alpha", "mean"),
        _m2=("_alpha2", "mean"),
        count=("active", "size"),
    )
    mean = out["mean_alpha"].astype("float64")
    out.insert(2, "std_alpha", np.sqrt(np.clip(out.pop("_m2") - mean * mean, 0.0, None)))
    if {"layer", "scale", "direction"} <= set(keys):
        out["images"] = out["count"]  # records hold one row per image and path
    else:
        codes = pd.Series(pd.factorize(gates["image_id"])[0], index=gates.index)
        out["images"] = codes.groupby([gates[k] for k in keys], observed=True).nunique()
    out = out.reset_index()
    out["p"] = out["p"].astype("float64")
    out["mean_alpha"] = out["mean_alpha"].astype("float64")
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
    gates: pd.DataFrame, *, bins: int = 20, by: Sequence[str] = ("direction",)
) -> pd.DataFrame:
    """Histogram of alpha values over [0, 1] per group.

    Returns:
        Columns ``[model,] <by>..., bin_left, bin_right, count, fraction``.
    """
    keys = _keys(gates, by)
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for key, group in gates.groupby(keys, observed=True, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        counts, _ = np.histogram(np.clip(group["alpha"].to_numpy(np.float64), 0, 1), bins=edges)
        total = max(int(counts.sum()), 1)
        for left, right, count in zip(edges[:-1], edges[1:], counts, strict=True):
            rows.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "bin_left": float(left),
                    "bin_right": float(right),
                    "count": int(count),
                    "fraction": float(count) / total,
                }
            )
    return pd.DataFrame(rows, columns=[*keys, "bin_left", "bin_right", "count", "fraction"])


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
    if not isinstance(gates["image_id"].dtype, pd.CategoricalDtype):
        # factorize the string ids once instead of in every groupby below
        gates = gates.assign(image_id=gates["image_id"].astype("category"))
    strides = sorted(int(s) for s in gates["scale"].unique())
    active = gates[gates["active"].astype(bool)]
    counts = (
        active.groupby([*keys, "scale"], observed=True)
        .size()
        .unstack("scale", fill_value=0)
        .reindex(columns=strides, fill_value=0)
    )
    base = gates[keys].drop_duplicates().set_index(keys)
    counts = counts.reindex(base.index, fill_value=0)
    total = counts.sum(axis=1)
    out = pd.DataFrame(index=base.index)
    out["n_active"] = total.astype("int64")
    denominator = total.replace(0, np.nan)
    for stride in strides:
        out[f"share_s{stride}"] = counts[stride] / denominator
    out["fine_share"] = out[f"share_s{strides[0]}"] if strides else np.nan
    depth = active.groupby(keys, observed=True)["scale_index"].agg(["mean", "max"])
    out["mean_scale_index"] = depth["mean"].reindex(out.index).astype("float64")
    out["max_scale_index"] = depth["max"].reindex(out.index).astype("float64")
    if path_costs is not None:
        cost = _cost_by_scale(active, keys, path_costs).reindex(
            index=out.index, columns=strides, fill_value=0.0
        )
        cost_total = cost.sum(axis=1).replace(0, np.nan)
        for stride in strides:
            out[f"cost_share_s{stride}"] = cost[stride] / cost_total
        out["fine_cost_share"] = out[f"cost_share_s{strides[0]}"] if strides else np.nan
    out = out.reset_index()
    out["image_id"] = out["image_id"].astype(images["image_id"].dtype)
    image_keys = [k for k in keys if k in images.columns]
    extra = images.drop(columns=["confusion"], errors="ignore")
    out = out.merge(extra, on=image_keys, how="left", validate="one_to_one")
    out["regime"] = regime_labels(out)
    return out


def _cost_by_scale(active: pd.DataFrame, keys: list[str], path_costs: pd.DataFrame) -> pd.DataFrame:
    costs = path_costs[["layer", "scale", "direction", "path_macs", "op_macs"]].copy()
    costs["direction"] = costs["direction"].astype(str).astype(active["direction"].dtype)
    rows = active.merge(costs, on=["layer", "scale", "direction"], how="left")
    paths = rows.groupby([*keys, "scale"], observed=True)["path_macs"].sum()
    cells = rows.drop_duplicates([*keys, "layer", "scale"])
    ops = cells.groupby([*keys, "scale"], observed=True)["op_macs"].sum()
    return (paths.add(ops, fill_value=0.0)).unstack("scale", fill_value=0.0)


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
