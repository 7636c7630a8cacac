"""A generic timing harness: interleaved repeats of several calls with the CPU wait of each
sample (:func:`measure_calls`), their medians and quartiles, and a thread-count guard.

It knows nothing about networks: :mod:`dynviz.inference.latency` times the routing space's nodes
with it and :mod:`dynviz.bench` times whole figures. It lives in :mod:`dynviz.support`, below both,
because the bench imports the inference package (an inference module importing the bench would
make a package cycle).
"""

from __future__ import annotations

import contextlib
import glob
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "Timings",
    "cpu_wait",
    "measure_calls",
    "quartiles",
    "time_calls",
    "torch_threads",
]

NANO = 1e9
"""Nanoseconds per second (``/proc`` schedstat counts nanoseconds)."""


def cpu_wait() -> float | None:
    """Seconds the threads of this process have spent runnable but waiting for a CPU (Linux
    ``/proc/self/task/*/schedstat``); None where the kernel does not report it.

    On a machine shared with other jobs this is the contention a timing suffered: two-thread
    OpenMP regions stall whenever one thread waits, so a few percent of waiting can double a
    wall time.
    """
    total = 0
    found = False
    for stat in glob.glob("/proc/self/task/*/schedstat"):
        try:
            with open(stat, encoding="ascii") as handle:
                total += int(handle.read().split()[1])
            found = True
        except (OSError, IndexError, ValueError):
            continue
    return total / NANO if found else None


def quartiles(values: Any) -> tuple[float, float, float]:
    """``(first quartile, median, third quartile)`` of ``values`` (inclusive method: the
    quartiles lie within the values; one value gives it three times).

    Raises:
        ValueError: no value.
    """
    data = sorted(float(v) for v in values)
    if not data:
        raise ValueError("quartiles of no value")
    if len(data) == 1:
        return data[0], data[0], data[0]
    low, mid, high = statistics.quantiles(data, n=4, method="inclusive")
    return low, mid, high


@dataclass
class Timings:
    """Interleaved timings of several calls (see :func:`measure_calls`).

    Attributes:
        samples: kept seconds per call of each function, one per round.
        waits: for each kept sample, the share of its wall time the process's threads spent
            waiting for a CPU (None where unknown).
        retaken: samples taken again because they waited more than ``max_wait``.
        results: with ``keep_results``, for each kept sample what its (last) call returned: a
            call may report how its own time divides (see the recording figure of
            ``dynviz bench``). Empty lists otherwise.
    """

    samples: dict[str, list[float]]
    waits: dict[str, list[float | None]]
    retaken: int = 0
    max_wait: float | None = None
    results: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def median(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.samples.items()}

    @property
    def quartiles(self) -> dict[str, tuple[float, float, float]]:
        """``(first quartile, median, third quartile)`` seconds of each call."""
        return {k: quartiles(v) for k, v in self.samples.items()}

    def ratios(self, numerator: str, denominator: str) -> list[float]:
        """Per round, the time of ``numerator`` over that of ``denominator``: both were taken in
        the same interleaved round, so a slow spell of the machine hits both."""
        return [
            a / b if b > 0 else float("nan")
            for a, b in zip(self.samples[numerator], self.samples[denominator], strict=True)
        ]

    @property
    def median_wait(self) -> float | None:
        values = [w for ws in self.waits.values() for w in ws if w is not None]
        return statistics.median(values) if values else None

    @property
    def contended(self) -> int:
        """Kept samples that still waited more than ``max_wait`` (after the retakes)."""
        if self.max_wait is None:
            return 0
        return sum(
            1 for ws in self.waits.values() for w in ws if w is not None and w > self.max_wait
        )

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.samples.values())


def measure_calls(
    calls: dict[str, Callable[[], object]],
    *,
    repeats: int = 5,
    warmup: int = 1,
    min_time: float = 0.0,
    max_wait: float | None = None,
    retakes: int = 3,
    sync: Callable[[], object] | None = None,
    keep_results: bool = False,
) -> Timings:
    """Interleaved timings of each function, with the CPU wait of every sample.

    Each round runs every function once (in a rotated order, so none always runs right after
    the same neighbour). ``min_time`` > 0 repeats a call within a sample until that many
    seconds have passed, for very short calls. With ``max_wait``, a sample whose threads
    waited for a CPU longer than that share of its wall time (another job took the core) is
    taken again, up to ``retakes`` times, keeping the least disturbed one. ``sync`` (e.g.
    ``torch.cuda.synchronize``) runs before a sample starts and before it stops, so work queued
    on an accelerator is timed, not just launched. ``keep_results`` keeps what each kept sample
    returned (:attr:`Timings.results`). It is off by default: kept outputs (a segmentation
    network's logits are 40 MB at 512x1024) make every later call page-fault fresh memory for
    its own, which slowed a 0.23 s forward pass by about 10%.
    """
    names = list(calls)
    wait_for = sync or (lambda: None)
    samples: dict[str, list[float]] = {k: [] for k in names}
    waits: dict[str, list[float | None]] = {k: [] for k in names}
    results: dict[str, list[Any]] = {k: [] for k in names}
    inner = dict.fromkeys(names, 1)
    retaken = 0
    for _ in range(warmup):
        for k in names:
            wait_for()
            start = time.perf_counter()
            calls[k]()
            wait_for()
            elapsed = time.perf_counter() - start
            if min_time > 0 and elapsed < min_time:
                inner[k] = max(1, min(1000, int(min_time / max(elapsed, 1e-7))))

    def sample(k: str) -> tuple[float, float | None, Any]:
        n = inner[k]
        result = None
        wait_for()
        wait0 = cpu_wait()
        start = time.perf_counter()
        for _ in range(n):
            result = calls[k]()
        wait_for()
        wall = time.perf_counter() - start
        wait1 = cpu_wait()
        share = None if wait0 is None or wait1 is None else (wait1 - wait0) / max(wall, 1e-9)
        return wall / n, share, result

    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)] if names else names
        for k in order:
            best = sample(k)
            tries = 0
            while (
                max_wait is not None
                and best[1] is not None
                and best[1] > max_wait
                and tries < retakes
            ):
                tries += 1
                again = sample(k)
                if again[1] is not None and again[1] < best[1]:
                    best = again
            retaken += tries
            samples[k].append(best[0])
            waits[k].append(best[1])
            if keep_results:
                results[k].append(best[2])
    return Timings(
        samples=samples, waits=waits, retaken=retaken, max_wait=max_wait, results=results
    )


def time_calls(
    calls: dict[str, Callable[[], object]],
    *,
    repeats: int = 5,
    warmup: int = 1,
    min_time: float = 0.0,
    max_wait: float | None = None,
) -> dict[str, float]:
    """Median seconds per call of each function, the functions interleaved
    (:func:`measure_calls`)."""
    return measure_calls(
        calls, repeats=repeats, warmup=warmup, min_time=min_time, max_wait=max_wait
    ).median


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` for the block (None: leave it), then as it was."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
