"""The explorer in a real browser on a demo-like folder: what ``dynviz demo`` writes (trained
runs of both dynamic models, the common network and the special cases, their records, the report
and the Table-1 comparison), made by :func:`dynviz.demo.chain.run_chain` with short trainings.

Every page renders, no page shows a Python traceback, the folder's Table 1 lists every network,
the Special cases page finds the trained special cases, the training-curve chart says what it
has, and an uploaded image in compare mode shows its figures as metrics.
Run: ``.venv/bin/python -m pytest -m browser tests/test_browser_demo.py``. With
``DYNVIZ_DEMO_ROOT=runs`` (a folder holding a finished ``make demo``'s ``demo/``) the tests read
that folder instead of making one, and with ``DYNVIZ_SCREENSHOTS=docs/screenshots`` the compare
test saves the README's screenshot of it (``demo_route_explorer_compare.png``).
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_browser import CHROMIUM, PAGES, _opened, _settle, chromium, streamlit_server

pytestmark = pytest.mark.browser

TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    """A demo folder with short trainings (about a minute on two cores), or the finished demo
    that ``$DYNVIZ_DEMO_ROOT`` names."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run `bash scripts/install-browser.sh`")
    given = os.environ.get("DYNVIZ_DEMO_ROOT")
    if given:
        if not (Path(given) / "demo" / "report.md").is_file():
            pytest.fail(f"DYNVIZ_DEMO_ROOT={given} holds no finished demo (demo/report.md)")
        return Path(given)
    from dynviz.demo.chain import QUICK, run_chain

    root = tmp_path_factory.mktemp("demo-like")
    settings = dataclasses.replace(
        QUICK, iters=40, static_iters=20, train_count=32, val_count=16, eval_limit=8
    )
    run_chain(root / "demo", settings, progress=False)
    return root


@pytest.fixture(scope="module")
def demo_server(demo_root, tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("streamlit-demo") / "server.log"
    with streamlit_server(demo_root, log) as url:
        yield url


@pytest.fixture(scope="module")
def demo_browser(demo_server) -> Iterator[object]:
    with chromium() as launched:
        yield launched


def _no_traceback(page) -> None:  # noqa: ANN001 - a playwright Page
    assert page.locator('[data-testid="stException"]').count() == 0
    text = page.locator('[data-testid="stAppViewContainer"]').inner_text()
    assert not TRACEBACK.search(text), text[:2000]


@pytest.mark.parametrize("path", list(PAGES), ids=[p or "overview" for p in PAGES])
def test_every_page_renders_on_demo_records(demo_browser, demo_server, path) -> None:  # noqa: ANN001
    title, test_ids, _ = PAGES[path]
    if path == "":  # the tiny demo logs each series once per run: values, not curve pictures
        test_ids = ("stMarkdown",)
    with _opened(demo_browser, demo_server, path, title) as page:
        for test_id in test_ids:
            page.wait_for_selector(f'[data-testid="{test_id}"]', timeout=30_000)
        _no_traceback(page)


def test_overview_lists_every_demo_network(demo_browser, demo_server) -> None:  # noqa: ANN001
    with _opened(demo_browser, demo_server, "", "Overview") as page:
        page.get_by_role("heading", name="Table 1: every network compared").wait_for()
        table = page.locator('[data-testid="stMarkdown"] table').first
        table.wait_for()
        # the comparison is a Markdown table: a row for every network of the demo
        assert table.locator("tbody tr").count() >= 5
        text = page.locator('[data-testid="stAppViewContainer"]').inner_text()
        assert "table1.csv" in text and "MMACs" in text
        assert "--eval-limit" in text  # the two mIoU figures are explained
        # every run is picked for the curves, and one-evaluation series say so
        assert page.get_by_text("One value per run").count() >= 1
        chosen = page.locator('[data-testid="stMultiSelect"]').first.inner_text()
        for run in ("raw", "budget", "common", "unet-like", "fcn-like"):
            assert run in chosen
        _no_traceback(page)


def test_special_cases_finds_the_demo_runs(demo_browser, demo_server) -> None:  # noqa: ANN001
    with _opened(demo_browser, demo_server, "special_cases", "Special cases") as page:
        text = page.locator('[data-testid="stAppViewContainer"]').inner_text()
        assert "No records or training runs of these networks here" not in text
        assert "Special cases trained here" in text
        # issue 23: Dynamic-Budget against every other network, with intervals and a figure
        assert "Dynamic-Budget against every other network" in text
        assert "excludes zero" in text and "relative to Dynamic-Budget" in text
        assert page.locator('[data-testid="stImage"], [data-testid="stPyplot"] img').count() >= 1
        _no_traceback(page)


def test_routing_vs_scale_states_the_adaptivity_figures(demo_browser, demo_server) -> None:  # noqa: ANN001
    with _opened(demo_browser, demo_server, "routing_vs_scale", "Routing versus scale") as page:
        text = page.locator('[data-testid="stAppViewContainer"]').inner_text()
        # the figures in words, each with its interval (the table beside them is a canvas)
        assert "dearest tenth" in text and "chance" in text
        assert "95% interval" in text and "Spearman rho" in text
        assert "stat_mean_object_area" not in text and "fine_share" not in text
        # the scatter's axes are named as the dropdowns name them (no "fine share")
        axes = page.locator('[data-testid="stPlotlyChart"] .g-ytitle').all_text_contents()
        assert axes and not any(a.strip() == "fine share" for a in axes)
        _no_traceback(page)


def test_compare_mode_marks_the_paths_that_differ(demo_browser, demo_server) -> None:  # noqa: ANN001
    with _opened(demo_browser, demo_server, "route_explorer", "Route explorer") as page:
        page.get_by_text("Compare two images").first.click()
        _settle(page)
        text = page.locator('[data-testid="stAppViewContainer"]').inner_text()
        assert "paths differ" in text and "open only for" in text
        # each image's figures in a line that wraps (a metric's big value is cut at half a page)
        assert page.locator('[data-testid="stMetric"]').count() == 0
        assert len(re.findall(r"Real cost [\d.]+ [KMG]?MACs", text)) == 2
        _no_traceback(page)
        shots = os.environ.get("DYNVIZ_SCREENSHOTS")
        if shots:  # the README's picture of the demo
            page.set_viewport_size({"width": 1280, "height": 1560})  # both routes in view
            _settle(page)
            page.screenshot(path=str(Path(shots) / "demo_route_explorer_compare.png"))


def test_upload_in_compare_mode_shows_metrics(demo_browser, demo_server) -> None:  # noqa: ANN001
    with _opened(demo_browser, demo_server, "route_explorer", "Route explorer") as page:
        page.get_by_text("Compare two images").first.click()
        _settle(page)
        page.get_by_text("Upload", exact=True).nth(1).click()  # the second slot
        page.wait_for_selector(
            '[data-testid="stFileUploaderDropzoneInput"]', state="attached", timeout=30_000
        )
        buffer = io.BytesIO()
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
        page.set_input_files(
            '[data-testid="stFileUploaderDropzoneInput"]',
            files=[{"name": "noise.png", "mimeType": "image/png", "buffer": buffer.getvalue()}],
        )
        page.get_by_text("noise.png (64x64)").first.wait_for(timeout=60_000)
        _settle(page)
        # half a page each: the figures are lines that wrap, not metrics whose values are cut
        assert page.locator('[data-testid="stMetric"]').count() == 0
        text = page.locator('[data-testid="stAppViewContainer"]').inner_text()
        assert text.count("Real cost") == 2 and "mIoU n/a" in text  # the upload has no label
        assert page.locator("h1, h2, h3").filter(has_text="MMACs").count() == 0  # no heading
        _no_traceback(page)
