"""The demo's job scheduler: steps that wait on each other's outputs, run side by side in worker
processes as their inputs become ready, ``jobs`` at a time, with "step k of n" progress lines and
an estimate of the time left.

A :class:`Step` is one job: a key, the keys it needs, a check whether its outputs are already up
to date (then it is reused, not run) and a call that gives the module-level function and plain
arguments a worker process runs. :func:`idle_estimate` is the wall time the same schedule would
take on idle cores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynviz.support.processes import spawn_pool

__all__ = ["LOG_FORMAT", "Step", "StepCall", "clock", "idle_estimate", "schedule"]

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(processName)s %(name)s: %(message)s"

StepCall = Callable[[int | None], tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]]
"""Position of the progress bar -> (function, args), built when the step is due."""


@dataclass
class Step:
    """One job of the schedule; the scheduler fills in its times, result and whether it was
    reused."""

    key: str
    title: str
    weight: float  # estimated seconds on one idle core (for the ETA)
    needs: tuple[str, ...]
    reuse: Callable[[], bool]  # True: the outputs are up to date, skip
    call: StepCall
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of the process that ran it
    reused: bool = False
    result: dict[str, Any] = field(default_factory=dict)


def clock(seconds: float) -> str:
    """``m:ss``."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


def idle_estimate(steps: dict[str, tuple[float, tuple[str, ...]]], lanes: int) -> float:
    """Wall seconds of the steps on ``lanes`` idle cores: list scheduling in the given order of
    ``{key: (cpu seconds, needs)}``, each step on the first free lane once its inputs are done
    (how :func:`schedule` runs them), one core per step."""
    free = [0.0] * max(1, lanes)
    done: dict[str, float] = {}
    pending = dict(steps)
    while pending:
        for key, (cpu, needs) in list(pending.items()):
            if all(n in done or n not in steps for n in needs):
                lane = min(range(len(free)), key=free.__getitem__)
                start = max([free[lane], *(done.get(n, 0.0) for n in needs)])
                free[lane] = done[key] = start + cpu
                del pending[key]
                break
        else:
            raise ValueError(f"steps wait on each other: {sorted(pending)}")
    return max(done.values(), default=0.0)


# Module-level functions with plain arguments: they run in worker processes.
def _init_worker(threads: int, log_path: str) -> None:
    """A worker process: torch threads, and its log lines into the chain's log file."""
    import torch

    torch.set_num_threads(threads)
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in ("PIL", "matplotlib", "fontTools"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _timed(function: Callable[..., dict[str, Any] | None], *args: Any) -> tuple[dict, float]:
    """Run a step; its result and the CPU seconds it took (all threads of this process)."""
    start = time.process_time()
    result = function(*args) or {}
    return result, time.process_time() - start


class _Progress:
    """Step k of n, the elapsed time and an estimate of the time left, from the steps' weights
    (estimated single-core seconds) scaled by the speed measured so far."""

    def __init__(self, steps: list[Step], jobs: int) -> None:
        self.total = len(steps)
        self.weights = {s.key: s.weight for s in steps}
        self.jobs = max(1, jobs)
        self.started = time.perf_counter()
        self.done: set[str] = set()
        self.measured = 0.0  # weight of the steps computed (not reused) so far
        self.reused = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        remaining = sum(w for k, w in self.weights.items() if k not in self.done)
        if self.measured > 0 and self.elapsed() > 5:
            return remaining * self.elapsed() / self.measured
        return remaining / self.jobs  # no measurement yet: the estimate itself

    def line(self, step: Step, what: str) -> str:
        return (
            f"[step {len(self.done)} of {self.total} done] {what} {step.title}; elapsed "
            f"{clock(self.elapsed())}, about {clock(self.left())} left"
        )

    def finish(self, step: Step) -> None:
        self.done.add(step.key)
        if step.reused:
            self.reused += step.weight
        else:
            self.measured += step.weight


def schedule(
    steps: list[Step],
    jobs: int,
    log_path: Path,
    threads: int,
    *,
    on_start: Callable[[str], None] | None = None,
) -> None:
    """Run the steps as their inputs become ready, ``jobs`` at a time (in worker processes when
    ``jobs`` > 1, each with ``threads`` torch threads and its log lines into ``log_path``).

    Args:
        steps: in order of priority (the longest first); each gets its times and result.
        on_start: called with a step's title as it starts.

    Raises:
        RuntimeError: steps whose inputs can never be ready; a failed step's own error.
    """
    if jobs > 1:
        with spawn_pool(jobs, initializer=_init_worker, initargs=(threads, str(log_path))) as pool:
            _run_steps(steps, jobs, pool, on_start)
    else:
        _run_steps(steps, jobs, None, on_start)


def _finished(step: Step, progress: _Progress, result: tuple[dict, float], started: float) -> None:
    step.result, step.cpu_seconds = result
    step.seconds = time.perf_counter() - started
    progress.finish(step)
    logger.info(progress.line(step, f"finished in {step.seconds:.0f} s:"))


def _run_steps(
    steps: list[Step],
    jobs: int,
    pool: ProcessPoolExecutor | None,
    on_start: Callable[[str], None] | None,
) -> None:
    progress = _Progress(steps, jobs)
    pending = {s.key: s for s in steps}
    running: dict[Future[tuple[dict, float]], tuple[Step, int, float]] = {}
    free = list(range(jobs))
    while pending or running:
        ready = [
            s for s in pending.values() if all(n in progress.done for n in s.needs)
        ]  # in the steps' order: the longest first
        for step in ready:
            if step.reuse():
                step.reused = True
                del pending[step.key]
                progress.finish(step)
                logger.info(progress.line(step, "reusing"))
                continue
            if not free:
                break
            lane = free.pop(0)
            del pending[step.key]
            logger.info(progress.line(step, "starting"))
            if on_start is not None:
                on_start(step.title)
            function, args = step.call(lane if pool is not None else None)
            started = time.perf_counter()
            if pool is None:
                _finished(step, progress, _timed(function, *args), started)
                free.append(lane)
                break  # re-evaluate what is ready
            running[pool.submit(_timed, function, *args)] = (step, lane, started)
        if pool is None or not running:
            if (
                pending
                and not running
                and not any(all(n in progress.done for n in s.needs) for s in pending.values())
            ):
                raise RuntimeError(f"chain steps cannot start: {sorted(pending)}")
            continue
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            step, lane, started = running.pop(future)
            free.append(lane)
            free.sort()
            _finished(step, progress, future.result(), started)  # a failed step raises here
