"""Figures of records analyses: pure builders, no ``plt.show()``, no files written.

* :mod:`dynviz.plots.mpl`: matplotlib, ``f(data, *, ax=None, ...) -> Axes`` (papers, notebooks);
* :mod:`dynviz.plots.interactive`: plotly, ``f(data, *, ...) -> go.Figure`` (HTML, the explorer).

Import the submodule you need; plotly is an optional dependency (the ``app`` extra).
"""

from __future__ import annotations

__all__ = ["interactive", "mpl"]
