"""Table 1 statistics from the image rows: real and expected GMACs (mean, max, min) and mIoU.

The paper's Table 1 reports, per method, mIoU on the validation set and GFLOPs (= GMACs here)
as the average, maximum and minimum over images. Records hold each image's cost and its
confusion matrix, so both come from the ``images`` frame alone (:mod:`dynviz.record`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["AUG_COLUMNS", "TABLE1_COLUMNS", "aug_costs", "cost_statistics", "dataset_miou"]

logger = logging.getLogger(__name__)

TABLE1_COLUMNS: tuple[str, ...] = (
    "images",
    "miou",
    "miou_image_mean",
    "pixel_accuracy",
    "real_gmacs_mean",
    "real_gmacs_max",
    "real_gmacs_min",
    "expected_gmacs_mean",
    "expected_gmacs_max",
    "expected_gmacs_min",
)
"""Columns of :func:`cost_statistics` after the grouping columns."""


def dataset_miou(confusion: Sequence[np.ndarray] | pd.Series) -> tuple[float, float]:
    """Data-set mIoU and pixel accuracy from per-image flattened confusion matrices.

    Counts are summed over images first, then IoU is taken per class (classes absent from both
    target and prediction are skipped), as detectron2 and mmseg do.

    Returns:
        ``(miou, pixel_accuracy)``, NaN when nothing was counted.
    """
    arrays = [np.asarray(c, dtype=np.int64) for c in confusion if c is not None]
    if not arrays:
        return math.nan, math.nan
    total = np.sum(arrays, axis=0)
    k = math.isqrt(total.size)
    if k * k != total.size:
        raise ValueError(f"a confusion matrix of {total.size} entries is not square")
    matrix = total.reshape(k, k)
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    valid = iou[~np.isnan(iou)]
    miou = float(valid.mean()) if valid.size else math.nan
    counted = matrix.sum()
    accuracy = float(np.trace(matrix) / counted) if counted else math.nan
    return miou, accuracy


def cost_statistics(images: pd.DataFrame, *, by: Sequence[str] = ()) -> pd.DataFrame:
    """Table 1 statistics per model (and any other grouping).

    Args:
        images: the image rows; a ``model`` column, when present, is always grouped by.
        by: more grouping columns (e.g. ``("regime",)``).

    Returns:
        One row per group: the grouping columns, then :data:`TABLE1_COLUMNS`. ``miou`` and
        ``pixel_accuracy`` are data-set level (summed confusion) when a ``confusion`` column is
        present, else the mean of the per-image values; ``miou_image_mean`` is always the mean of
        the per-image mIoU (NaN images skipped). GMACs are per image.
    """
    keys = list(by)
    if "model" in images.columns and "model" not in keys:
        keys.insert(0, "model")
    groups = images.groupby(keys, observed=True, sort=True) if keys else [((), images)]
    rows = []
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, object] = dict(zip(keys, key, strict=True))
        row["images"] = len(group)
        image_mean = float(group["miou"].mean()) if group["miou"].notna().any() else math.nan
        if "confusion" in group.columns:
            miou, accuracy = dataset_miou(group["confusion"])
        else:
            miou = image_mean
            accuracy = (
                float(group["pixel_accuracy"].mean())
                if group["pixel_accuracy"].notna().any()
                else math.nan
            )
        row.update(miou=miou, miou_image_mean=image_mean, pixel_accuracy=accuracy)
        for kind in ("real", "expected"):
            values = group[f"{kind}_gmacs"].astype("float64")
            row[f"{kind}_gmacs_mean"] = float(values.mean())
            row[f"{kind}_gmacs_max"] = float(values.max())
            row[f"{kind}_gmacs_min"] = float(values.min())
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, *TABLE1_COLUMNS])


AUG_COLUMNS = ("source_image_id", "aug_scale", "aug_flip")
"""The columns of records made with test-time augmentation (``dynviz record --aug``)."""


def aug_costs(images: pd.DataFrame) -> pd.DataFrame:
    """The cost of test-time augmentation: real and expected GMACs per variant.

    Args:
        images: image rows of records made with ``--aug`` (one row per image and variant;
            optionally with a ``model`` column).

    Returns:
        One row per ``[model,] aug_scale, aug_flip``: ``images``, ``real_gmacs_mean``,
        ``real_gmacs_max``, ``real_gmacs_min``, ``expected_gmacs_mean`` and ``share`` (the
        variant's part of the augmented image's mean real cost), then one row per model with
        ``aug_scale`` NaN for the whole augmented image (the sum over its variants). Empty
        for records without augmentation.
    """
    keys = (["model"] if "model" in images.columns else []) + ["aug_scale", "aug_flip"]
    columns = [
        *keys,
        "images",
        "real_gmacs_mean",
        "real_gmacs_max",
        "real_gmacs_min",
        "expected_gmacs_mean",
        "share",
    ]
    if not set(AUG_COLUMNS) <= set(images.columns) or images.empty:
        return pd.DataFrame(columns=columns)
    frame = images.dropna(subset=["aug_scale"])
    per_variant = (
        frame.groupby(keys, observed=True, sort=True)
        .agg(
            images=("real_gmacs", "size"),
            real_gmacs_mean=("real_gmacs", "mean"),
            real_gmacs_max=("real_gmacs", "max"),
            real_gmacs_min=("real_gmacs", "min"),
            expected_gmacs_mean=("expected_gmacs", "mean"),
        )
        .reset_index()
    )
    model_keys = keys[:-2]
    whole = (
        frame.groupby([*model_keys, "source_image_id"], observed=True)[
            ["real_gmacs", "expected_gmacs"]
        ]
        .sum()
        .reset_index()
    )
    if model_keys:
        totals = whole.groupby(model_keys, observed=True).agg(
            images=("real_gmacs", "size"),
            real_gmacs_mean=("real_gmacs", "mean"),
            real_gmacs_max=("real_gmacs", "max"),
            real_gmacs_min=("real_gmacs", "min"),
            expected_gmacs_mean=("expected_gmacs", "mean"),
        )
        totals = totals.reset_index()
        per_variant = per_variant.merge(
            totals[[*model_keys, "real_gmacs_mean"]].rename(columns={"real_gmacs_mean": "_total"}),
            on=model_keys,
        )
    else:
        totals = pd.DataFrame(
            [
                {
                    "images": len(whole),
                    "real_gmacs_mean": whole["real_gmacs"].mean(),
                    "real_gmacs_max": whole["real_gmacs"].max(),
                    "real_gmacs_min": whole["real_gmacs"].min(),
                    "expected_gmacs_mean": whole["expected_gmacs"].mean(),
                }
            ]
        )
        per_variant["_total"] = totals["real_gmacs_mean"].iloc[0]
    per_variant["share"] = per_variant["real_gmacs_mean"] / per_variant.pop("_total")
    totals["aug_scale"] = np.nan
    totals["aug_flip"] = pd.NA
    totals["share"] = 1.0
    out = pd.concat([per_variant, totals[columns]], ignore_index=True)
    return out[columns]
