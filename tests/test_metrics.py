"""Confusion matrix and IoU arithmetic against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dynviz.inference.metrics import ConfusionMatrix, per_image_miou

# target (rows) and prediction of a 3x3 image, 3 classes, one ignored pixel.
TARGET = np.array([[0, 0, 1], [1, 1, 2], [2, 2, 255]])
PRED = np.array([[0, 1, 1], [1, 2, 2], [2, 0, 0]])
# matrix[t, p]:
#   t=0: p=0 once, p=1 once            -> [1, 1, 0]
#   t=1: p=1 twice, p=2 once           -> [0, 2, 1]
#   t=2: p=2 twice, p=0 once           -> [1, 0, 2]
EXPECTED = np.array([[1, 1, 0], [0, 2, 1], [1, 0, 2]])
# IoU: class 0: 1 / (2 + 2 - 1) = 1/3; class 1: 2 / (3 + 3 - 2) = 1/2; class 2: 2 / (3 + 3 - 2)
EXPECTED_IOU = np.array([1 / 3, 1 / 2, 1 / 2])


def test_hand_computed_example() -> None:
    cm = ConfusionMatrix(3).update(PRED, TARGET)
    assert cm.matrix.dtype == np.int64
    np.testing.assert_array_equal(cm.matrix, EXPECTED)
    assert cm.total == 8
    np.testing.assert_allclose(cm.iou(), EXPECTED_IOU)
    assert cm.miou() == pytest.approx(4 / 9)
    assert cm.pixel_accuracy() == pytest.approx(5 / 8)
    np.testing.assert_allclose(cm.class_accuracy(), [1 / 2, 2 / 3, 2 / 3])
    assert cm.mean_accuracy() == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)
    summary = cm.summary(["a", "b", "c"])
    assert summary["iou"]["a"] == pytest.approx(1 / 3)


def test_torch_input_any_shape_matches_numpy() -> None:
    cm = ConfusionMatrix(3).update(torch.from_numpy(PRED)[None], torch.from_numpy(TARGET)[None])
    np.testing.assert_array_equal(cm.matrix, EXPECTED)
    flat = ConfusionMatrix(3).update(PRED.ravel().astype(np.uint8), TARGET.ravel().astype(np.uint8))
    np.testing.assert_array_equal(flat.matrix, EXPECTED)


def test_absent_classes_are_nan_and_skipped() -> None:
    cm = ConfusionMatrix(5).update(PRED, TARGET)
    iou = cm.iou()
    assert np.isnan(iou[3:]).all()
    assert cm.miou() == pytest.approx(4 / 9)
    # A class only predicted (never in the target) has IoU 0, not NaN.
    only_pred = ConfusionMatrix(3).update(np.array([0, 2]), np.array([0, 0]))
    np.testing.assert_array_equal(only_pred.iou(), [0.5, np.nan, 0.0])
    assert math.isnan(ConfusionMatrix(3).miou())
    assert math.isnan(ConfusionMatrix(3).pixel_accuracy())


def test_merge_add_and_serialise() -> None:
    halves = [ConfusionMatrix(3).update(PRED[:1], TARGET[:1]), ConfusionMatrix(3)]
    halves[1].update(PRED[1:], TARGET[1:])
    total = halves[0] + halves[1]
    np.testing.assert_array_equal(total.matrix, EXPECTED)
    np.testing.assert_array_equal(halves[0].matrix, [[1, 1, 0], [0, 1, 0], [0, 0, 0]])
    assert halves[0].merge(halves[1]) is halves[0] and halves[0] == total
    restored = ConfusionMatrix.from_dict(json.loads(json.dumps(total.to_dict())))
    assert restored == total and restored.miou() == total.miou()
    # The all_reduce path: a torch tensor view of the int64 matrix.
    summed = torch.from_numpy(total.matrix) * 2
    total.matrix = summed.numpy()
    assert total.miou() == pytest.approx(4 / 9)
    with pytest.raises(ValueError):
        total.merge(ConfusionMatrix(4))
    total.reset()
    assert total.total == 0


def test_bad_inputs_raise() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(PRED, TARGET[:2])
    with pytest.raises(ValueError, match=r"predictions have values \[3\]"):
        cm.update(np.array([3]), np.array([0]))
    with pytest.raises(ValueError, match=r"targets have values \[7\]"):
        cm.update(torch.tensor([0]), torch.tensor([7]))
    # An out-of-range prediction on an ignored pixel is fine.
    cm.update(np.array([9, 1]), np.array([255, 1]))
    assert cm.total == 1


def test_per_image_miou() -> None:
    assert per_image_miou(PRED, TARGET, 3) == pytest.approx(4 / 9)
    assert per_image_miou(TARGET, TARGET, 19) == pytest.approx(1.0)
    assert math.isnan(per_image_miou(PRED, np.full_like(TARGET, 255), 3))
