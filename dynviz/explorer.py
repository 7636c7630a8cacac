"""The Streamlit route explorer that ships with dynviz: where its script is, and how it is told
which folder to search.

``dynviz app DIR`` (:mod:`dynviz.commands.app`) starts it; the benchmarks drive it under
Streamlit's ``AppTest``. The app itself (``apps/``) only calls the library.
"""

from __future__ import annotations

from pathlib import Path

from dynviz.support.resources import shipped

__all__ = ["APP_DIR_ENV", "explorer_script"]

APP_DIR_ENV = "DYNVIZ_APP_DIR"
"""Environment variable that carries the folder of runs and records to the app."""


def explorer_script() -> Path:
    """``apps/explorer.py``, the explorer's entrypoint (shipped with dynviz:
    :func:`dynviz.support.resources.shipped`)."""
    return shipped("apps") / "explorer.py"
