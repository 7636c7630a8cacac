"""glibc malloc tuning for CPU inference: keep freed activations instead of page-faulting
them back in.

PyTorch's CPU allocator calls ``malloc``/``free`` for every tensor. glibc serves large blocks
with ``mmap`` (above ``M_MMAP_THRESHOLD``, at most 32 MiB even after its dynamic adjustment) and
returns freed heap tops to the OS above ``M_TRIM_THRESHOLD``, so each forward pass of a
segmentation network touches hundreds of MB of fresh pages: on a 2-core VM a 512x1024 Network-Fix
forward took about 134,000 minor page faults and 20% of its time in the kernel. Raising both
thresholds (what ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` do at process start) makes
freed blocks reusable; the cost is that the process keeps its peak heap.

This is process-wide and only acts on glibc; elsewhere the functions return False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "INITIAL_THRESHOLD",
    "TUNED_THRESHOLD",
    "malloc_thresholds",
    "malloc_tuned",
    "tune_malloc",
]

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
TUNED_THRESHOLD = 1 << 30  # 1 GiB: every activation of a 2048x4096 forward stays in the heap
INITIAL_THRESHOLD = 128 * 1024  # glibc's starting value of both thresholds

_state: dict[str, int | None] = {"threshold": None}


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def malloc_thresholds(threshold: int) -> bool:
    """Set glibc's mmap and trim thresholds to ``threshold`` bytes; False where impossible."""
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold))) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, int(threshold))
    )
    if ok:
        _state["threshold"] = int(threshold)
    return ok


def tune_malloc(enabled: bool = True) -> bool:
    """Keep freed tensors in the heap for reuse (``enabled``), or go back to glibc's initial
    128 KiB thresholds (static: glibc's dynamic adjustment does not come back).

    Returns:
        Whether the thresholds were set (False off glibc).
    """
    ok = malloc_thresholds(TUNED_THRESHOLD if enabled else INITIAL_THRESHOLD)
    logger.debug("malloc thresholds %s: %s", "tuned" if enabled else "initial", ok)
    return ok


@contextmanager
def malloc_tuned(enabled: bool) -> Iterator[bool]:
    """Run a block with tuned (or initial) thresholds, then restore the previous setting."""
    previous = _state["threshold"]
    ok = tune_malloc(enabled)
    try:
        yield ok
    finally:
        if ok:
            malloc_thresholds(previous if previous is not None else INITIAL_THRESHOLD)
