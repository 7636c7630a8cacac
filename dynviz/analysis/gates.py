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

Each of them also takes a :class:`DecisionMatrix` (:func:`decision_matrix`): the decisions as a
dense inputs x (point, option) matrix, which every analysis computes on. Made once and passed to
each, it spares them reading the decisions again (15 M rows at 100,000 images of a routing
space: the explorer keeps one per records folder and its gate pages share it).
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
    "DecisionMatrix",
    "common_plan",
    "decision_matrix",
    "decisions_vs_statistics",
    "input_cost",
    "option_usage",
    "value_distribution",
]


def option_usage(decisions: pd.DataFrame | DecisionMatrix) -> pd.DataFrame:
    """Per (point, option), in the graph's order: ``inputs`` (that reached the point),
    ``usage`` (share of all inputs that ran the option), ``value_mean``, ``value_q25``,
    ``value_median``, ``value_q75`` (over the inputs that reached the point).

    Computed on the dense inputs x options matrix (:func:`decision_matrix`): a routing-space
    recording of 100,000 images has 15 M decision rows, and grouped quantiles over them took
    2 s."""
    matrix = decision_matrix(decisions)
    values = matrix.values
    reached = ~np.isnan(values)
    counts = reached.sum(0)
    full = counts == values.shape[0]
    quartiles = np.full((3, values.shape[1]), np.nan)
    if values.size and full.all():  # no column copied to pick the complete ones
        quartiles = np.quantile(values, _QUARTILES, axis=0)
        means = values.mean(0)
    else:
        if full.any():
            quartiles[:, full] = np.quantile(
                values[:, full], _QUARTILES, axis=0, overwrite_input=True
            )
        gaps = ~full & reached.any(0)
        if gaps.any():
            quartiles[:, gaps] = np.nanquantile(
                values[:, gaps], _QUARTILES, axis=0, overwrite_input=True
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(counts > 0, np.nansum(values, 0) / np.maximum(counts, 1), np.nan)
    return pd.DataFrame(
        {
            "point": matrix.point_column(),
            "option": matrix.option_column(),
            "inputs": counts,
            "usage": matrix.usage(),
            "value_mean": means,
            "value_q25": quartiles[0],
            "value_median": quartiles[1],
            "value_q75": quartiles[2],
        }
    )


_QUARTILES = [0.25, 0.5, 0.75]


@dataclass(frozen=True, eq=False)
class DecisionMatrix:
    """Decisions as an inputs x (point, option) matrix (:func:`decision_matrix`). Read-only:
    the explorer shares one between its sessions.

    Attributes:
        values: ``(inputs, pairs)`` float64, NaN where the input did not reach the point.
        ran: ``(inputs, pairs)`` bool.
        ids: the inputs, in order of first appearance in the decisions.
        pairs: ``(pairs,)`` the (point, option) pairs the decisions hold, as point code *
            :attr:`width` + option code, ascending (the graph's order for categorical points
            and options in it).
        point: the categories of the points.
        option: the categories of the options.
        seen: ``(inputs, pairs)`` bool, where the decisions hold a row; None where they hold
            one for every input and pair.
    """

    values: np.ndarray
    ran: np.ndarray
    ids: pd.Index
    pairs: np.ndarray
    point: pd.CategoricalDtype
    option: pd.CategoricalDtype
    seen: np.ndarray | None = None

    @property
    def width(self) -> int:
        return len(self.option.categories)

    def point_column(self) -> pd.Categorical:
        """Each pair's point."""
        return pd.Categorical.from_codes(self.pairs // self.width, dtype=self.point)

    def option_column(self) -> pd.Categorical:
        """Each pair's option."""
        return pd.Categorical.from_codes(self.pairs % self.width, dtype=self.option)

    def usage(self) -> np.ndarray:
        """Each pair's share of all inputs that ran it."""
        return self.ran.sum(0) / max(len(self.ids), 1)

    def pair_code(self, point: str, option: str) -> int | None:
        """The code of ``(point, option)`` (None when either is not a category)."""
        p, o = _code(self.point, point), _code(self.option, option)
        return None if p is None or o is None else p * self.width + o

    def option_values(self, point: str, option: str) -> pd.DataFrame:
        """``image_id``, ``value`` and ``ran`` of one (point, option) for each input that has a
        decision row for it (none when the decisions hold no row of it)."""
        code = self.pair_code(point, option)
        j = -1 if code is None else int(np.searchsorted(self.pairs, code))
        if j < 0 or j >= len(self.pairs) or self.pairs[j] != code:
            return pd.DataFrame(
                {
                    "image_id": pd.Series([], dtype=self.ids.dtype),
                    "value": np.zeros(0),
                    "ran": np.zeros(0, dtype=bool),
                }
            )
        rows = slice(None) if self.seen is None else self.seen[:, j]
        return pd.DataFrame(
            {
                "image_id": self.ids[rows],
                "value": self.values[rows, j],
                "ran": self.ran[rows, j],
            }
        )

    def select(self, *, drop: Sequence[int] = (), max_inputs: int | None = None) -> DecisionMatrix:
        """Without the pairs coded ``drop`` and, with ``max_inputs``, over that many inputs
        drawn at random (seed 0; their order kept) when there are more: the pairs are then
        those the drawn inputs have a row of, as if the decisions held only their rows."""
        rows = None
        if max_inputs is not None and len(self.ids) > max_inputs:
            rng = np.random.default_rng(0)
            rows = np.sort(rng.choice(len(self.ids), max_inputs, replace=False))
        columns = ~np.isin(self.pairs, np.asarray(drop, dtype=np.int64))
        if rows is not None:  # the pairs the drawn inputs have a row of
            columns &= self.seen[rows].any(0) if self.seen is not None else len(rows) > 0
        if rows is None and columns.all():
            return self
        cols = np.flatnonzero(columns)
        rows = slice(None) if rows is None else rows
        pick = np.ix_(np.arange(len(self.ids))[rows], cols)
        return DecisionMatrix(
            self.values[pick],
            self.ran[pick],
            self.ids[rows],
            self.pairs[cols],
            self.point,
            self.option,
            None if self.seen is None else self.seen[pick],
        )


def decision_matrix(decisions: pd.DataFrame | DecisionMatrix) -> DecisionMatrix:
    """The decisions as a dense inputs x (point, option) :class:`DecisionMatrix` (returned as
    it is when it is one already).

    Decisions made of one block of rows per input, every block holding the same pairs in the
    same order (a routing-space recording read by :func:`dynviz.gates.routing_decisions`), are
    reshaped; any others are scattered into the matrix. O(rows) either way, no sort: 15 M rows
    in about 0.5 s."""
    if isinstance(decisions, DecisionMatrix):
        return decisions
    point, option = _categorical(decisions["point"]), _categorical(decisions["option"])
    width = len(option.categories)
    size = max(len(point.categories) * width, 1)
    kind = np.int16 if size <= np.iinfo(np.int16).max else np.int64
    pair = point.codes.astype(kind)  # point code * width + option code, in place
    pair *= width
    pair += option.codes
    image, ids = pd.factorize(decisions["image_id"], sort=False)
    present = np.zeros(size, dtype=bool)
    present[pair] = True
    pairs = np.flatnonzero(present)
    n, k = len(ids), len(pairs)
    value, ran = decisions["value"], decisions["ran"]
    if k and len(decisions) == n * k and _blocks(image, pair, n, k):
        order = np.argsort(pair[:k])  # the pairs are distinct: the columns in code order
        in_order = bool((order == np.arange(k)).all())
        values = value.to_numpy(np.float64).reshape(n, k)  # float32 values: a copy
        ran_matrix = ran.to_numpy(bool).reshape(n, k)
        if in_order:
            ran_matrix = ran_matrix.copy()  # not a view of the decisions' column
        else:
            values, ran_matrix = values[:, order], ran_matrix[:, order]
        return DecisionMatrix(values, ran_matrix, pd.Index(ids), pairs, point.dtype, option.dtype)
    lookup = np.zeros(size, dtype=np.int64)
    lookup[pairs] = np.arange(k)
    column = lookup[pair]
    values = np.full((n, k), np.nan)
    values[image, column] = value.to_numpy(np.float64)
    ran_matrix = np.zeros((n, k), dtype=bool)
    ran_matrix[image, column] = ran.to_numpy(bool)
    seen = np.zeros((n, k), dtype=bool)
    seen[image, column] = True
    return DecisionMatrix(
        values,
        ran_matrix,
        pd.Index(ids),
        pairs,
        point.dtype,
        option.dtype,
        None if seen.all() else seen,
    )


def _blocks(image: np.ndarray, pair: np.ndarray, n: int, k: int) -> bool:
    """Whether the rows are ``n`` blocks of ``k``, one per input in order, each holding the
    pairs of the first block in its order."""
    return bool(
        (image.reshape(n, k) == np.arange(n)[:, None]).all()
        and (pair.reshape(n, k) == pair[:k]).all()
    )


def value_distribution(decisions: pd.DataFrame | DecisionMatrix, *, bins: int = 10) -> pd.DataFrame:
    """Per (point, option), the share of inputs whose value falls in each of ``bins`` equal
    bins of ``[0, 1]`` (values outside are clipped into the end bins; NaN, an input that did
    not reach the point, is left out). Columns: ``point``, ``option``, ``bin`` (0..bins-1),
    ``low``, ``high``, ``share``; the pairs no input reached are left out."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, not {bins}")
    matrix = decision_matrix(decisions)
    counts = np.zeros((len(matrix.pairs), bins), dtype=np.int64)
    for j in range(len(matrix.pairs)):  # a column at a time: no copy of the matrix
        column = matrix.values[:, j]
        column = column[~np.isnan(column)]
        index = np.clip(column * bins, 0, bins - 1).astype(np.int64)
        counts[j] = np.bincount(index, minlength=bins)
    totals = counts.sum(1)
    reached = totals > 0
    counts, totals = counts[reached], totals[reached]
    pairs = np.repeat(matrix.pairs[reached], bins)
    width = matrix.width
    low = np.tile(np.arange(bins), len(totals))
    return pd.DataFrame(
        {
            "point": pd.Categorical.from_codes(pairs // width, dtype=matrix.point),
            "option": pd.Categorical.from_codes(pairs % width, dtype=matrix.option),
            "bin": low,
            "low": low / bins,
            "high": (low + 1) / bins,
            "share": (counts / totals[:, None]).reshape(-1),
        }
    )


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
    decisions: pd.DataFrame | DecisionMatrix,
    graph: GateGraph,
    *,
    threshold: float = COMMON_THRESHOLD,
) -> CommonPlan:
    """Sort every option of ``graph`` into always (used by more than ``threshold`` of the
    inputs), sometimes and never (used by none of them).

    Raises:
        ValueError: ``threshold`` outside [0, 1).
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), not {threshold}")
    matrix = decision_matrix(decisions)
    points = matrix.point_column().astype(str)
    options = matrix.option_column().astype(str)
    usage = {  # the shares only, no quartiles (option_usage)
        (p, o): u for p, o, u in zip(points, options, matrix.usage().tolist(), strict=True)
    }
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
    decisions: pd.DataFrame | DecisionMatrix,
    images: pd.DataFrame,
    *,
    statistics: Sequence[str] | None = None,
    min_inputs: int = 5,
    graph: GateGraph | None = None,
    max_inputs: int | None = None,
) -> pd.DataFrame:
    """Spearman's rho between each (point, option)'s per-input value and each input statistic.

    Args:
        decisions: the decisions table, or its :class:`DecisionMatrix`.
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
    matrix = decision_matrix(decisions)
    drop = []
    if graph is not None:  # a skip/exit point's first option is one minus its second
        for p in graph:
            if p.kind in _TWO_OPTION_KINDS:
                code = matrix.pair_code(p.name, p.option_names[0])
                if code is not None:
                    drop.append(code)
    matrix = matrix.select(drop=drop, max_inputs=max_inputs)
    values, ids, pairs, width = matrix.values, matrix.ids, matrix.pairs, matrix.width
    stats = (
        images.set_index(images["image_id"].astype(str))[[STAT_PREFIX + n for n in names]]
        .reindex(ids.astype(str))
        .to_numpy(np.float64)
    )  # (images, statistics)
    rho, inputs = _spearman(values, stats, min_inputs)
    out = pd.DataFrame(
        {
            "point": np.repeat(matrix.point.categories[pairs // width].astype(str), len(names)),
            "option": np.repeat(matrix.option.categories[pairs % width].astype(str), len(names)),
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


def _code(values: pd.CategoricalDtype, name: str) -> int | None:
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
