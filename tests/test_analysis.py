"""Analyses on small hand-made frames, checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dynviz.analysis import (
    activation_probability,
    alpha_histogram,
    cell_probability,
    coarsen_histogram,
    cost_statistics,
    probability_distribution,
    probability_matrix,
    routing_vs_scale,
    scale_summary,
)
from dynviz.analysis.costs import dataset_miou
from dynviz.analysis.routes import REGIMES
from dynviz.data import REGIME_CODES


def _gates(rows: list[tuple[str, int, int, str, float]]) -> pd.DataFrame:
    """Rows of (image_id, layer, stride, direction, alpha); active = alpha > 0."""
    frame = pd.DataFrame(rows, columns=["image_id", "layer", "scale", "direction", "alpha"])
    frame["scale_index"] = np.log2(frame["scale"] // 4).astype("int8")
    frame["active"] = frame["alpha"] > 0
    frame["alpha"] = frame["alpha"].astype("float32")
    return frame


@pytest.fixture
def gates() -> pd.DataFrame:
    # two images, three paths: (0, 1/4, keep), (0, 1/4, down), (1, 1/8, keep)
    return _gates(
        [
            ("a", 0, 4, "keep", 0.5),
            ("a", 0, 4, "down", 0.0),
            ("a", 1, 8, "keep", 1.0),
            ("b", 0, 4, "keep", 0.25),
            ("b", 0, 4, "down", 0.75),
            ("b", 1, 8, "keep", 0.0),
        ]
    )


def test_activation_probability_per_path(gates):
    out = activation_probability(gates).set_index(["layer", "scale", "direction"])
    keep = out.loc[(0, 4, "keep")]
    assert keep["p"] == 1.0 and keep["mean_alpha"] == pytest.approx(0.375)
    assert keep["std_alpha"] == pytest.approx(0.125)  # population std of 0.5 and 0.25
    assert keep["count"] == 2 and keep["images"] == 2
    assert out.loc[(0, 4, "down"), "p"] == 0.5
    assert out.loc[(0, 4, "down"), "mean_alpha"] == pytest.approx(0.375)
    assert out.loc[(1, 8, "keep"), "p"] == 0.5
    assert len(out) == 3


def test_activation_probability_views(gates):
    layer = activation_probability(gates, by=("layer",)).set_index("layer")
    assert layer.loc[0, "p"] == pytest.approx(3 / 4) and layer.loc[0, "count"] == 4
    assert layer.loc[1, "p"] == pytest.approx(1 / 2)
    scale = activation_probability(gates, by=("scale",)).set_index("scale")
    assert scale.loc[8, "mean_alpha"] == pytest.approx(0.5)
    both = pd.concat([gates.assign(model="m1"), gates.assign(model="m2", active=False)])
    per_model = activation_probability(both, by=("layer",))
    assert list(per_model.columns[:2]) == ["model", "layer"]
    assert per_model.set_index(["model", "layer"]).loc[("m2", 0), "p"] == 0.0


def test_probability_distribution(gates):
    hist = probability_distribution(gates, bins=4)  # p = 1.0, 0.5, 0.5
    assert list(hist["count"]) == [0, 0, 2, 1]
    assert hist["fraction"].sum() == pytest.approx(1.0)
    assert list(hist["bin_left"]) == [0.0, 0.25, 0.5, 0.75]
    two = probability_distribution(
        pd.concat([gates.assign(model="x"), gates.assign(model="y")]), bins=2
    )
    assert list(two["model"]) == ["x", "x", "y", "y"]


def test_cell_probability_and_matrix(gates):
    cells = cell_probability(gates).set_index(["layer", "scale"])
    assert cells.loc[(0, 4), "p"] == 1.0  # keep ran in both images
    assert cells.loc[(0, 4), "mean_max_alpha"] == pytest.approx((0.5 + 0.75) / 2)
    assert cells.loc[(1, 8), "p"] == 0.5
    matrix = probability_matrix(gates)
    assert matrix.loc[0, 4] == 1.0 and math.isnan(matrix.loc[0, 8]) and matrix.loc[1, 8] == 0.5
    down = probability_matrix(gates, direction="down")
    assert down.loc[0, 4] == 0.5


def test_alpha_histogram(gates):
    hist = alpha_histogram(gates, bins=2)
    keep = hist[hist["direction"] == "keep"]
    assert list(keep["count"]) == [2, 2]  # 0.5, 0.25, 1.0, 0.0 -> [0, .5), [.5, 1]


def test_cost_statistics_by_hand():
    images = pd.DataFrame(
        {
            "image_id": ["a", "b", "c"],
            "real_gmacs": [1.0, 2.0, 6.0],
            "expected_gmacs": [1.5, 2.5, 5.0],
            "miou": [0.5, np.nan, 1.0],
            "pixel_accuracy": [0.5, np.nan, 1.0],
        }
    )
    row = cost_statistics(images).iloc[0]
    assert row["images"] == 3
    assert (row["real_gmacs_mean"], row["real_gmacs_max"], row["real_gmacs_min"]) == (3, 6, 1)
    assert (row["expected_gmacs_mean"], row["expected_gmacs_max"]) == (3.0, 5.0)
    assert row["miou"] == 0.75 == row["miou_image_mean"]  # NaN image skipped
    # with confusion matrices: data-set mIoU from summed counts, not a mean of images
    images["confusion"] = [np.array([3, 1, 0, 0]), np.array([0, 0, 0, 0]), np.array([0, 0, 1, 3])]
    row = cost_statistics(images).iloc[0]
    # summed [[3, 1], [1, 3]]: IoU = 3 / 5 per class
    assert row["miou"] == pytest.approx(0.6) and row["pixel_accuracy"] == pytest.approx(0.75)
    assert dataset_miou([])[0] != dataset_miou([])[0]  # NaN
    per_model = cost_statistics(images.assign(model=["m", "m", "n"]))
    assert list(per_model["model"]) == ["m", "n"] and list(per_model["images"]) == [2, 1]


def test_routing_vs_scale_by_hand(gates):
    images = pd.DataFrame(
        {
            "image_id": ["a", "b"],
            "real_gmacs": [1.0, 2.0],
            "stat_mean_object_area": [0.01, 0.3],
            "stat_regime_code": [0.0, 1.0],
        }
    )
    costs = pd.DataFrame(
        {
            "layer": [0, 0, 1],
            "scale": [4, 4, 8],
            "direction": ["keep", "down", "keep"],
            "path_macs": [10.0, 20.0, 30.0],
            "op_macs": [100.0, 100.0, 50.0],
        }
    )
    out = routing_vs_scale(gates, images, path_costs=costs).set_index("image_id")
    # image a: active (0, 4, keep), (1, 8, keep); image b: (0, 4, keep), (0, 4, down)
    assert out.loc["a", "n_active"] == 2 and out.loc["b", "n_active"] == 2
    assert out.loc["a", "share_s4"] == 0.5 and out.loc["a", "share_s8"] == 0.5
    assert out.loc["b", "fine_share"] == 1.0
    assert out.loc["a", "mean_scale_index"] == 0.5 and out.loc["a", "max_scale_index"] == 1
    assert out.loc["b", "mean_scale_index"] == 0.0
    # cost a: 1/4 = keep 10 + op 100, 1/8 = keep 30 + op 50 -> 110 / 190
    assert out.loc["a", "fine_cost_share"] == pytest.approx(110 / 190)
    assert out.loc["b", "fine_cost_share"] == 1.0  # op counted once for the cell
    assert list(out["regime"]) == ["tiny", "huge"]
    assert out.loc["b", "stat_mean_object_area"] == 0.3


def test_scale_summary():
    per_image = pd.DataFrame(
        {
            "image_id": list("abcdef"),
            "fine_share": [0.9, 0.8, 0.7, 0.4, 0.3, 0.1],
            "stat_mean_object_area": [0.01, 0.02, 0.03, 0.2, 0.3, 0.5],
            "regime": ["tiny"] * 3 + ["huge"] * 3,
            "real_gmacs": [1.0] * 6,
        }
    )
    summary = scale_summary(per_image)
    corr = summary.correlations.set_index(["metric", "stat"])
    assert corr.loc[("fine_share", "stat_mean_object_area"), "spearman"] == pytest.approx(-1.0)
    assert corr.loc[("fine_share", "stat_mean_object_area"), "pearson"] < -0.9
    assert math.isnan(corr.loc[("real_gmacs", "stat_mean_object_area"), "pearson"])  # constant
    regime = summary.by_regime.set_index("regime")
    assert regime.loc["tiny", "fine_share"] == pytest.approx(0.8)
    assert regime.loc["huge", "images"] == 3


def test_regime_names_match_the_data_layer():
    assert {v: k for k, v in REGIMES.items()} == REGIME_CODES


# ------------------------------------------- the fast (bincount) paths against plain pandas
def _random_gates(seed: int = 0) -> pd.DataFrame:
    """Two models of a few images each, rows shuffled, alphas on bin edges included."""
    rng = np.random.default_rng(seed)
    frames = []
    for model, images in (("raw", 7), ("budget", 5)):
        for image in range(images):
            for layer in range(3):
                for stride in (4, 8, 16):
                    for direction in ("keep", "up", "down"):
                        alpha = rng.choice([0.0, 0.05, 0.5, 1.0, rng.random()])
                        frames.append((model, f"{model}{image}", layer, stride, direction, alpha))
    frame = pd.DataFrame(
        frames, columns=["model", "image_id", "layer", "scale", "direction", "alpha"]
    ).sample(frac=1.0, random_state=seed)
    frame["model"] = frame["model"].astype(
        pd.CategoricalDtype(["raw", "budget", "unused"], ordered=True)
    )
    frame["direction"] = frame["direction"].astype(pd.CategoricalDtype(["keep", "up", "down"]))
    frame["scale_index"] = np.log2(frame["scale"] // 4).astype("int8")
    frame["active"] = frame["alpha"] > 0
    frame["alpha"] = frame["alpha"].astype("float32")
    return frame.reset_index(drop=True)


@pytest.mark.parametrize("by", [("layer", "scale", "direction"), ("layer",), ("direction",)])
def test_activation_probability_equals_pandas_groupby(by):
    gates = _random_gates()
    keys = ["model", *by]
    wide = gates.assign(alpha=gates["alpha"].astype("float64"))
    expected = (
        wide.groupby(keys, observed=True)
        .agg(
            p=("active", "mean"),
            mean_alpha=("alpha", "mean"),
            std_alpha=("alpha", lambda a: a.std(ddof=0)),
            count=("active", "size"),
            images=("image_id", "nunique"),
        )
        .reset_index()
    )
    out = activation_probability(gates, by=by)
    assert list(out.columns) == list(expected.columns)
    assert out["model"].dtype == gates["model"].dtype  # categories kept, unused ones dropped
    pd.testing.assert_frame_equal(out, expected, check_dtype=False, rtol=1e-9, atol=1e-12)


def test_a_missing_key_is_left_out_as_pandas_does():
    gates = _random_gates()
    gates.loc[gates.index[:10], "direction"] = None
    out = activation_probability(gates)
    assert out["count"].sum() == len(gates) - 10
    assert not out["direction"].isna().any()


def test_alpha_histogram_equals_numpy_and_coarsens_exactly():
    gates = _random_gates()
    fine = alpha_histogram(gates, bins=20, by=("layer", "scale", "direction"))
    for (model, layer), group in gates.groupby(["model", "layer"], observed=True):
        counts, _ = np.histogram(group["alpha"].to_numpy(np.float64), bins=20, range=(0, 1))
        got = fine[(fine["model"] == model) & (fine["layer"] == layer)]
        assert got.groupby("bin_left")["count"].sum().tolist() == counts.tolist()
    for by in [("direction",), ("scale",), ("layer",)]:
        pd.testing.assert_frame_equal(
            coarsen_histogram(fine, by=by).reset_index(drop=True),
            alpha_histogram(gates, bins=20, by=by).reset_index(drop=True),
            check_dtype=False,
        )


def test_routing_vs_scale_equals_pandas_groupby():
    gates = _random_gates()
    images = pd.DataFrame({"model": gates["model"], "image_id": gates["image_id"]}).drop_duplicates(
        ignore_index=True
    )
    images["real_gmacs"] = 1.0
    out = routing_vs_scale(gates, images).set_index(["model", "image_id"])
    active = gates[gates["active"]]
    counts = (
        active.groupby(["model", "image_id", "scale"], observed=True).size().unstack(fill_value=0)
    )
    shares = counts.div(counts.sum(axis=1), axis=0)
    for stride in (4, 8, 16):
        pd.testing.assert_series_equal(
            out[f"share_s{stride}"].sort_index(), shares[stride].sort_index(), check_names=False
        )
    depth = active.groupby(["model", "image_id"], observed=True)["scale_index"]
    assert np.allclose(out["mean_scale_index"].sort_index(), depth.mean().sort_index())
    assert np.allclose(out["max_scale_index"].sort_index(), depth.max().sort_index())
    # models in their category order, each model's images in order of first appearance
    first_seen = gates[["model", "image_id"]].drop_duplicates().sort_values("model", kind="stable")
    assert out.index.get_level_values("image_id").tolist() == first_seen["image_id"].tolist()
