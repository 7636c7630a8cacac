"""Route adaptivity figures on hand-made records, checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dynviz.analysis.adaptivity import (
    nearest_centroid_accuracy,
    paper_cost_range,
    route_adaptivity,
    route_matrix,
)

PATHS = [(0, 4, "keep"), (0, 4, "down"), (1, 8, "keep"), (1, 8, "up")]


def _records(routes: list[tuple[int, ...]], costs: list[float], regimes: list[int | None]):
    gates = pd.DataFrame(
        [
            (f"img{i}", layer, scale, direction, float(on), bool(on))
            for i, route in enumerate(routes)
            for (layer, scale, direction), on in zip(PATHS, route, strict=True)
        ],
        columns=["image_id", "layer", "scale", "direction", "alpha", "active"],
    )
    images = pd.DataFrame(
        {"image_id": [f"img{i}" for i in range(len(routes))], "real_gmacs": costs}
    )
    if any(r is not None for r in regimes):
        images["stat_regime_code"] = [np.nan if r is None else float(r) for r in regimes]
    return gates, images


def test_route_matrix_orders_images_by_appearance_and_paths_by_key():
    gates, _ = _records([(1, 0, 0, 1), (0, 1, 1, 0)], [1.0, 2.0], [None, None])
    ids, on = route_matrix(gates.iloc[::-1].reset_index(drop=True))
    assert list(ids) == ["img1", "img0"]
    # paths sorted by (layer, scale, direction): (0,4,down) (0,4,keep) (1,8,keep) (1,8,up)
    np.testing.assert_array_equal(on, [[1, 0, 1, 0], [0, 1, 0, 1]])


def test_cost_spread_is_dearest_over_cheapest_tenth():
    costs = [float(c) for c in range(1, 21)]  # 20 images: tenths are 2 images
    gates, images = _records([(1, 1, 1, 1)] * 20, costs, [None] * 20)
    result = route_adaptivity(gates, images)
    assert result.cheapest_tenth_gmacs == pytest.approx(1.5)
    assert result.dearest_tenth_gmacs == pytest.approx(19.5)
    assert result.cost_spread == pytest.approx(13.0)
    assert result.cost_range == pytest.approx(20.0)  # the extremes: 20 GMACs over 1
    assert "the dearest image costs 20.00x the cheapest" in result.sentences()[0]
    assert result.distinct_routes == 1
    assert math.isnan(result.regime_difference) and result.regime_gmacs == {}


def test_regimes_told_apart_by_route():
    # tiny images keep the 1/4 paths, huge ones go to 1/8: the route gives the regime away
    tiny, huge = (1, 1, 0, 0), (0, 1, 1, 1)
    routes = [tiny] * 6 + [huge] * 4
    costs = [3.0] * 6 + [2.0] * 4
    gates, images = _records(routes, costs, [0] * 6 + [1] * 4)
    result = route_adaptivity(gates, images, folds=2)
    assert result.regime_gmacs == {"huge": 2.0, "tiny": 3.0}
    assert result.regime_difference == pytest.approx(0.5)
    assert result.classifier_accuracy == 1.0
    assert result.chance == pytest.approx(0.6)
    assert result.distinct_routes == 2
    assert any("60%" in line for line in result.sentences())
    # every image right in every draw: a zero-width interval, said beside the accuracy
    assert result.classifier_interval == (1.0, 1.0)
    assert any("95% interval 100-100%" in line for line in result.sentences())


def test_identical_routes_give_chance_or_less():
    gates, images = _records([(1, 1, 1, 1)] * 8, [1.0] * 8, [0, 1] * 4)
    result = route_adaptivity(gates, images, folds=4)
    assert result.classifier_accuracy <= result.chance == 0.5
    assert result.regime_difference == 0.0 and result.cost_spread == result.cost_range == 1.0


def test_nearest_centroid_by_hand():
    x = np.array([[0.0], [0.2], [1.0], [1.2], [0.1], [1.1]])
    y = np.array(["a", "a", "b", "b", "a", "b"])
    assert nearest_centroid_accuracy(x, y, folds=3) == 1.0
    assert nearest_centroid_accuracy(x, y[::-1].copy(), folds=3) < 0.5  # labels scrambled


def test_two_images_in_one_fold_give_nan_not_a_crash():
    # two images of two regimes: the stratified deal puts both in one fold for some shuffles,
    # which leaves the other fold nothing to learn from (np.stack of no centroid used to fail)
    x, y = np.array([[0.0], [1.0]]), np.array(["tiny", "huge"])
    results = [nearest_centroid_accuracy(x, y, folds=2, seed=seed) for seed in range(16)]
    assert any(np.isnan(r) for r in results)
    assert {r for r in results if not np.isnan(r)} <= {0.0}  # one image never predicts the other
    gates, images = _records([(1, 0, 1, 0), (1, 1, 1, 1)], [1.0, 2.0], [0, 1])
    for seed in range(4):
        result = route_adaptivity(gates, images, folds=5, seed=seed)
        assert result.regime_difference == 1.0 and result.folds == 2


def test_several_models_are_refused():
    gates, images = _records([(1, 1, 1, 1)] * 2, [1.0, 1.0], [None, None])
    images["model"] = ["A", "B"]
    with pytest.raises(ValueError, match="one model"):
        route_adaptivity(gates, images)


def test_spearman_by_hand():
    from dynviz.analysis.adaptivity import spearman

    x = pd.Series([1.0, 2.0, 3.0, 4.0])
    # ranks of y: 1, 3, 2, 4 -> d = 0, -1, 1, 0 -> rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman(x, pd.Series([10.0, 30.0, 20.0, 40.0])) == pytest.approx(0.8)
    assert spearman(x, pd.Series([4.0, 3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    # ties take the average rank: x ranks 1.5, 1.5, 3, 4 against 1, 2, 3, 4
    assert spearman(pd.Series([1.0, 1.0, 2.0, 3.0]), x) == pytest.approx(
        np.corrcoef([1.5, 1.5, 3, 4], [1, 2, 3, 4])[0, 1]
    )
    assert math.isnan(spearman(None, x))
    assert math.isnan(spearman(pd.Series([1.0, 1.0, 1.0, 1.0]), x))  # constant
    assert math.isnan(spearman(pd.Series([1.0, np.nan, np.nan, 2.0]), x))  # two pairs left


def test_cost_rising_with_the_largest_object_is_reported():
    gates, images = _records([(1, 1, 1, 1)] * 5, [1.0, 2.0, 3.0, 5.0, 4.0], [None] * 5)
    images["stat_max_object_area"] = [0.01, 0.02, 0.3, 0.4, 0.5]
    result = route_adaptivity(gates, images)
    assert result.scale_correlation == pytest.approx(0.9)  # d = 0,0,0,-1,1: 1 - 12/120
    assert any("Spearman rho +0.90" in line for line in result.sentences())
    low, high = result.scale_correlation_interval
    assert low <= 0.9 <= high  # five images: a wide interval, stated beside rho
    assert any(f"95% interval {low:+.2f} to {high:+.2f}" in line for line in result.sentences())
    assert math.isnan(
        route_adaptivity(*_records([(1, 1, 1, 1)] * 3, [1.0] * 3, [None] * 3)).scale_correlation
    )


def test_paper_cost_range_is_table_1s_largest_over_smallest():
    # Dynamic-A 48.2 / 43.5 = 1.108, B 63.5 / 56.8 = 1.118, C 71.6 / 64.3 = 1.114 GFLOPs
    assert paper_cost_range() == pytest.approx((1.108, 1.118), abs=1e-3)
