"""Readable names of the records' and analyses' columns, for tables and figures (reports and the
explorer show these, never ``stat_mean_object_area`` or ``fine_share``)."""

from __future__ import annotations

__all__ = ["COLUMN_LABELS", "readable", "readable_columns"]

COLUMN_LABELS: dict[str, str] = {
    # image statistics of the synthetic scenes
    "stat_mean_object_area": "mean object area (share of image)",
    "stat_median_object_area": "median object area (share of image)",
    "stat_max_object_area": "largest object area (share of image)",
    "stat_min_object_area": "smallest object area (share of image)",
    "stat_small_fraction": "share of small objects (<1% of image)",
    "stat_object_count": "objects",
    "stat_foreground_fraction": "foreground share",
    "stat_classes_present": "classes present",
    "stat_regime_code": "scale regime code",
    "regime": "scale regime",
    # routing measures of routing_vs_scale
    "fine_share": "share of active paths at 1/4",
    "fine_cost_share": "share of backbone cost at 1/4",
    "mean_scale_index": "mean scale of active paths (0 = 1/4)",
    "max_scale_index": "deepest scale reached (0 = 1/4)",
    "n_active": "active paths",
    "real_gmacs": "real cost",
    "expected_gmacs": "expected cost",
    "miou": "mIoU",
    "pixel_accuracy": "pixel accuracy",
    # correlations
    "metric": "routing measure",
    "stat": "image statistic",
    "pearson": "Pearson r",
    "spearman": "Spearman rho",
    "n": "images",
    "images": "images",
    # activation statistics
    "p": "activation probability",
    "mean_alpha": "mean alpha",
    "std_alpha": "alpha std",
}


def readable(column: str) -> str:
    """The readable name of a column (``share_s8`` -> ``share of active paths at 1/8``); other
    names come back with underscores as spaces."""
    if column in COLUMN_LABELS:
        return COLUMN_LABELS[column]
    for prefix, text in (
        ("cost_share_s", "share of backbone cost at 1/"),
        ("share_s", "share of active paths at 1/"),
    ):
        if column.startswith(prefix) and column[len(prefix) :].isdigit():
            return text + column[len(prefix) :]
    if column.startswith("stat_"):
        column = column[len("stat_") :]
    return column.replace("_", " ")


def readable_columns(columns: list[str]) -> dict[str, str]:
    """``{column: readable name}`` for a frame's ``rename``."""
    return {c: readable(c) for c in columns}
