"""The explorer's warm-up, run by path in the server process before it listens (``dynviz app``
runs this file as ``streamlit run`` runs ``explorer.py``: the library never imports the app).

It imports ``_state`` (the pages' modules come with it) and calls ``_state.preload(ROOT)``;
``ROOT`` (the folder shown, None for the default) is given by the caller, ``TIMES`` is the
result: the seconds each step took, ``imports`` first.
"""

from __future__ import annotations

import time

started = time.perf_counter()

import _state  # noqa: E402 - timed: the imports are the first step

TIMES = {"imports": round(time.perf_counter() - started, 3)}
TIMES.update(_state.preload(globals().get("ROOT")))
