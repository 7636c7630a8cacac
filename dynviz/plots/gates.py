"""Matplotlib figures of any gate graph's records, in seaborn's style:
``f(data, *, ax=None, ...) -> Axes``.

The inputs are the frames of :mod:`dynviz.analysis.gates`:

- :func:`plot_value_distribution`: the Fig. 5-style distribution of the per-input value of
  every option, one row per gate point (``value_distribution``: point, option, bin, low,
  high, share);
- :func:`plot_option_usage`: the share of inputs that ran each option, one bar per option,
  grouped by point (``option_usage``: point, option, usage);
- :func:`distribution_height` and :func:`usage_height`: a figure height that fits the rows.

Each draws into ``ax`` (default: a new :class:`matplotlib.figure.Figure`, no pyplot) and
returns it; none saves a file. An option keeps its colour across points and figures
(:func:`option_colors`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.patches import Patch

from dynviz.plots.mpl import new_axes
from dynviz.plots.style import PALETTE

__all__ = [
    "distribution_height",
    "option_colors",
    "plot_option_usage",
    "plot_value_distribution",
    "usage_height",
]

logger = logging.getLogger(__name__)

_ROW = 0.42  # inches per gate point in the distribution figure
_BAR = 0.22  # inches per option in the usage chart
MAX_ROWS = 60
"""Rows (points, or options in the usage chart) drawn at most; the rest are named in a log line."""


def _ordered(values: pd.Series) -> list[str]:
    """Distinct values in their categorical order (or order of appearance)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        present = set(values.astype(str))
        return [str(c) for c in values.cat.categories if str(c) in present]
    return list(dict.fromkeys(values.astype(str)))


def option_colors(options: Iterable[str]) -> dict[str, str]:
    """One palette colour per option name, in order (cycling past ten)."""
    names = list(dict.fromkeys(str(o) for o in options))
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def distribution_height(data: pd.DataFrame) -> float:
    """A figure height (inches) that fits :func:`plot_value_distribution`'s rows."""
    return 1.2 + _ROW * min(data["point"].nunique(), MAX_ROWS)


def usage_height(data: pd.DataFrame) -> float:
    """A figure height (inches) that fits :func:`plot_option_usage`'s bars."""
    return 1.2 + _BAR * min(len(data), MAX_ROWS)


def _limit(points: list[str], what: str) -> list[str]:
    if len(points) > MAX_ROWS:
        logger.info("%s: drawing the first %d of %d rows", what, MAX_ROWS, len(points))
        return points[:MAX_ROWS]
    return points


def plot_value_distribution(
    data: pd.DataFrame,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    xlabel: str = "value per input (probability or weight)",
) -> Axes:
    """Each option's per-input value distribution, one row per gate point (the paper's Fig. 5
    for any gate graph).

    A row is a small histogram over [0, 1]: each bin holds one bar per option of the point,
    side by side; a bar's height is the share of the inputs that reached the point whose value
    falls in the bin (a full row is 100%). A two-option point (run/skip) shows both options:
    the mirror images tell a confident gate (both at the ends) from an undecided one.

    Args:
        data: ``value_distribution`` rows (point, option, low, high, share).
        ax: where to draw (default: a new figure sized by :func:`distribution_height`).
        title: axes title.
        xlabel: x-axis label.

    Returns:
        The Axes.
    """
    points = _limit(_ordered(data["point"]), "value distribution")
    ax = ax if ax is not None else new_axes((7.0, distribution_height(data)))
    colors = option_colors(_ordered(data["option"]))
    for row, point in enumerate(points):
        base = len(points) - 1 - row  # the first point on top
        part = data[data["point"].astype(str) == point]
        options = _ordered(part["option"])
        for index, option in enumerate(options):
            rows = part[part["option"].astype(str) == option].sort_values("low")
            low = rows["low"].to_numpy(np.float64)
            width = rows["high"].to_numpy(np.float64) - low
            share = rows["share"].to_numpy(np.float64)
            step = width / max(len(options), 1)
            ax.bar(
                low + index * step,
                0.85 * share,
                width=step,
                bottom=base,
                align="edge",
                color=colors[option],
                edgecolor="white",
                linewidth=0.3,
            )
        ax.axhline(base, color="0.75", linewidth=0.6, zorder=0)
    ax.set_yticks([v + 0.42 for v in range(len(points))], list(reversed(points)))
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(-0.05, max(len(points), 1))
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("gate point (bar: share of its inputs)")
    handles = [Patch(color=c, label=name) for name, c in colors.items()]
    if handles:
        ax.legend(
            handles=handles,
            title="option",
            frameon=False,
            fontsize="small",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
        )
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        ax.set_title(title)
    return ax


def plot_option_usage(
    data: pd.DataFrame,
    *,
    x: str = "usage",
    ax: Axes | None = None,
    threshold: float | None = None,
    title: str | None = None,
) -> Axes:
    """The share of inputs that ran each option: one horizontal bar per (point, option),
    grouped by point, the first point on top.

    Args:
        data: ``option_usage`` rows (point, option and ``x``).
        x: the share column, in [0, 1].
        ax: where to draw (default: a new figure sized by :func:`usage_height`).
        threshold: draw the common-plan threshold as a dashed line (None: no line).
        title: axes title.

    Returns:
        The Axes.
    """
    ax = ax if ax is not None else new_axes((7.0, usage_height(data)))
    frame = data.assign(point=data["point"].astype(str), option=data["option"].astype(str))
    if len(frame) > MAX_ROWS:
        logger.info("option usage: drawing the first %d of %d options", MAX_ROWS, len(frame))
        frame = frame.iloc[:MAX_ROWS]
    colors = option_colors(_ordered(data["option"]))
    labels, y, position, previous = [], [], 0.0, None
    for row in frame.itertuples(index=False):
        if previous is not None and row.point != previous:
            position += 0.6  # a gap between points
        labels.append(f"{row.point} / {row.option}")
        y.append(position)
        position += 1.0
        previous = row.point
    top = position
    y_drawn = [top - 1.0 - v for v in y]
    shares = frame[x].to_numpy(np.float64)
    ax.barh(y_drawn, shares, height=0.8, color=[colors[o] for o in frame["option"]])
    for value, share in zip(y_drawn, shares, strict=True):
        if np.isfinite(share):
            ax.text(min(share, 1.0) + 0.01, value, f"{100 * share:.0f}%", va="center", fontsize=7)
    if threshold is not None:
        ax.axvline(
            threshold,
            color="0.3",
            linestyle="--",
            linewidth=1,
            label=f"common-plan threshold ({100 * threshold:g}%)",
        )
        ax.legend(frameon=False, fontsize="small", loc="lower right")
    ax.set_yticks(y_drawn, labels)
    ax.set_xlim(0, 1.1)
    ax.set_xticks(np.linspace(0, 1, 6), [f"{int(v)}%" for v in np.linspace(0, 100, 6)])
    ax.set_xlabel("inputs that ran the option")
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        ax.set_title(title)
    return ax
