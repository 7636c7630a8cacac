"""The explorer in a real browser: ``streamlit run`` on 127.0.0.1 and Debian chromium driven by
playwright. Every page opens without an exception and shows its figures; screenshots go to a
temporary folder, or to ``$DYNVIZ_SCREENSHOTS`` (e.g. ``docs/screenshots``) when set.

Needs ``/usr/bin/chromium`` (``bash scripts/install-browser.sh``); skipped without it. Never run
``playwright install``: the tests use the system chromium.
Run: ``.venv/bin/python -m pytest -m browser tests/test_browser.py``.
"""

from __future__ import annotations

import importlib.util
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from _records_fixture import shared_explorer_root
from PIL import Image

pytestmark = pytest.mark.browser


def _browser_module():
    """``scripts/browser.py`` (which chromium, with which flags), shared with
    ``scripts/explorer_start.py``."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "browser.py"
    spec = importlib.util.spec_from_file_location("dynviz_scripts_browser", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_BROWSER = _browser_module()
CHROMIUM = _BROWSER.CHROMIUM
chromium = _BROWSER.chromium
APP = Path(__file__).resolve().parents[1] / "apps" / "explorer.py"
VIEWPORT = {"width": 1280, "height": 800}

# url path -> (page title, test ids that must appear, how many plotly charts at least)
PAGES: dict[str, tuple[str, tuple[str, ...], int]] = {
    "": ("Overview", ("stImage",), 0),  # Markdown tables and the curves as pictures
    "route_explorer": ("Route explorer", ("stMetric", "stImage"), 1),
    "distributions": ("Distributions", ("stDataFrame",), 3),
    "common_networks": ("Common networks", ("stMetric", "stDownloadButton"), 1),
    "special_cases": ("Special cases", ("stDataFrame",), 5),
    "routing_vs_scale": ("Routing versus scale", ("stDataFrame",), 1),
    "latency": ("Latency next to MACs", ("stButton",), 0),
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer on {url} within {timeout:.0f} s")


@contextmanager
def streamlit_server(root: Path, log: Path) -> Iterator[str]:
    """``streamlit run apps/explorer.py`` on a free local port, showing ``root``; its URL."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run `bash scripts/install-browser.sh`")
    pytest.importorskip("playwright.sync_api")
    port = _free_port()
    env = {
        **os.environ,
        "DYNVIZ_APP_DIR": str(root),
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    }
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "viewer",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run `bash scripts/install-browser.sh`")
    root = shared_explorer_root(tmp_path_factory)
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    with streamlit_server(root, log) as url:
        yield url


@pytest.fixture(scope="module")
def browser(server) -> Iterator[object]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    wanted = os.environ.get("DYNVIZ_SCREENSHOTS")
    folder = Path(wanted) if wanted else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _settle(page, timeout: float = 60.0) -> None:  # noqa: ANN001 - a playwright Page
    """Wait until the script run is over (no running indicator, no spinner) and charts drew."""
    page.wait_for_selector('[data-testid="stAppViewContainer"]', timeout=timeout * 1000)
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline:
        busy = (
            page.locator('[data-testid="stStatusWidget"]').count()
            + page.locator('[data-testid="stSpinner"]').count()
        )
        quiet = quiet + 1 if busy == 0 else 0
        if quiet >= 4:  # two seconds without activity
            break
        time.sleep(0.5)
    page.wait_for_timeout(800)  # plotly's first layout pass


@contextmanager
def _opened(browser, server: str, path: str, title: str) -> Iterator[object]:  # noqa: ANN001
    """A new browser page on ``path``, settled after its heading ``title`` appeared; closed
    afterwards."""
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(f"{server}/{path}", wait_until="domcontentloaded")
        page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
        _settle(page)
        yield page
    finally:
        page.close()


@pytest.mark.parametrize("path", list(PAGES), ids=[p or "overview" for p in PAGES])
def test_page_renders(browser, server, shots, path) -> None:  # noqa: ANN001
    title, test_ids, charts = PAGES[path]
    with _opened(browser, server, path, title) as page:
        for test_id in test_ids:
            page.wait_for_selector(f'[data-testid="{test_id}"]', timeout=30_000)
        if charts:
            page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg', timeout=30_000)
        assert page.locator('[data-testid="stPlotlyChart"]').count() >= charts
        assert page.locator('[data-testid="stException"]').count() == 0
        name = path or "overview"
        page.screenshot(path=str(shots / f"{name}.png"))
        if charts:  # the first figure in view, for the docs
            page.locator('[data-testid="stPlotlyChart"]').first.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            page.screenshot(path=str(shots / f"{name}-figure.png"))


def test_bad_upload_shows_a_message(browser, server, shots) -> None:  # noqa: ANN001
    with _opened(browser, server, "route_explorer", "Route explorer") as page:
        page.get_by_text("Upload", exact=True).first.click()
        page.wait_for_selector(
            '[data-testid="stFileUploaderDropzoneInput"]', state="attached", timeout=30_000
        )
        page.set_input_files(
            '[data-testid="stFileUploaderDropzoneInput"]',
            files=[
                {
                    "name": "notes.png",
                    "mimeType": "image/png",
                    "buffer": b"these bytes are not a PNG",
                }
            ],
        )
        page.get_by_text("not an image").first.wait_for(timeout=30_000)
        assert page.locator('[data-testid="stException"]').count() == 0
        # a real image then runs through the model
        buffer = io.BytesIO()
        Image.fromarray(np.full((48, 64, 3), 120, dtype=np.uint8)).save(buffer, "PNG")
        page.set_input_files(
            '[data-testid="stFileUploaderDropzoneInput"]',
            files=[{"name": "grey.png", "mimeType": "image/png", "buffer": buffer.getvalue()}],
        )
        page.get_by_text("grey.png (48x64)").first.wait_for(timeout=60_000)
        _settle(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(shots / "route_explorer_upload.png"))


def test_compare_two_images(browser, server, shots) -> None:  # noqa: ANN001
    with _opened(browser, server, "route_explorer", "Route explorer") as page:
        page.get_by_text("Compare two images").first.click()
        page.wait_for_function(
            "document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .main-svg').length >= 4",
            timeout=60_000,
        )  # each chart draws two svg layers
        _settle(page)
        assert page.locator('[data-testid="stPlotlyChart"]').count() == 2
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(shots / "route_explorer_compare.png"))


def test_latency_measured_on_request(browser, server, shots) -> None:  # noqa: ANN001
    with _opened(browser, server, "latency", "Latency next to MACs") as page:
        page.get_by_role("button", name="Measure on this machine").click()
        page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg', timeout=60_000)
        _settle(page)
        assert page.locator('[data-testid="stDataFrame"]').count() == 2  # nodes, routes
        assert page.locator('[data-testid="stException"]').count() == 0
        page.mouse.move(5, 790)  # no tooltip over the page
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / "latency.png"))


def test_route_explorer_attribution(browser, server, shots) -> None:  # noqa: ANN001
    """The gate attribution panel: the toggle shows the path grid, the metrics and the map
    over the image; picking another node redraws them, and clicking a path on the grid picks it."""
    with _opened(browser, server, "route_explorer", "Route explorer") as page:
        page.get_by_text("Why this route? Gate attribution maps").first.click()
        page.get_by_role("heading", name="Why this route").first.wait_for(timeout=60_000)
        page.wait_for_function(
            "document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .main-svg').length >= 6",
            timeout=60_000,
        )  # route, path grid, map: two svg layers each
        _settle(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        labels = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
        assert {"Logit", "Alpha", "Top 10% share"} <= {label.strip() for label in labels}
        # the map: a heatmap layer over the image
        assert (
            page.locator(
                '[data-testid="stPlotlyChart"] .heatmaplayer, [data-testid="stPlotlyChart"] image'
            ).count()
            >= 1
        )
        caption = page.get_by_text("off by").first.inner_text()
        page.screenshot(path=str(shots / "route_explorer_attribution.png"))
        # click a path marker of the grid (the plotly chart whose trace is named "path")
        grid = page.locator('[data-testid="stPlotlyChart"]').nth(1)
        grid.scroll_into_view_if_needed()
        points = grid.locator(".scatterlayer .trace").nth(1).locator("path.point")
        assert points.count() > 1
        points.last.click(force=True)
        page.wait_for_timeout(500)
        _settle(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        after = page.get_by_text("off by").first.inner_text()
        assert after != caption  # another path: another logit and map
        page.locator('[data-testid="stPlotlyChart"]').nth(2).scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / "route_explorer_attribution_click.png"))
