"""Do routes adapt to images? Three figures from the records of one dynamic model.

* **cost spread**: the mean real GMACs of the dearest tenth of the images over that of the
  cheapest tenth (1.0 when every image costs the same);
* **regime difference**: how much the scale regimes' mean real costs differ, the dearest regime's
  mean over the cheapest's, minus 1 (0.2 = 20% dearer);
* **regime from route**: the accuracy of a nearest-centroid classifier that predicts an image's
  regime from its route alone (the 0/1 vector of its active paths), k-fold cross-validated,
  beside chance (always guessing the most frequent regime);
* **cost and object scale**: the Spearman rank correlation of the per-image real GMACs with the
  area of the image's largest object (``stat_max_object_area``), a regime-free view of the same
  question.

The classifier accuracy and rho come with 95% bootstrap intervals over the images
(:mod:`dynviz.analysis.intervals`): on 96 images the classifier figure alone moves by about five
points.

Inputs are the records' frames (:mod:`dynviz.record`): ``gates`` (one row per image and path) and
``images`` (one row per image, with ``real_gmacs`` and, for synthetic scenes,
``stat_regime_code``). Pure numpy and pandas.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dynviz.analysis.intervals import accuracy_interval, rank_correlation, spearman_interval
from dynviz.analysis.routes import _groups, _keys, regime_labels
from dynviz.units import format_macs, mac_unit

if TYPE_CHECKING:
    from dynviz.record import Records

__all__ = [
    "PAPER_COST_EXTREMES",
    "SCALE_STAT",
    "RouteAdaptivity",
    "nearest_centroid_accuracy",
    "nearest_centroid_correct",
    "paper_cost_range",
    "records_adaptivity",
    "route_adaptivity",
    "route_matrix",
    "spearman",
]

SCALE_STAT = "stat_max_object_area"
"""The image statistic the cost is correlated with: the largest visible object's area."""

PAPER_COST_EXTREMES = {
    "Dynamic-A": (48.2, 43.5),
    "Dynamic-B": (63.5, 56.8),
    "Dynamic-C": (71.6, 64.3),
}
"""The paper's Table 1: each budgeted network's largest and smallest cost (GFLOPs) over the
Cityscapes validation images, what :attr:`RouteAdaptivity.cost_range` is set beside."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouteAdaptivity:
    """How much one model's routes depend on the image.

    Attributes:
        images: images measured.
        cheapest_tenth_gmacs: mean real GMACs of the cheapest tenth of the images.
        dearest_tenth_gmacs: mean real GMACs of the dearest tenth.
        cost_spread: ``dearest_tenth_gmacs / cheapest_tenth_gmacs``.
        cost_range: the dearest image's real GMACs over the cheapest's (the paper's Table 1
            gives each budgeted network's largest and smallest cost).
        regime_gmacs: mean real GMACs per regime (empty without regimes).
        regime_difference: dearest regime mean / cheapest regime mean - 1 (NaN without two
            regimes).
        classifier_accuracy: cross-validated accuracy of predicting the regime from the route
            (NaN without two regimes).
        chance: the share of the most frequent regime (what always guessing it scores).
        folds: cross-validation folds used.
        distinct_routes: how many different routes the images take.
        scale_correlation: Spearman rho of real GMACs against the largest object's area (NaN
            without that statistic or with a constant one).
        classifier_interval, scale_correlation_interval: their 95% bootstrap intervals over the
            images ``(low, high)`` (NaN when undefined).
    """

    images: int
    cheapest_tenth_gmacs: float
    dearest_tenth_gmacs: float
    cost_spread: float
    cost_range: float = math.nan
    regime_gmacs: dict[str, float] = field(default_factory=dict)
    regime_difference: float = math.nan
    classifier_accuracy: float = math.nan
    chance: float = math.nan
    folds: int = 0
    distinct_routes: int = 0
    scale_correlation: float = math.nan
    classifier_interval: tuple[float, float] = (math.nan, math.nan)
    scale_correlation_interval: tuple[float, float] = (math.nan, math.nan)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sentences(self) -> list[str]:
        """The figures in words (for reports and the explorer)."""
        unit = mac_unit([self.cheapest_tenth_gmacs, self.dearest_tenth_gmacs])
        lines = [
            f"Per-image real cost varies {self.cost_spread:.2f}x between the cheapest tenth of "
            f"the {self.images} images ({format_macs(self.cheapest_tenth_gmacs, unit)} on "
            f"average) and the dearest tenth ({format_macs(self.dearest_tenth_gmacs, unit)}); "
            + (
                f"the dearest image costs {self.cost_range:.2f}x the cheapest; "
                if not math.isnan(self.cost_range)
                else ""
            )
            + f"{self.distinct_routes} distinct routes."
        ]
        if self.regime_gmacs:
            means = ", ".join(f"{k} {format_macs(v, unit)}" for k, v in self.regime_gmacs.items())
            if not math.isnan(self.regime_difference):
                lines.append(
                    f"Mean real cost per scale regime: {means}; the dearest regime costs "
                    f"{100 * self.regime_difference:.0f}% more than the cheapest."
                )
            if not math.isnan(self.classifier_accuracy):
                low, high = self.classifier_interval
                lines.append(
                    f"A nearest-centroid classifier predicts an image's regime from its route "
                    f"(its active paths) with {100 * self.classifier_accuracy:.0f}% accuracy "
                    f"(95% interval {100 * low:.0f}-{100 * high:.0f}%; {self.folds}-fold "
                    f"cross-validated; chance, always guessing the most frequent regime: "
                    f"{100 * self.chance:.0f}%)."
                )
        if not math.isnan(self.scale_correlation):
            low, high = self.scale_correlation_interval
            lines.append(
                f"Across the images, real cost against the area of the largest object: "
                f"Spearman rho {self.scale_correlation:+.2f} (95% interval {low:+.2f} to "
                f"{high:+.2f})."
            )
        return lines


def paper_cost_range() -> tuple[float, float]:
    """The smallest and largest dearest-over-cheapest ratio of the paper's budgeted networks."""
    ratios = [high / low for high, low in PAPER_COST_EXTREMES.values()]
    return min(ratios), max(ratios)


def spearman(x: pd.Series | None, y: pd.Series) -> float:
    """Spearman's rank correlation (average ranks for ties) of two aligned columns; NaN when
    ``x`` is missing, fewer than three pairs are complete, or either column is constant."""
    if x is None:
        return math.nan
    return rank_correlation(x.to_numpy(dtype=np.float64), y.to_numpy(dtype=np.float64))


def route_matrix(gates: pd.DataFrame) -> tuple[pd.Series, np.ndarray]:
    """The routes as a matrix: ``(image_id, (images, paths) float 0/1 array of active paths)``,
    images in order of first appearance, paths in (layer, scale, direction) order."""
    image = _groups(gates, ["image_id"], sort=False)
    path = _groups(gates, ("layer", "scale", "direction"))
    active = gates["active"].to_numpy(dtype=bool) & (image.ids >= 0)
    flat = image.ids[active].astype(np.int64) * path.size + path.ids[active]
    on = np.bincount(flat, minlength=image.size * path.size).reshape(image.size, path.size)
    return image.keys["image_id"], (on > 0).astype(np.float64)


def nearest_centroid_accuracy(
    x: np.ndarray, y: np.ndarray, *, folds: int = 5, seed: int = 0
) -> float:
    """Stratified k-fold accuracy of a nearest-centroid (Euclidean) classifier: the mean of
    :func:`nearest_centroid_correct` over the images it classified (NaN for none)."""
    correct = nearest_centroid_correct(x, y, folds=folds, seed=seed)
    tested = correct[np.isfinite(correct)]
    return float(tested.mean()) if tested.size else math.nan


def nearest_centroid_correct(
    x: np.ndarray, y: np.ndarray, *, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Per image, whether a stratified k-fold nearest-centroid (Euclidean) classifier gets its
    label right: 1.0, 0.0, or NaN where the image was not classified.

    Each fold's images are classified by the centroids of the other folds' images; a class
    missing from the training folds is not predicted. Ties go to the first class. A fold that
    holds every image (possible with very few images) has nothing to learn from: its images are
    not classified, and with none classified the accuracy is NaN.

    Args:
        x: ``(n, d)`` features.
        y: ``(n,)`` labels (any hashable values).
        folds: number of folds (at most ``n``).
        seed: the shuffle within each class.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    n = len(y)
    correct = np.full(n, math.nan)
    if n < 2:
        return correct
    folds = max(2, min(folds, n))
    rng = np.random.default_rng(seed)
    fold = np.empty(n, dtype=np.int64)
    for label in np.unique(y):  # stratified: each class dealt round-robin over the folds
        members = np.flatnonzero(y == label)
        rng.shuffle(members)
        fold[members] = (np.arange(len(members)) + rng.integers(folds)) % folds
    for f in range(folds):
        test, train = fold == f, fold != f
        if not test.any() or not train.any():
            continue
        classes = np.unique(y[train])
        centroids = np.stack([x[train & (y == c)].mean(axis=0) for c in classes])
        distance = ((x[test][:, None, :] - centroids[None, :, :]) ** 2).sum(axis=-1)
        correct[test] = (classes[distance.argmin(axis=1)] == y[test]).astype(np.float64)
    return correct


def route_adaptivity(
    gates: pd.DataFrame, images: pd.DataFrame, *, folds: int = 5, seed: int = 0
) -> RouteAdaptivity:
    """The three figures of route adaptivity for the records of one model.

    Args:
        gates: gate rows of one model (a ``model`` column must hold a single model).
        images: image rows with ``real_gmacs`` (and ``stat_regime_code`` for regimes).
        folds: cross-validation folds of the regime classifier.
        seed: its shuffle.

    Raises:
        ValueError: the frames hold several models, or no image.
    """
    for frame in (gates, images):
        if "model" in frame.columns and frame["model"].nunique() > 1:
            raise ValueError("route_adaptivity takes the records of one model; filter by model")
    _keys(images, ("image_id", "real_gmacs"))
    if images.empty:
        raise ValueError("no image in the records")
    cost = images["real_gmacs"].to_numpy(dtype=np.float64)
    order = np.sort(cost)
    tenth = max(1, len(order) // 10)
    cheap, dear = float(order[:tenth].mean()), float(order[-tenth:].mean())
    ids, routes = route_matrix(gates)
    distinct = len({row.tobytes() for row in routes.astype(np.uint8)})
    result = dict(
        images=len(cost),
        cheapest_tenth_gmacs=cheap,
        dearest_tenth_gmacs=dear,
        cost_spread=dear / cheap if cheap > 0 else math.nan,
        cost_range=float(order[-1] / order[0]) if order[0] > 0 else math.nan,
        distinct_routes=distinct,
    )
    if SCALE_STAT in images.columns:  # rho and its interval, from one computation
        rho = spearman_interval(images[SCALE_STAT].to_numpy(np.float64), cost)
        result["scale_correlation"] = rho.value
        result["scale_correlation_interval"] = (rho.low, rho.high)
    regimes = regime_labels(images)
    known = regimes != "n/a"
    if known.sum() == 0:
        return RouteAdaptivity(**result)
    by_regime = (
        pd.DataFrame({"regime": regimes[known], "cost": cost[known.to_numpy()]})
        .groupby("regime", sort=True)["cost"]
        .mean()
    )
    means = {str(k): float(v) for k, v in by_regime.items()}
    result["regime_gmacs"] = means
    if len(means) < 2:
        return RouteAdaptivity(**result)
    result["regime_difference"] = max(means.values()) / min(means.values()) - 1.0
    label_of = dict(zip(images["image_id"].astype(str), regimes, strict=True))
    y = np.array([label_of.get(str(i), "n/a") for i in ids])
    keep = y != "n/a"
    counts = pd.Series(y[keep]).value_counts()
    result["chance"] = float(counts.iloc[0] / keep.sum())
    result["folds"] = max(2, min(folds, int(keep.sum())))
    correct = nearest_centroid_correct(routes[keep], y[keep], folds=folds, seed=seed)
    tested = correct[np.isfinite(correct)]
    if tested.size:
        accuracy = accuracy_interval(tested)
        result["classifier_accuracy"] = accuracy.value
        result["classifier_interval"] = (accuracy.low, accuracy.high)
    return RouteAdaptivity(**result)


def records_adaptivity(records: Records) -> RouteAdaptivity | None:
    """:func:`route_adaptivity` of a records folder, or None when its routes cannot adapt: the
    records of a static network or of a route forced onto a dynamic one (every image takes the
    same route)."""
    if not records.sidecar.dynamic or records.sidecar.forced_route_dict:
        return None
    return route_adaptivity(records.gates, records.images)
