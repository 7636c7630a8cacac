"""The explorer under load, smaller than the measurement in docs/reliability.md: two sessions at
once on generated records of 10,000 images, each cycling through every page over Streamlit's
own websocket protocol (``scripts/explorer_load.py``, which runs the full measurement: 8
sessions, 100,000 images).

Run: ``.venv/bin/python -m pytest -m slow tests/test_app_load.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_explorer_start import _script

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "explorer_load.py"

# url path -> plotly charts the page draws at least, on the generated records
CHARTS = {
    "": 0,
    "route_explorer": 1,
    "distributions": 3,
    "common_networks": 1,
    "special_cases": 5,
    "routing_vs_scale": 1,
    "latency": 0,
}


@pytest.fixture(scope="module")
def load():
    pytest.importorskip("streamlit")
    pytest.importorskip("websockets")
    return _script("explorer_load")


@pytest.fixture(scope="module")
def measured(load, tmp_path_factory):
    folder = tmp_path_factory.mktemp("explorer-load")
    return load.measure(folder, images=10_000, sessions=2, rounds=1)


def test_every_page_renders_for_every_session(measured) -> None:
    assert measured.failures == [], [(r.session, r.page, r.problem) for r in measured.failures]
    assert set(CHARTS) <= set(measured.pages)  # and any page added since (issue 27's)
    pages = {path or "overview" for path in measured.pages}
    for session in range(measured.sessions):
        for phase in (measured.load, measured.together):
            seen = {r.page for r in phase if r.session == session} - {"landing"}
            assert seen == pages, f"session {session} opened {sorted(seen)}"
    for run in [measured.first, *measured.cold]:
        assert run.errors == (), (run.page, run.errors)
        assert run.elements.get("heading", 0) >= 1, run.page  # the page drew its title
    drawn = {r.page: r.elements.get("plotly_chart", 0) for r in measured.cold}
    for path, charts in CHARTS.items():
        assert drawn[path or "overview"] >= charts, (path, drawn)


def test_page_times_and_memory_within_the_targets(load, measured) -> None:
    assert measured.p95 <= load.P95_TARGET, measured.summary()
    # the records are read once for the server, not once per session
    assert measured.memory_ratio <= load.MEMORY_TARGET, measured.summary()


def test_big_records_are_not_sent_whole_to_every_page(load, measured) -> None:
    """10,000 images: the image menu becomes a number box, the scatter a sample."""
    routes = next(r for r in measured.cold if r.page == "route_explorer")
    assert routes.elements.get("number_input", 0) >= 1
    scale = next(r for r in measured.cold if r.page == "routing_vs_scale")
    assert scale.elements.get("plotly_chart", 0) >= 1


def test_drawn_points_keep_every_model_and_stay_the_same() -> None:
    pd = pytest.importorskip("pandas")
    sys.path.insert(0, str(SCRIPT.parents[1] / "apps"))
    try:
        import _state
    finally:
        sys.path.remove(str(SCRIPT.parents[1] / "apps"))
    frame = pd.DataFrame({"model": ["a"] * 9000 + ["b"] * 300, "v": range(9300)})
    drawn = _state.drawn_points(frame, limit=1000)
    assert len(drawn) == 800  # 500 of a, all 300 of b
    assert drawn["model"].value_counts().to_dict() == {"a": 500, "b": 300}
    assert drawn.index.is_monotonic_increasing
    assert drawn.equals(_state.drawn_points(frame, limit=1000))
    small = frame.head(50)
    assert _state.drawn_points(small, limit=1000) is small


@pytest.mark.browser
def test_big_records_draw_in_a_real_browser(load, tmp_path) -> None:
    """Every page of the explorer on 10,000 images in Debian's chromium: no exception, the
    route explorer picks images by number, the scatter draws its sample."""
    from test_browser import PAGES, _opened, chromium, streamlit_server

    load.make_records(tmp_path, 10_000)
    with streamlit_server(tmp_path, tmp_path / "server.log") as url, chromium() as browser:
        for path, (title, _, charts) in PAGES.items():
            with _opened(browser, url, path, title) as page:
                if charts:
                    page.wait_for_selector(
                        '[data-testid="stPlotlyChart"] .main-svg', timeout=30_000
                    )
                assert page.locator('[data-testid="stPlotlyChart"]').count() >= charts, path
                assert page.locator('[data-testid="stException"]').count() == 0, path
                if path == "route_explorer":
                    assert page.locator('[data-testid="stNumberInput"]').count() >= 1
                if path == "routing_vs_scale":
                    assert page.get_by_text("Drawn: 5,000 of the 10,000 images").count() == 1
