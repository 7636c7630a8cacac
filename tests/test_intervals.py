"""Bootstrap intervals over images (issue 23): hand-checked figures, the paired mIoU difference
of a comparison, and the verdicts they allow."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import dynviz
from dynviz.analysis.compare import (
    PER_IMAGE,
    against_each,
    compare,
    comparison_markdown,
    cost_accuracy_frame,
    dynamic_against_each,
    read_rows,
    write_table,
)
from dynviz.analysis.intervals import (
    Interval,
    accuracy_interval,
    bootstrap,
    miou_difference,
    miou_of,
    spearman_interval,
)
from dynviz.model.checkpoint import make_checkpoint, save_checkpoint

DATA = "synthetic:count=6,size=64x64,classes=4"


def test_miou_of_a_hand_computed_confusion():
    # class 0: 8 hits, union 8 + 2 + 1 = 11; class 1: 4 hits, union 4 + 1 + 2 = 7; class 2 absent
    confusion = np.array([[8, 2, 0], [1, 4, 0], [0, 0, 0]])
    assert miou_of(confusion) == pytest.approx((8 / 11 + 4 / 7) / 2)
    assert math.isnan(miou_of(np.zeros((2, 2))))


def _images(hits: float, n: int = 40, seed: int = 0) -> np.ndarray:
    """Per-image 2-class confusions with about ``hits`` of the pixels right."""
    rng = np.random.default_rng(seed)
    right = rng.binomial(100, hits, size=(n, 2))
    out = np.zeros((n, 2, 2), dtype=np.int64)
    out[:, 0, 0], out[:, 1, 1] = right[:, 0], right[:, 1]
    out[:, 0, 1], out[:, 1, 0] = 100 - right[:, 0], 100 - right[:, 1]
    return out


def test_the_paired_difference_and_its_verdicts():
    good, poor = _images(0.9), _images(0.6, seed=1)
    same = miou_difference(good, good)
    assert same == Interval(0.0, 0.0, 0.0)  # every draw takes the same images for both
    better = miou_difference(good, poor)
    assert better.value == pytest.approx(miou_of(good.sum(0)) - miou_of(poor.sum(0)))
    assert better.above(0.0) and better.low <= better.value <= better.high
    assert miou_difference(poor, good).below(0.0)
    # a small difference on few images is not called either way
    near = miou_difference(_images(0.8, n=6, seed=2), _images(0.79, n=6, seed=3))
    assert near.low < 0 < near.high
    # reproducible, and flat (n, K * K) confusions are read as square ones
    assert miou_difference(good.reshape(40, 4), poor.reshape(40, 4)) == better
    with pytest.raises(ValueError, match="differ"):
        miou_difference(good, poor[:10])


def test_accuracy_and_spearman_intervals():
    assert accuracy_interval(np.ones(30)) == Interval(1.0, 1.0, 1.0)
    half = accuracy_interval(np.arange(100) % 2)
    assert half.value == 0.5 and 0.35 < half.low < 0.5 < half.high < 0.65
    x = np.arange(20.0)
    rho = spearman_interval(x, x**2)  # monotone in every draw
    assert (rho.value, rho.low, rho.high) == pytest.approx((1.0, 1.0, 1.0))
    noise = spearman_interval(x, np.random.default_rng(0).normal(size=20))
    assert noise.low < noise.value < noise.high
    # the point value is pandas' Spearman (average ranks for ties)
    import pandas as pd

    y = np.array([1, 2, 2, 3, 5, 5, 5, 8, 9, 9.0])
    z = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3.0])
    assert spearman_interval(y, z).value == pytest.approx(
        pd.Series(y).rank().corr(pd.Series(z).rank())
    )
    assert math.isnan(bootstrap(lambda i: 1.0, 1).low)  # one item: no interval


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = dynviz.build_model("tiny", num_classes=4)
        path = folder / f"m{seed}.pt"
        save_checkpoint(path, make_checkpoint(model, iteration=1, train_args={"data": DATA}))
        paths.append(str(path))
    rows = compare([paths[0], paths[0], paths[1]], DATA, names=["a", "a-again", "b"])
    write_table(rows, folder / "out", data=DATA)
    return rows, folder / "out"


def test_compare_keeps_per_image_confusions_that_add_up(compared):
    rows, folder = compared
    for row in rows:
        assert row.confusions.shape == (6, 4, 4)
        assert miou_of(row.confusions.sum(0)) == pytest.approx(row.miou, abs=1e-9)
    assert (folder / PER_IMAGE).is_file()
    back = read_rows(folder)
    assert [r.method for r in back] == ["a", "a-again", "b"]
    for before, after in zip(rows, back, strict=True):
        np.testing.assert_array_equal(before.confusions, after.confusions)
    assert "confusion" not in (folder / "table1.csv").read_text()


def test_against_each_and_its_claims(compared):
    rows, _ = compared
    others = {o.method: o for o in against_each(rows, "a")}
    assert set(others) == {"a-again", "b"}
    assert others["a-again"].difference == Interval(0.0, 0.0, 0.0)  # the same network
    assert others["a-again"].verdict == "no clear difference"
    b = others["b"]
    assert b.difference.value == pytest.approx(rows[0].miou - rows[2].miou)
    expected = "better" if b.difference.low > 0 else "worse" if b.difference.high < 0 else None
    assert b.verdict == (expected or "no clear difference")
    text = "\n".join(comparison_markdown(rows, "a"))
    assert "| a-again | dynamic |" in text and "no clear difference" in text
    assert "excludes zero" in text
    frame = cost_accuracy_frame(rows, "a")
    again = frame[frame["method"] == "a-again"].iloc[0]
    assert again["low"] == pytest.approx(100 * rows[0].miou)  # a zero-width interval
    assert math.isnan(frame[frame["method"] == "a"].iloc[0]["low"])


def test_dynamic_against_each_of_a_comparison_folder(compared):
    _, folder = compared
    rows = read_rows(folder)  # as written: the CSV rounds the figures
    method, table, figure = dynamic_against_each(folder)
    assert method == "a"  # no budgeted network: the first dynamic one
    assert list(table["network"]) == [o.method for o in against_each(rows, "a")]
    again = table[table["network"] == "a-again"].iloc[0]
    assert (again["difference"], again["low"], again["high"]) == (0.0, 0.0, 0.0)
    assert again["verdict"] == "no clear difference" and bool(again["costs no more"])
    assert again["mIoU (%)"] == pytest.approx(100 * rows[1].miou)
    b = table[table["network"] == "b"].iloc[0]
    exact = miou_of(rows[0].confusions.sum(0)) - miou_of(rows[2].confusions.sum(0))
    assert b["difference"] == pytest.approx(100 * exact)
    assert list(figure["method"]) == ["a", "a-again", "b"]


def test_dynamic_against_each_without_a_dynamic_network(compared, tmp_path):
    rows = [dataclasses.replace(r, kind="static") for r in compared[0]]
    write_table(rows, tmp_path, data=DATA)
    method, table, figure = dynamic_against_each(tmp_path)
    assert method == "" and table.empty and figure.empty
