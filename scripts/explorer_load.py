"""The explorer under load: concurrent sessions cycling through every page, measured.

Writes generated records of N images (``dynviz.bench.hooks.generated_records``, written with
``dynviz.record.write_records``) into a folder, starts the explorer on it as ``dynviz app DIR``
does (``streamlit run apps/explorer.py`` on 127.0.0.1, after the explorer is preloaded:
``dynviz.commands.app.serve``; ``--no-preload`` as ``dynviz app --no-preload``, where the first
visitor reads the records), and drives it with Streamlit's own
protocol: each session is a websocket on ``/_stcore/stream`` that sends the ``rerun_script``
message a browser sends when a page is opened, and reads the server's messages until the run
finishes. A page's time is from the request to the server's ``script_finished``: what a user
waits for before the page is complete, less the browser's drawing.

Four phases:

1. **cold**: on a fresh server, one session opens the landing page (it reads the records) and
   then every page once (filling the caches);
2. **one session**: a session cycles through every page ``--rounds`` times (warm);
3. **load**: ``--sessions`` sessions at once, each cycling through every page ``--rounds``
   times, starting on a different page;
4. **all at once**: a second fresh server, which ``--sessions`` sessions reach at the same
   moment, each cycling through every page once (the records must still be read once).

Each session first opens the landing page (its run is named "landing").
A page renders when its run finishes successfully with no exception element. The server's
resident memory (the streamlit process) is sampled every 0.1 s throughout.

Run::

    .venv/bin/python scripts/explorer_load.py --sessions 8 --images 100000

It prints the figures and exits 1 when a page failed or a target was missed (``--p95`` seconds
for the 95th-percentile page time under load, ``--memory`` for :attr:`LoadResult.memory_ratio`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger("explorer_load")

P95_TARGET = 3.0  # seconds, the target on 2 cores
MEMORY_TARGET = 1.5  # peak RSS under load / peak RSS with one session: records cached once
STREAM = "/_stcore/stream"


# -------------------------------------------------------------------------------- records
def make_records(folder: Path, images: int, model: str = "tiny", *, seed: int = 0) -> Path:
    """Generated records of ``images`` images of ``model`` under ``folder/records/generated``
    (each path active with its own probability, as in ``dynviz bench`` section f)."""
    from dynviz.bench.hooks import generated_records
    from dynviz.record import Sidecar, write_records

    gates, frame, config = generated_records(images, model, seed=seed)
    sidecar = Sidecar(
        name=f"generated-{model}",
        config_dict=config.to_dict(),
        dynamic=True,
        num_classes=int(config.num_classes),
        threshold=float(config.active_threshold),
        input_sizes=((1024, 2048),),
        num_images=int(len(frame)),
    )
    out = Path(folder) / "records" / "generated"
    write_records(out, gates, frame, sidecar)
    return out


# --------------------------------------------------------------------------------- server
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)  # explorer_start.py times the answer to this resolution
    raise TimeoutError(f"streamlit did not answer on {url} within {timeout:.0f} s")


@contextmanager
def explorer_server(
    root: Path, log: Path, *, timeout: float = 120.0, preload: bool = True
) -> Iterator[tuple[str, int]]:
    """The explorer on ``root``, as ``dynviz app ROOT`` starts it (``preload``: the explorer
    preloaded before the server answers; False: ``dynviz app --no-preload``), on a free local
    port: ``(url, pid)``."""
    from dynviz.commands.app import build_command
    from dynviz.explorer import APP_DIR_ENV, explorer_script

    port = _free_port()
    env = {**os.environ, APP_DIR_ENV: str(root), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    command = build_command(
        explorer_script(),
        ["--server.fileWatcherType", "none"],
        address="127.0.0.1",
        port=port,
        headless=True,
        env=env,
        check_config_files=False,
        preload=preload,
    )
    with open(log, "ab") as out:  # one log across the repeats of a measurement
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, timeout)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class MemorySampler:
    """The resident memory of a process, sampled on a thread."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        import psutil

        self._process = psutil.Process(pid)
        self._every = every
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def rss(self) -> int:
        """The memory now, in bytes (the server process: the pages start no other process unless
        a latency measurement is asked for, and listing children reads all of ``/proc``)."""
        import psutil

        try:
            return int(self._process.memory_info().rss)
        except psutil.Error:
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self.rss()
            with self._lock:
                self._peak = max(self._peak, value)
            self._stop.wait(self._every)

    def cpu(self) -> float:
        """The CPU seconds (user and system) the process has used so far."""
        import psutil

        try:
            times = self._process.cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    def reset_peak(self) -> None:
        """Start a new peak from the memory now."""
        with self._lock:
            self._peak = self.rss()

    def peak(self) -> int:
        with self._lock:
            return max(self._peak, self.rss())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------- sessions
@dataclass
class PageRun:
    """One page opened by one session."""

    session: int
    page: str
    seconds: float
    ok: bool
    problem: str = ""
    elements: dict[str, int] = field(default_factory=dict)  # element kind -> how many drawn
    errors: tuple[str, ...] = ()  # st.error messages (a records problem, not a crash)


@dataclass
class Session:
    """A browser tab as the server sees it: one websocket, Streamlit's messages."""

    url: str
    index: int = 0
    pages: dict[str, str] = field(default_factory=dict)  # url path -> page script hash
    _socket: object = None

    async def __aenter__(self) -> Session:
        from websockets.asyncio.client import connect

        ws_url = self.url.replace("http://", "ws://") + STREAM
        self._socket = await connect(
            ws_url, subprotocols=["streamlit"], max_size=None, open_timeout=60
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._socket.close()

    async def exchange(self, message: object, *, timeout: float = 300.0) -> list[object]:
        """Send a ``BackMsg`` and read the server's ``ForwardMsg``s until its run finishes (the
        ``script_finished`` message, last in the list)."""
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        await self._socket.send(message.SerializeToString())
        received = []
        while True:
            raw = await asyncio.wait_for(self._socket.recv(), timeout)
            msg = ForwardMsg()
            msg.ParseFromString(raw)
            received.append(msg)
            kind = msg.WhichOneof("type")
            if kind == "navigation":
                self.pages = {p.url_pathname: p.page_script_hash for p in msg.navigation.app_pages}
            elif kind == "script_finished":
                return received

    def rerun_message(
        self, path: str, *, widgets: tuple[object, ...] = (), fragment_id: str = ""
    ) -> object:
        """The ``rerun_script`` message a browser sends to open the page at url ``path`` ("" is
        the default page), or, with ``widgets`` (``WidgetState``s), when a widget changed;
        ``fragment_id``: the change was in that fragment, which alone reruns."""
        from streamlit.proto.BackMsg_pb2 import BackMsg

        message = BackMsg()
        message.rerun_script.query_string = ""
        message.rerun_script.page_name = path
        message.rerun_script.page_script_hash = self.pages.get(path, "")
        message.rerun_script.widget_states.widgets.extend(widgets)
        if fragment_id:
            message.rerun_script.fragment_id = fragment_id
        return message

    async def open(self, path: str, *, timeout: float = 300.0) -> PageRun:
        """Open the page at url ``path`` ("" is the default page) as a browser does, and wait
        until its run is over."""
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        start = time.perf_counter()
        received = await self.exchange(self.rerun_message(path), timeout=timeout)
        seconds = time.perf_counter() - start
        problems: list[str] = []
        errors: list[str] = []
        elements: dict[str, int] = {}
        for msg in received:
            kind = msg.WhichOneof("type")
            if kind == "page_not_found":
                problems.append(f"page not found: {path!r}")
            elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                element = msg.delta.new_element
                what = element.WhichOneof("type")
                elements[what] = elements.get(what, 0) + 1
                if what == "exception":
                    problems.append(f"{element.exception.type}: {element.exception.message}")
                elif what == "alert" and element.alert.format == element.alert.ERROR:
                    errors.append(element.alert.body)
            elif kind == "script_finished":
                status = ForwardMsg.ScriptFinishedStatus.Name(msg.script_finished)
                if status != "FINISHED_SUCCESSFULLY":
                    problems.append(status)
        return PageRun(
            self.index,
            path or "overview",
            seconds,
            not problems,
            "; ".join(problems),
            elements,
            tuple(errors),
        )


async def _cycle(url: str, index: int, rounds: int, order: list[str]) -> list[PageRun]:
    """One session: open the default page (its run is named "landing"), then every page
    ``rounds`` times starting at page ``index`` of ``order``."""
    async with Session(url, index) as session:
        landing = await session.open("")  # a browser's first request
        landing.page = "landing"
        runs = [landing]
        shifted = order[index % len(order) :] + order[: index % len(order)]
        for _ in range(rounds):
            for path in shifted:
                runs.append(await session.open(path))
    return runs


def first_visit(url: str) -> tuple[PageRun, list[str]]:
    """The first page opened on a fresh server (it reads the records), and the url paths of
    the explorer's pages ("" for the default) that the server sent."""

    async def ask() -> tuple[PageRun, list[str]]:
        async with Session(url) as session:
            first = await session.open("")
            return first, sorted(session.pages, key=lambda p: (p != "", p))

    return asyncio.run(ask())


def drive(url: str, sessions: int, rounds: int, order: list[str]) -> list[PageRun]:
    """``sessions`` sessions at once, each cycling through ``order`` ``rounds`` times."""

    async def all_sessions() -> list[PageRun]:
        results = await asyncio.gather(*(_cycle(url, i, rounds, order) for i in range(sessions)))
        return [run for runs in results for run in runs]

    return asyncio.run(all_sessions())


# ------------------------------------------------------------------------------ measuring
@dataclass
class LoadResult:
    """The figures of one measurement."""

    images: int
    model: str
    sessions: int
    rounds: int
    pages: list[str]
    start_s: float
    first: PageRun
    cold: list[PageRun]
    single: list[PageRun]
    load: list[PageRun]
    rss_idle: int
    rss_first: int  # peak while one session read the records and opened every page
    rss_single: int
    rss_load: int
    together: list[PageRun]  # a fresh server, every session arriving at once
    rss_together: int
    cpu_single: float  # server CPU seconds of the one-session phase
    cpu_load: float  # ... and of the load phase
    load_average: tuple[float, float, float]
    cores: int

    @property
    def failures(self) -> list[PageRun]:
        runs = [self.first, *self.cold, *self.single, *self.load, *self.together]
        return [r for r in runs if not r.ok]

    def percentile(self, runs: list[PageRun], q: float) -> float:
        return float(np.percentile([r.seconds for r in runs], q)) if runs else float("nan")

    @property
    def p95(self) -> float:
        return self.percentile(self.load, 95)

    @property
    def memory_ratio(self) -> float:
        """Peak memory under load over the peak with one session (warm), and the peak of a
        fresh server that every session reaches at once over the peak of one session reading
        the records: the larger. Records read per session would multiply either."""
        if not (self.rss_single and self.rss_first):
            return float("nan")
        return max(self.rss_load / self.rss_single, self.rss_together / self.rss_first)

    def per_page(self) -> dict[str, dict[str, float]]:
        """Per page: the cold time, the median with one session, p95 and max under load."""
        out: dict[str, dict[str, float]] = {}
        for page in dict.fromkeys(r.page for r in self.cold + self.load):
            load = [r for r in self.load if r.page == page]
            single = [r for r in self.single if r.page == page]
            out[page] = {
                "cold_s": max((r.seconds for r in self.cold if r.page == page), default=0.0),
                "single_median_s": self.percentile(single, 50),
                "load_p95_s": self.percentile(load, 95),
                "load_max_s": max((r.seconds for r in load), default=float("nan")),
            }
        return out

    def summary(self) -> dict[str, object]:
        mib = 1 << 20
        return {
            "images": self.images,
            "model": self.model,
            "sessions": self.sessions,
            "rounds": self.rounds,
            "pages": len(self.pages),
            "page_opens_under_load": len(self.load),
            "failures": len(self.failures),
            "server_start_s": round(self.start_s, 2),
            "first_page_s": round(self.first.seconds, 2),
            "cold_total_s": round(sum(r.seconds for r in self.cold), 2),
            "single_p95_s": round(self.percentile(self.single, 95), 3),
            "load_p50_s": round(self.percentile(self.load, 50), 3),
            "load_p95_s": round(self.p95, 3),
            "load_max_s": round(max((r.seconds for r in self.load), default=0.0), 3),
            "rss_idle_mib": round(self.rss_idle / mib),
            "rss_single_peak_mib": round(self.rss_single / mib),
            "rss_load_peak_mib": round(self.rss_load / mib),
            "rss_first_visit_peak_mib": round(self.rss_first / mib),
            "rss_all_at_once_peak_mib": round(self.rss_together / mib),
            "all_at_once_first_page_max_s": round(
                max((r.seconds for r in self.together if r.page == "landing"), default=0.0), 2
            ),
            "memory_ratio": round(self.memory_ratio, 2),
            "server_cpu_per_page_single_s": round(self.cpu_single / max(1, len(self.single)), 3),
            "server_cpu_per_page_load_s": round(self.cpu_load / max(1, len(self.load)), 3),
            "load_average": [round(v, 2) for v in self.load_average],
            "cores": self.cores,
        }


def measure(
    folder: Path,
    *,
    images: int,
    sessions: int,
    rounds: int = 2,
    model: str = "tiny",
    preload: bool = True,
) -> LoadResult:
    """Generate the records under ``folder`` (unless there already), start the explorer
    (``preload``: as ``dynviz app`` does; False: as ``dynviz app --no-preload``) and run the
    phases of the module docstring."""
    folder = Path(folder)
    if not (folder / "records" / "generated").is_dir():
        started = time.perf_counter()
        make_records(folder, images, model)
        logger.info("records of %d images written in %.1f s", images, time.perf_counter() - started)
    start = time.perf_counter()
    with explorer_server(folder, folder / "server.log", preload=preload) as (url, pid):
        start_s = time.perf_counter() - start
        sampler = MemorySampler(pid)
        try:
            rss_idle = sampler.rss()
            first, order = first_visit(url)
            cold = drive(url, 1, 1, order)
            rss_first = sampler.peak()
            sampler.reset_peak()
            cpu = sampler.cpu()
            single = drive(url, 1, rounds, order)
            rss_single, cpu_single = sampler.peak(), sampler.cpu() - cpu
            sampler.reset_peak()
            cpu = sampler.cpu()
            load = drive(url, sessions, rounds, order)
            rss_load, cpu_load = sampler.peak(), sampler.cpu() - cpu
        finally:
            sampler.close()
    with explorer_server(folder, folder / "server-together.log", preload=preload) as (url, pid):
        sampler = MemorySampler(pid)
        try:
            together = drive(url, sessions, 1, order)
            rss_together = sampler.peak()
        finally:
            sampler.close()
    return LoadResult(
        images,
        model,
        sessions,
        rounds,
        order,
        start_s,
        first,
        cold,
        single,
        load,
        rss_idle,
        rss_first,
        rss_single,
        rss_load,
        together,
        rss_together,
        cpu_single,
        cpu_load,
        os.getloadavg(),
        os.cpu_count() or 0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--model", default="tiny", help="config of the generated records")
    parser.add_argument("--rounds", type=int, default=2, help="cycles through every page")
    parser.add_argument("--dir", type=Path, help="keep the records and server log here")
    parser.add_argument("--p95", type=float, default=P95_TARGET, help="target, seconds")
    parser.add_argument("--memory", type=float, default=MEMORY_TARGET, help="target ratio")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    parser.add_argument(
        "--no-preload",
        dest="preload",
        action="store_false",
        help="start the servers as `dynviz app --no-preload` (the first visitor reads)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="explorer-load-") as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        result = measure(
            folder,
            images=args.images,
            sessions=args.sessions,
            rounds=args.rounds,
            model=args.model,
            preload=args.preload,
        )
    summary = result.summary()
    if args.json:
        drawn = {r.page: r.elements for r in result.cold}
        doc = {**summary, "per_page": result.per_page(), "drawn": drawn}
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
    else:
        for key, value in summary.items():
            sys.stdout.write(f"{key:>24}: {value}\n")
        sys.stdout.write(f"{'page':>24}  cold s  1-session median s  load p95 s  load max s\n")
        for page, row in result.per_page().items():
            sys.stdout.write(
                f"{page:>24}  {row['cold_s']:6.2f}  {row['single_median_s']:18.3f}  "
                f"{row['load_p95_s']:10.3f}  {row['load_max_s']:10.3f}\n"
            )
    for run in [result.first, *result.cold]:
        for error in run.errors:
            sys.stdout.write(f"error shown on {run.page}: {error}\n")
    for run in result.failures:
        sys.stdout.write(f"FAILED: session {run.session}, page {run.page}: {run.problem}\n")
    missed = result.failures or result.p95 > args.p95 or result.memory_ratio > args.memory
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
