"""Rules of the method that several layers apply, each named once (no imports: the plots, the
analyses, the CLI and the explorer all read them from here).

* :data:`COMMON_THRESHOLD`: the common network keeps the paths active in more than this share of
  the images (the paper's 95%, Sec. 4.3); ``dynviz extract``, ``dynviz analyze``, the report's
  Fig. 5 and the explorer's sliders start from it.
* The active rule, a path is open when ``alpha > active_threshold``, is
  :meth:`dynviz.model.config.RoutingSpaceConfig.is_active`; the unit rule of displayed costs is
  :mod:`dynviz.units`.
"""

from __future__ import annotations

__all__ = ["COMMON_THRESHOLD"]

COMMON_THRESHOLD = 0.95
"""Share of images above which a path belongs to the common network (strictly above)."""
