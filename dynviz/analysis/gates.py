"""Analyses of any gate graph (issue 27): usage per point and option, Fig. 5-style distributions,
common paths at a threshold, per-input cost, decisions against input statistics.

Every function reads the ``decisions`` table (:attr:`dynviz.record.Records.decisions`: one row
per image, gate point and option with ``value`` and ``ran``) and the ``images`` table, so it
applies to any gated network and to the routing space alike (whose cells are the points and
whose paths are the options, :mod:`dynviz.gates.routing`).

- :func:`option_usage`: per (point, option), the share of inputs that ran it, and its value's
  mean and quartiles.
- :func:`value_distribution`: per (point, option), a histogram of the per-input value over
  ``[0, 1]`` (the paper's Fig. 5 shows it for the gates' activation).
- :func:`common_plan`: the options used by more than ``threshold`` of the inputs (always), by
  none (never) and the rest (sometimes); :meth:`CommonPlan.keep` is what a static network of
  the common paths runs.
- :func:`input_cost`: per input, the real cost (and the expected one) in GMACs where known.
- :func:`decisions_vs_statistics`: Spearman's rho between each option's value and each input
  statistic (``stat_*``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dynviz.gates import GateGraph, PointKind
from dynviz.record.format import STAT_PREFIX
from dynviz.rules import COMMON_THRESHOLD

__all__ = [
    "CommonPlan",
    "common_plan",
    "decisions_vs_statistics",
    "input_cost",
    "option_usage",
    "value_distribution",
]

_KEYS = ["point", "option"]


def option_usage(decisions: pd.DataFrame) -> pd.DataFrame:
    """Per (point, option), in the graph's order: ``inputs`` (that reached the point),
    ``usage`` (share of all inputs that ran the option), ``value_mean``, ``value_q25``,
    ``value_median``, ``value_q75`` (over the inputs that reached the point).

    Computed on the dense inputs x options matrix (:func:`_dense`): a routing-space recording
    of 100,000 images has 15 M decision rows, and grouped quantiles over them took 2 s."""
    dense = _dense(decisions)
    values = dense.values
    reached = ~np.isnan(values)
    full = reached.all(0)
    quartiles = np.full((3, values.shape[1]), np.nan)
    if full.any():
        quartiles[:, full] = np.quantile(values[:, full], [0.25, 0.5, 0.75], axis=0)
    gaps = ~full & reached.any(0)
    if gaps.any():
        quartiles[:, gaps] = np.nanquantile(values[:, gaps], [0.25, 0.5, 0.75], axis=0)
    counts = reached.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, np.nansum(values, 0) / np.maximum(counts, 1), np.nan)
    return pd.DataFrame(
        {
            "point": dense.point_column(),
            "option": dense.option_column(),
            "inputs": counts,
            "usage": dense.ran.sum(0) / max(len(dense.ids), 1),
            "value_mean": means,
            "value_q25": quartiles[0],
            "value_median": quartiles[1],
            "value_q75": quartiles[2],
        }
    )


@dataclass(frozen=True)
class _Dense:
    """Decisions as an inputs x (point, option) matrix."""

    values: np.ndarray  # (inputs, pairs) float64, NaN where not reached
    ran: np.ndarray  # (inputs, pairs) bool
    ids: pd.Index  # the inputs, in order of first appearance
    pairs: np.ndarray  # (pairs,) point code * width + option code, ascending
    point: pd.Categorical
    option: pd.Categorical

    @property
    def width(self) -> int:
        return len(self.option.categories)

    def point_column(self) -> pd.Categorical:
        cats = self.point
        return pd.Categorical.from_codes(
            self.pairs // self.width, categories=cats.categories, ordered=cats.ordered
        )

    def option_column(self) -> pd.Categorical:
        cats = self.option
        return pd.Categorical.from_codes(
            self.pairs % self.width, categories=cats.categories, ordered=cats.ordered
        )


def _dense(
    decisions: pd.DataFrame,
    *,
    keep: np.ndarray | None = None,
    max_inputs: int | None = None,
) -> _Dense:
    """The decisions (the rows ``keep`` marks) as dense matrices; with ``max_inputs``, only
    that many inputs drawn at random (seed 0)."""
    point, option = _categorical(decisions["point"]), _categorical(decisions["option"])
    keep = np.ones(len(decisions), dtype=bool) if keep is None else keep
    width = len(option.categories)
    pair = point.codes.astype(np.int64) * width + option.codes  # one code per (point, option)
    image, ids = pd.factorize(decisions["image_id"], sort=False)
    if max_inputs is not None and len(ids) > max_inputs:
        chosen = np.zeros(len(ids), dtype=bool)
        chosen[np.random.default_rng(0).choice(len(ids), max_inputs, replace=False)] = True
        keep = keep & chosen[image]
        image = np.cumsum(chosen)[image] - 1  # renumbered among the chosen
        ids = ids[chosen]
    pairs = np.unique(pair[keep])
    column = np.searchsorted(pairs, pair[keep])
    rows = image[keep]
    values = np.full((len(ids), len(pairs)), np.nan)
    values[rows, column] = decisions["value"].to_numpy(np.float64)[keep]
    ran = np.zeros((len(ids), len(pairs)), dtype=bool)
    ran[rows, column] = decisions["ran"].to_numpy(bool)[keep]
    return _Dense(values, ran, pd.Index(ids), pairs, point, option)


def value_distribution(decisions: pd.DataFrame, *, bins: int = 10) -> pd.DataFrame:
    """Per (point, option), the share of inputs whose value falls in each of ``bins`` equal
    bins of ``[0, 1]`` (values outside are clipped into the end bins; NaN, an input that did
    not reach the point, is left out). Columns: ``point``, ``option``, ``bin`` (0..bins-1),
    ``low``, ``high``, ``share``."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, not {bins}")
    reached = decisions[decisions["value"].notna()]
    index = np.clip((reached["value"].to_numpy(np.float64) * bins).astype(np.int64), 0, bins - 1)
    counts = (
        reached.assign(bin=index)
        .groupby([*_KEYS, "bin"], observed=True)
        .size()
        .rename("count")
        .reset_index()
    )
    totals = counts.groupby(_KEYS, observed=True)["count"].transform("sum")
    full = (
        counts.assign(share=counts["count"] / totals)
        .set_index([*_KEYS, "bin"])["share"]
        .unstack("bin", fill_value=0.0)
        .reindex(columns=range(bins), fill_value=0.0)
        .stack()
        .rename("share")
        .reset_index()
    )
    full["low"] = full["bin"] / bins
    full["high"] = (full["bin"] + 1) / bins
    return full[[*_KEYS, "bin", "low", "high", "share"]]


@dataclass(frozen=True)
class CommonPlan:
    """The options of a gate graph sorted by how many inputs used them.

    Attributes:
        threshold: the share above which an option counts as always used.
        always: ``{point: options}`` used by more than ``threshold`` of the inputs.
        sometimes: used by some inputs, at most ``threshold`` of them.
        never: used by none.
        usage: ``{(point, option): share}``.
    """

    threshold: float
    always: dict[str, tuple[str, ...]]
    sometimes: dict[str, tuple[str, ...]]
    never: dict[str, tuple[str, ...]]
    usage: dict[tuple[str, str], float] = field(repr=False)

    def keep(self, *, lossless: bool = False) -> dict[str, tuple[str, ...]]:
        """``{point: options}`` a static network runs: the always-used ones (the common
        paths), or with ``lossless`` every option some input used (only never-used options
        dropped: the recorded inputs decide as before)."""
        points = list(dict.fromkeys([*self.always, *self.sometimes, *self.never]))
        out = {}
        for p in points:
            kept = list(self.always.get(p, ()))
            if lossless:
                kept += list(self.sometimes.get(p, ()))
            out[p] = tuple(kept)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain data (what ``dynviz extract`` writes for a gate graph)."""
        return {
            "threshold": self.threshold,
            "always": {p: list(o) for p, o in self.always.items()},
            "sometimes": {p: list(o) for p, o in self.sometimes.items()},
            "never": {p: list(o) for p, o in self.never.items()},
            "usage": {f"{p}/{o}": round(float(u), 6) for (p, o), u in self.usage.items()},
        }


def common_plan(
    decisions: pd.DataFrame, graph: GateGraph, *, threshold: float = COMMON_THRESHOLD
) -> CommonPlan:
    """Sort every option of ``graph`` into always (used by more than ``threshold`` of the
    inputs), sometimes and never (used by none of them).

    Raises:
        ValueError: ``threshold`` outside [0, 1).
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), not {threshold}")
    usage = option_usage(decisions).set_index(_KEYS)["usage"]
    shares: dict[tuple[str, str], float] = {}
    always: dict[str, tuple[str, ...]] = {}
    sometimes: dict[str, tuple[str, ...]] = {}
    never: dict[str, tuple[str, ...]] = {}
    for point in graph:
        groups: dict[str, list[str]] = {"always": [], "sometimes": [], "never": []}
        for option in point.option_names:
            share = float(usage.get((point.name, option), 0.0))
            shares[(point.name, option)] = share
            kind = "always" if share > threshold else "never" if share == 0.0 else "sometimes"
            groups[kind].append(option)
        always[point.name] = tuple(groups["always"])
        sometimes[point.name] = tuple(groups["sometimes"])
        never[point.name] = tuple(groups["never"])
    return CommonPlan(threshold, always, sometimes, never, shares)


def input_cost(images: pd.DataFrame, graph: GateGraph) -> pd.DataFrame:
    """Per input: ``image_id``, ``real_gmacs``, ``expected_gmacs`` and ``share_of_all``
    (real cost over the cost with every option running; NaN where the graph has no costs)."""
    out = images[["image_id", "real_gmacs", "expected_gmacs"]].copy()
    everything = graph.all_run_macs
    out["share_of_all"] = out["real_gmacs"] * 1e9 / everything if everything else np.nan
    return out


def decisions_vs_statistics(
    decisions: pd.DataFrame,
    images: pd.DataFrame,
    *,
    statistics: Sequence[str] | None = None,
    min_inputs: int = 5,
    graph: GateGraph | None = None,
    max_inputs: int | None = None,
) -> pd.DataFrame:
    """Spearman's rho between each (point, option)'s per-input value and each input statistic.

    Args:
        decisions: the decisions table.
        images: the images table (``stat_*`` columns).
        statistics: the statistics (without the prefix; default: every ``stat_*`` column).
        min_inputs: pairs with fewer inputs, or a constant side, give NaN.
        graph: with it, a two-option point (skip or exit) is correlated through its ``run``
            or ``exit`` value only (the other is one minus it: the same rho, negated).
        max_inputs: correlate over this many inputs drawn at random (seed 0) when there are
            more (the explorer's page: rho over 20,000 of 100,000 images is within about 0.01
            of the full figure); None: every input.

    Returns:
        Columns ``point``, ``option``, ``statistic``, ``rho``, ``inputs``; sorted by
        ``|rho|``, largest first.
    """
    names = (
        [c.removeprefix(STAT_PREFIX) for c in images.columns if c.startswith(STAT_PREFIX)]
        if statistics is None
        else list(statistics)
    )
    columns = ["point", "option", "statistic", "rho", "inputs"]
    if not names:
        return pd.DataFrame(columns=columns)
    point, option = _categorical(decisions["point"]), _categorical(decisions["option"])
    keep = np.ones(len(decisions), dtype=bool)
    if graph is not None:  # a skip/exit point's first option is one minus its second
        skip = {(p.name, p.option_names[0]) for p in graph if p.kind in _TWO_OPTION_KINDS}
        for p_name, o_name in skip:
            p_code = _code(point, p_name)
            o_code = _code(option, o_name)
            if p_code is not None and o_code is not None:
                keep &= ~((point.codes == p_code) & (option.codes == o_code))
    dense = _dense(decisions, keep=keep, max_inputs=max_inputs)
    values, ids, pairs, width = dense.values, dense.ids, dense.pairs, dense.width
    stats = (
        images.set_index(images["image_id"].astype(str))[[STAT_PREFIX + n for n in names]]
        .reindex(ids.astype(str))
        .to_numpy(np.float64)
    )  # (images, statistics)
    rho, inputs = _spearman(values, stats, min_inputs)
    out = pd.DataFrame(
        {
            "point": np.repeat(point.categories[pairs // width].astype(str), len(names)),
            "option": np.repeat(option.categories[pairs % width].astype(str), len(names)),
            "statistic": np.tile(np.asarray(names, dtype=object), len(pairs)),
            "rho": rho.reshape(-1),
            "inputs": inputs.reshape(-1),
        },
        columns=columns,
    )
    return out.sort_values("rho", key=lambda s: -s.abs(), na_position="last").reset_index(drop=True)


_TWO_OPTION_KINDS = (PointKind.SKIP, PointKind.EXIT)


def _categorical(column: pd.Series) -> pd.Categorical:
    if isinstance(column.dtype, pd.CategoricalDtype):
        return pd.Categorical(column)
    return pd.Categorical(column.astype(str))


def _code(values: pd.Categorical, name: str) -> int | None:
    names = [str(c) for c in values.categories]
    return names.index(name) if name in names else None


def _ranks(matrix: np.ndarray) -> np.ndarray:
    """Average ranks of each column, NaN kept (as ``DataFrame.rank``)."""
    return pd.DataFrame(matrix).rank().to_numpy(np.float64, copy=True)


def _spearman(
    values: np.ndarray, stats: np.ndarray, min_inputs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Spearman's rho of every column of ``values`` with every column of ``stats`` over the
    rows where both are known, and that row count: ``(pairs, statistics)`` each. Complete
    columns are done at once (Pearson on ranks); a column with gaps is ranked again over the
    rows it shares with each statistic."""
    known_v, known_s = ~np.isnan(values), ~np.isnan(stats)
    inputs = known_v.T.astype(np.int64) @ known_s.astype(np.int64)
    rho = np.full(inputs.shape, np.nan)
    full_v, full_s = known_v.all(0), known_s.all(0)
    if full_v.any() and full_s.any():
        rv, rs = _ranks(values[:, full_v]), _ranks(stats[:, full_s])
        rv -= rv.mean(0)
        rs -= rs.mean(0)
        norm = np.outer(np.sqrt((rv**2).sum(0)), np.sqrt((rs**2).sum(0)))
        with np.errstate(invalid="ignore", divide="ignore"):
            block = np.where(norm > 0, (rv.T @ rs) / np.where(norm > 0, norm, 1.0), np.nan)
        rho[np.ix_(full_v, full_s)] = block
    for i, j in zip(*np.nonzero(~np.outer(full_v, full_s)), strict=True):
        both = known_v[:, i] & known_s[:, j]
        a, b = values[both, i], stats[both, j]
        if both.sum() >= 2 and np.ptp(a) > 0 and np.ptp(b) > 0:
            ranked = _ranks(np.stack([a, b], 1))
            rho[i, j] = float(np.corrcoef(ranked[:, 0], ranked[:, 1])[0, 1])
    rho[inputs < min_inputs] = np.nan
    return rho, inputs
