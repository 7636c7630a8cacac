"""Worker processes that start clean: spawned (no forked torch or OpenMP state) and without
running the parent's ``__main__`` file again.

Spawned workers import the parent's ``__main__`` before their task unless it has no file. A
script without an ``if __name__ == "__main__"`` guard, or a Streamlit page that replaced
``__main__``, would run again in them; :func:`workers_skip_main` hides the file while workers
start. The chain runs its steps in such a pool, and the explorer times nodes in one
(:func:`dynviz.inference.latency.measure_node_latency_isolated`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

__all__ = ["spawn_pool", "workers_skip_main"]


@contextlib.contextmanager
def workers_skip_main() -> Iterator[None]:
    """While open, ``__main__`` has no ``__file__`` or ``__spec__`` for spawned workers to run."""
    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__file__", "__spec__") if hasattr(main, k)}
    try:
        for key in saved:
            if key == "__spec__":
                main.__spec__ = None
            else:
                delattr(main, key)
        yield
    finally:
        for key, value in saved.items():
            setattr(main, key, value)


@contextlib.contextmanager
def spawn_pool(
    workers: int,
    *,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Iterator[ProcessPoolExecutor]:
    """A :class:`ProcessPoolExecutor` of ``workers`` spawned processes, shut down on exit.

    Workers start on demand, so ``__main__`` stays hidden (:func:`workers_skip_main`) for the
    whole block.
    """
    with workers_skip_main():
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=initializer,
            initargs=initargs,
        )
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
