"""Analyses of records: pure functions from frames to frames.

They read the tables of :mod:`dynviz.record` (``gates``, ``images``) and never the model:

* :mod:`~dynviz.analysis.routes`: activation probability per path, layer and scale (Fig. 5),
  alpha distributions, routing versus object scale;
* :mod:`~dynviz.analysis.costs`: the Table 1 statistics (real and expected GMACs, mIoU) and
  the cost of test-time augmentation per variant (:func:`aug_costs`);
* :mod:`~dynviz.analysis.common`: the common network (paths active in more than 95% of images),
  as a :class:`~dynviz.model.route.Route` that ``build_model`` builds, its size and cost, and
  its route spec file.
"""

from __future__ import annotations

from dynviz.analysis.common import (
    CommonNetError,
    CommonSummary,
    extract_common,
    prune_dangling,
    summarize_common,
    write_common,
)
from dynviz.analysis.costs import aug_costs, cost_statistics
from dynviz.analysis.routes import (
    ScaleSummary,
    activation_probability,
    alpha_histogram,
    cell_probability,
    coarsen_histogram,
    probability_distribution,
    probability_matrix,
    routing_vs_scale,
    scale_summary,
)

__all__ = [
    "CommonNetError",
    "CommonSummary",
    "ScaleSummary",
    "activation_probability",
    "alpha_histogram",
    "aug_costs",
    "cell_probability",
    "coarsen_histogram",
    "cost_statistics",
    "extract_common",
    "probability_distribution",
    "probability_matrix",
    "prune_dangling",
    "routing_vs_scale",
    "scale_summary",
    "summarize_common",
    "write_common",
]
