"""Issue 26, item 3: an explorer that opens at once, and whose clicks rerun only what they change.

* ``dynviz app`` preloads the explorer before its server answers (``dynviz.commands.app.serve``,
  ``_state.preload``): the server's log says so, and the first visit finds the records read;
* the Latency page's measure button and the Route explorer's attribution panel (its toggle, a
  click on its path grid) are ``st.fragment``s: driven over Streamlit's own websocket protocol
  as a browser drives it (``scripts/explorer_load.py``'s ``Session``), a click sends the
  fragment's id and the server reruns only that fragment: its run ends
  ``FINISHED_FRAGMENT_RUN_SUCCESSFULLY`` and every element it sends belongs to the fragment,
  none of the page around it (title, sidebar, image, route) is drawn again;
* ``scripts/explorer_start.py`` measures a cold start in a real browser (needs
  ``/usr/bin/chromium``; marked ``slow`` and ``browser``).

The server tests take about 10 s (one server for the module). Run:
``.venv/bin/python -m pytest tests/test_explorer_start.py`` (add ``-m "slow or not slow"`` for
the browser one).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from _records_fixture import shared_explorer_root

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def load():
    pytest.importorskip("streamlit")
    pytest.importorskip("websockets")
    return _script("explorer_load")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return shared_explorer_root(tmp_path_factory)


@pytest.fixture(scope="module")
def server(load, root, tmp_path_factory):
    """The explorer on the fixture's runs and records, started as ``dynviz app`` starts it:
    ``(url, server log)``."""
    log = tmp_path_factory.mktemp("explorer-start") / "server.log"
    with load.explorer_server(root, log) as (url, _):
        yield url, log


# ------------------------------------------------------------------------------ messages
def _drawn(messages: list) -> list[tuple[tuple[int, ...], str, object, str]]:
    """The elements and blocks a run sent: ``(delta path, kind, element, fragment id)``."""
    out = []
    for msg in messages:
        if msg.WhichOneof("type") != "delta":
            continue
        delta = msg.delta
        if delta.WhichOneof("type") == "new_element":
            element = delta.new_element
            kind = element.WhichOneof("type")
            out.append(
                (tuple(msg.metadata.delta_path), kind, getattr(element, kind), delta.fragment_id)
            )
        else:
            out.append(
                (tuple(msg.metadata.delta_path), delta.WhichOneof("type"), None, delta.fragment_id)
            )
    return out


def _status(messages: list) -> str:
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    return ForwardMsg.ScriptFinishedStatus.Name(messages[-1].script_finished)


def _widget(messages: list, kind: str, label: str) -> tuple[str, str]:
    """``(widget id, fragment id)`` of the ``kind`` element whose label starts with ``label``."""
    for _, what, element, fragment in _drawn(messages):
        if what == kind and element.label.startswith(label):
            return element.id, fragment
    raise AssertionError(f"no {kind} {label!r} drawn")


def _assert_only_the_fragment_ran(messages: list, fragment: str) -> list:
    """The run was the fragment's alone: it ended as a fragment run, and everything it sent
    belongs to the fragment. Returns what it drew."""
    assert fragment, "the widget is not in a fragment"
    assert _status(messages) == "FINISHED_FRAGMENT_RUN_SUCCESSFULLY"
    drawn = _drawn(messages)
    assert drawn, "the fragment drew nothing"
    outside = [(path, kind) for path, kind, _, frag in drawn if frag != fragment]
    assert not outside, f"elements of the page around the fragment were sent again: {outside}"
    sidebar = [path for path, _, _, _ in drawn if path[0] != 0]
    assert not sidebar, f"the sidebar ran again: {sidebar}"
    return drawn


def _kinds(drawn: list) -> list[str]:
    return [kind for _, kind, _, _ in drawn]


# ---------------------------------------------------------------------------------- start
def test_dynviz_app_preloads_before_it_answers(load, server) -> None:
    url, log = server
    said = log.read_text(encoding="utf-8")
    assert "dynviz app: preloaded in" in said and "preloading failed" not in said, said
    assert "imports" in said and "records" in said
    first, pages = load.first_visit(url)  # a new session's first page (test_app.py checks
    # in-process that it reads nothing: test_preload_leaves_nothing_to_read_for_the_first_page)
    assert first.ok, first.problem
    assert first.elements.get("heading", 0) >= 1
    # its tables (Markdown) and training curves (pictures drawn on the server)
    assert first.elements.get("markdown", 0) >= 2 and first.elements.get("imgs", 0) >= 1
    assert "latency" in pages and "route_explorer" in pages


def test_no_preload_starts_a_plain_streamlit() -> None:
    from dynviz.commands.app import build_command, explorer_script

    script = explorer_script()
    assert build_command(script, env={}, check_config_files=False)[1:5] == [
        "-m",
        "dynviz.commands.app",
        "run",
        str(script),
    ]
    plain = build_command(script, env={}, check_config_files=False, preload=False)
    assert plain[1:5] == ["-m", "streamlit", "run", str(script)]


def test_preload_failure_does_not_stop_the_server(tmp_path, monkeypatch) -> None:
    """A broken explorer folder (here: a ``_state`` that raises) is reported, not fatal."""
    from dynviz.commands.app import preload_explorer
    from dynviz.explorer import explorer_script

    (tmp_path / "explorer.py").write_text("")
    (tmp_path / "preload.py").write_text((explorer_script().parent / "preload.py").read_text())
    (tmp_path / "_state.py").write_text("def preload(root):\n    raise OSError('disk gone')\n")
    monkeypatch.delitem(sys.modules, "_state", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        result = preload_explorer(tmp_path / "explorer.py", str(tmp_path))
    finally:
        sys.modules.pop("_state", None)
    assert result["error"] == "OSError: disk gone" and "imports" in result


# ------------------------------------------------------------------------------ fragments
def test_latency_measure_reruns_only_its_fragment(load, server) -> None:
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    url, _ = server

    async def talk() -> tuple[list, list, str]:
        async with load.Session(url) as session:
            await session.open("")
            page = await session.exchange(session.rerun_message("latency"))
            button, fragment = _widget(page, "button", "Measure on this machine")
            click = WidgetState(id=button, trigger_value=True)
            measured = await session.exchange(
                session.rerun_message("latency", widgets=(click,), fragment_id=fragment)
            )
            return page, measured, fragment

    page, measured, fragment = asyncio.run(talk())
    assert _status(page) == "FINISHED_SUCCESSFULLY"
    assert "heading" in _kinds(_drawn(page))  # the whole page ran on opening it
    drawn = _assert_only_the_fragment_ran(measured, fragment)
    kinds = _kinds(drawn)
    # what the button measured, and nothing above it: no title, no pickers
    assert kinds.count("dataframe") >= 2, kinds
    assert "plotly_chart" in kinds and "metric" in kinds
    assert "selectbox" not in kinds and "number_input" not in kinds
    titles = [e.body for _, k, e, _ in drawn if k == "heading"]
    assert "Latency next to MACs" not in " ".join(titles)


def test_route_explorer_clicks_rerun_only_the_attribution(load, server) -> None:
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    url, _ = server

    def grid_click(drawn: list) -> tuple[str, list]:
        """The path grid's widget id and the customdata of its last path marker."""
        for _, kind, element, _ in drawn:
            if kind == "plotly_chart" and element.id:
                figure = json.loads(element.spec)
                paths = [t for t in figure["data"] if t.get("name") == "path"]
                if paths:
                    return element.id, list(paths[0]["customdata"][-1])
        raise AssertionError("no clickable path grid drawn")

    def caption(drawn: list) -> str:
        texts = [e.body for _, k, e, _ in drawn if k == "markdown" and "off by" in e.body]
        assert len(texts) == 1, texts
        return texts[0]

    async def talk() -> tuple[list, list, list, str]:
        async with load.Session(url) as session:
            await session.open("")
            page = await session.exchange(session.rerun_message("route_explorer"))
            toggle, fragment = _widget(page, "checkbox", "Why this route?")
            on = WidgetState(id=toggle, bool_value=True)
            shown = await session.exchange(
                session.rerun_message("route_explorer", widgets=(on,), fragment_id=fragment)
            )
            grid, point = grid_click(_drawn(shown))
            selection = {
                "selection": {
                    "points": [{"customdata": point, "curve_number": 1, "point_index": 0}],
                    "point_indices": [0],
                    "box": [],
                    "lasso": [],
                }
            }
            click = WidgetState(id=grid, string_value=json.dumps(selection))
            clicked = await session.exchange(
                session.rerun_message("route_explorer", widgets=(on, click), fragment_id=fragment)
            )
            return page, shown, clicked, fragment

    page, shown, clicked, fragment = asyncio.run(talk())
    assert _status(page) == "FINISHED_SUCCESSFULLY"
    page_kinds = _kinds(_drawn(page))
    assert "imgs" in page_kinds and "plotly_chart" in page_kinds  # the image and its route
    for run in (shown, clicked):
        drawn = _assert_only_the_fragment_ran(run, fragment)
        kinds = _kinds(drawn)
        assert "imgs" not in kinds  # the image, its prediction and the route were not redrawn
        labels = {e.label for _, k, e, _ in drawn if k == "metric"}
        assert {"Logit", "Alpha"} <= labels, labels
    # the click picked another node or path: its caption (bias + mean(map) = logit) changed
    assert caption(_drawn(clicked)) != caption(_drawn(shown))


# ------------------------------------------------------------------------- start script
@pytest.mark.slow
@pytest.mark.browser
def test_start_script_measures_a_cold_explorer(root, capsys) -> None:
    chromium = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    if not chromium.exists():
        pytest.skip(f"{chromium} is missing: run `bash scripts/install-browser.sh`")
    pytest.importorskip("playwright.sync_api")
    start = _script("explorer_start")
    argv = [str(root), "--repeats", "1", "--reloads", "1", "--json", "--target", "120"]
    assert start.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["repeats"] == 1 and result["failures"] == []
    for key in ("start_to_health_s", "health_to_first_page_s", "reload_s"):
        assert 0 < result[key]["median"] < 120, (key, result)
    assert len(result["load_average"]) == 3 and result["cores"] >= 1
