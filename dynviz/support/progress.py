"""Progress of the long loops (evaluation, recording, prediction): a tqdm bar on a terminal, and
periodic log lines when stderr is not one (a batch job's log), so that a log shows how far a run
got and how long it has left.

``show`` is three-way, as the commands' ``--progress/--no-progress``: ``True`` a bar, ``False``
nothing, ``None`` a bar when stderr is a terminal and else an INFO line every
:data:`LOG_EVERY_S` seconds (and one at the end), through the ``dynviz.support.progress`` logger.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

__all__ = ["LOG_EVERY_S", "Progress", "format_seconds"]

logger = logging.getLogger(__name__)

LOG_EVERY_S = 30.0
"""Seconds between two progress lines when stderr is not a terminal."""


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``1h02m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Progress over ``total`` items: ``update(n)`` after each, ``close()`` at the end (or use it
    as a context manager).

    Args:
        total: items expected.
        desc: what is counted (``eval``, ``record tiny``); starts each line.
        unit: the item's unit (``img``).
        show: ``True`` a tqdm bar, ``False`` nothing, ``None`` a bar on a terminal, else log
            lines.
        every: seconds between two log lines (default :data:`LOG_EVERY_S`).
        initial: items already done (a resumed job).
    """

    def __init__(
        self,
        *,
        total: int,
        desc: str,
        unit: str = "img",
        show: bool | None = None,
        every: float | None = None,
        initial: int = 0,
    ) -> None:
        self.total = int(total)
        self.desc = desc
        self.unit = unit
        self.done = int(initial)
        self._initial = int(initial)
        self._every = LOG_EVERY_S if every is None else float(every)
        self._start = self._last = time.perf_counter()
        self._bar: Any = None
        self._lines = False
        self._closed = False
        terminal = sys.stderr.isatty()
        if show or (show is None and terminal):
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total, initial=self.done, desc=desc, unit=unit, dynamic_ncols=True
            )
        elif show is None:
            self._lines = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """``n`` more items done."""
        self.done += int(n)
        if self._bar is not None:
            self._bar.update(n)
        elif self._lines:
            now = time.perf_counter()
            if now - self._last >= self._every and self.done < self.total:
                self._last = now
                logger.info("%s", self.line())

    def line(self) -> str:
        """``eval: 120/500 img (24%), 3.1 img/s, 2m03s left`` (the rate of this process)."""
        elapsed = time.perf_counter() - self._start
        rate = (self.done - self._initial) / elapsed if elapsed > 0 else 0.0
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        text = f"{self.desc}: {self.done}/{self.total} {self.unit}{share}, {rate:.2f} {self.unit}/s"
        if rate > 0 and self.done < self.total:
            text += f", {format_seconds((self.total - self.done) / rate)} left"
        return text

    def close(self) -> None:
        """Close the bar, or log the last line (``...; done in 12s``, or ``stopped after`` when
        fewer than ``total`` items were done: an error or an interruption)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._lines:
            how = "done in" if self.done >= self.total else "stopped after"
            elapsed = format_seconds(time.perf_counter() - self._start)
            logger.info("%s; %s %s", self.line(), how, elapsed)
