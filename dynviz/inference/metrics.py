"""Segmentation metrics: a confusion matrix and the IoU family.

Conventions follow detectron2's ``SemSegEvaluator`` and mmseg's ``IoUMetric``: counts are summed
over the whole data set and IoU is taken per class at the end (dataset-level mIoU, not a mean of
per-image IoUs); pixels whose target is ``ignore_index`` are left out; classes absent from both
prediction and target have IoU NaN and are skipped by the mean.

``ConfusionMatrix.matrix[t, p]`` counts pixels of target class ``t`` predicted as ``p``. It is a
plain int64 numpy array, so shards merge by addition: ``a + b``, ``a.merge(b)``, or with
torch.distributed::

    counts = torch.from_numpy(cm.matrix)
    torch.distributed.all_reduce(counts)
    cm.matrix = counts.numpy()
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

__all__ = ["ConfusionMatrix", "per_image_miou"]

logger = logging.getLogger(__name__)

ArrayLike = np.ndarray | torch.Tensor


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


class ConfusionMatrix:
    """Accumulates a ``(num_classes, num_classes)`` confusion matrix.

    Args:
        num_classes: number of classes.
        ignore_index: target value that is left out of every count.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        """Zero all counts."""
        self.matrix[...] = 0

    def update(self, pred: ArrayLike, target: ArrayLike) -> ConfusionMatrix:
        """Add a prediction/target pair of any (equal) shape.

        Args:
            pred: predicted class indices (torch or numpy, integer).
            target: target class indices; ``ignore_index`` pixels are skipped.

        Returns:
            ``self``, for chaining.

        Raises:
            ValueError: shapes differ, or a prediction or non-ignored target is out of range.
        """
        if tuple(pred.shape) != tuple(target.shape):
            raise ValueError(f"pred shape {tuple(pred.shape)} != target {tuple(target.shape)}")
        classes = self.num_classes
        if isinstance(pred, torch.Tensor) or isinstance(target, torch.Tensor):
            # Count on the tensors' device: no transfer of full maps from an accelerator.
            pred_t = torch.as_tensor(pred).reshape(-1).long()
            target_t = torch.as_tensor(target, device=pred_t.device).reshape(-1).long()
            valid = target_t != self.ignore_index
            pred_t, target_t = pred_t[valid], target_t[valid]
            self._check_range(pred_t, "predictions")
            self._check_range(target_t, "targets")
            flat = torch.bincount(target_t * classes + pred_t, minlength=classes * classes)
            counts = flat.cpu().numpy()
        else:
            pred_a = np.asarray(pred).reshape(-1).astype(np.int64)
            target_a = np.asarray(target).reshape(-1).astype(np.int64)
            valid = target_a != self.ignore_index
            pred_a, target_a = pred_a[valid], target_a[valid]
            self._check_range(pred_a, "predictions")
            self._check_range(target_a, "targets")
            counts = np.bincount(target_a * classes + pred_a, minlength=classes * classes)
        self.matrix += counts.reshape(classes, classes).astype(np.int64)
        return self

    def _check_range(self, values: ArrayLike, what: str) -> None:
        bad = (values < 0) | (values >= self.num_classes)
        if bool(bad.any()):
            shown = sorted({int(v) for v in values[bad][:1000].tolist()})[:10]
            note = f" and not ignore_index={self.ignore_index}" if what == "targets" else ""
            raise ValueError(f"{what} have values {shown} outside [0, {self.num_classes}){note}")

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts in place (e.g. from another rank or record shard).

        Returns:
            ``self``.
        """
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"cannot merge a {other.num_classes}-class matrix (ignore {other.ignore_index}) "
                f"into a {self.num_classes}-class one (ignore {self.ignore_index})"
            )
        self.matrix += other.matrix
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        result = ConfusionMatrix(self.num_classes, self.ignore_index)
        result.matrix = self.matrix.copy()
        return result.merge(other)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        return (
            self.num_classes == other.num_classes
            and self.ignore_index == other.ignore_index
            and np.array_equal(self.matrix, other.matrix)
        )

    @property
    def total(self) -> int:
        """Number of counted (non-ignored) pixels."""
        return int(self.matrix.sum())

    def iou(self) -> np.ndarray:
        """Per-class IoU = TP / (TP + FP + FN); NaN for classes absent in target and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes with a defined IoU, in [0, 1] (NaN when nothing counted)."""
        return _nanmean(self.iou())

    def pixel_accuracy(self) -> float:
        """Share of counted pixels predicted correctly (NaN when nothing counted)."""
        total = self.total
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def class_accuracy(self) -> np.ndarray:
        """Per-class recall TP / (TP + FN); NaN for classes absent from the target."""
        tp = np.diag(self.matrix).astype(np.float64)
        support = self.matrix.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(support > 0, tp / support, np.nan)

    def mean_accuracy(self) -> float:
        """Mean per-class accuracy over the classes present in the target."""
        return _nanmean(self.class_accuracy())

    def summary(self, class_names: list[str] | None = None) -> dict[str, Any]:
        """All metrics as plain Python values (per-class IoU keyed by class name)."""
        names = class_names or [str(k) for k in range(self.num_classes)]
        return {
            "miou": self.miou(),
            "pixel_accuracy": self.pixel_accuracy(),
            "mean_accuracy": self.mean_accuracy(),
            "iou": {name: float(v) for name, v in zip(names, self.iou(), strict=True)},
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"num_classes", "ignore_index", "matrix": list of lists}``."""
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "matrix": self.matrix.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfusionMatrix:
        """Inverse of :meth:`to_dict`."""
        result = cls(int(data["num_classes"]), int(data.get("ignore_index", 255)))
        matrix = np.asarray(data["matrix"], dtype=np.int64)
        if matrix.shape != result.matrix.shape:
            raise ValueError(f"matrix shape {matrix.shape} != {result.matrix.shape}")
        result.matrix = matrix
        return result

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, pixels={self.total}, "
            f"miou={self.miou():.4f})"
        )


def per_image_miou(
    pred: ArrayLike, target: ArrayLike, num_classes: int, ignore_index: int = 255
) -> float:
    """mIoU of one image over the classes present in its target or prediction.

    Args:
        pred: predicted class indices.
        target: target class indices (``ignore_index`` skipped).
        num_classes: number of classes.
        ignore_index: target value to skip.

    Returns:
        The mean IoU in [0, 1], NaN when the image has no counted pixel.
    """
    return ConfusionMatrix(num_classes, ignore_index).update(pred, target).miou()
