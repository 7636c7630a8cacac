"""The Streamlit explorer under ``AppTest`` (no browser): every page renders from small records,
the common-network threshold changes the extracted network, bad uploads get a message (never a
traceback); plus ``dynviz app`` and the upload checks of :mod:`dynviz.record.uploads`."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _records_fixture import shared_explorer_root
from PIL import Image

pytest.importorskip("streamlit")
pytest.importorskip("plotly")

import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from dynviz.cli import main as cli  # noqa: E402
from dynviz.commands.app import APP_DIR_ENV, build_command, explorer_script  # noqa: E402
from dynviz.record.uploads import (  # noqa: E402
    UploadError,
    colorize,
    fit_size,
    overlay,
    read_upload,
)

APP = explorer_script()
TIMEOUT = 60

# page file -> (title, element types that must be there, plotly charts at least)
PAGES: dict[str, tuple[str, tuple[str, ...], int]] = {
    # the Overview's tables are Markdown and its curves pictures (a first page loads no grid
    # or chart code: issue 26); the charts come with the Interactive toggle
    "views/overview.py": ("Overview", ("markdown", "image", "toggle", "download_button"), 0),
    "views/route_explorer.py": ("Route explorer", ("metric", "image", "selectbox"), 1),
    "views/distributions.py": ("Distributions", ("dataframe", "multiselect", "slider"), 3),
    "views/common_networks.py": ("Common networks", ("metric", "slider", "download_button"), 1),
    "views/special_cases.py": ("Special cases", ("dataframe", "radio"), 5),
    "views/routing_vs_scale.py": ("Routing versus scale", ("dataframe", "selectbox"), 1),
    "views/latency.py": ("Latency next to MACs", ("button", "selectbox", "number_input"), 0),
}


def _png(height: int = 40, width: int = 56, *, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(buffer, "PNG")
    return buffer.getvalue()


def _types(at: AppTest) -> set[str]:
    found: set[str] = set()

    def walk(node) -> None:  # noqa: ANN001 - element tree nodes
        children = getattr(node, "children", None)
        if isinstance(children, dict):
            for child in children.values():
                found.add(child.type)
                walk(child)

    walk(at._tree)
    return found


def _charts(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def _markdown_tables(at: AppTest) -> list[pd.DataFrame]:
    """The Markdown tables of a page (``_state.markdown_table``), their cells as text."""
    tables = []
    for element in at.markdown:
        rows = [line for line in element.value.splitlines() if line.startswith("|")]
        if len(rows) < 2 or not set(rows[1]) <= set("|:- "):
            continue
        cells = [
            [re.sub(r"\\(.)", r"\1", c.strip()) for c in re.split(r"(?<!\\)\|", row)[1:-1]]
            for row in rows
        ]
        tables.append(pd.DataFrame(cells[2:], columns=cells[0]))
    return tables


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _amount(text: str) -> float:
    """The MACs of a metric such as ``9.997 MMACs``, in GMACs."""
    value, unit = text.split()
    return float(value) * {"GMACs": 1.0, "MMACs": 1e-3, "KMACs": 1e-6}[unit]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return shared_explorer_root(tmp_path_factory)


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Streamlit's caches outlive AppTest instances in one process: start each test empty."""
    st.cache_data.clear()
    st.cache_resource.clear()
    yield


@pytest.fixture
def app(root, monkeypatch) -> AppTest:
    monkeypatch.setenv(APP_DIR_ENV, str(root))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _open(at: AppTest, page: str) -> AppTest:
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# --------------------------------------------------------------------------------- pages
@pytest.mark.parametrize("page", list(PAGES), ids=[Path(p).stem for p in PAGES])
def test_every_page_renders(app, page) -> None:
    title, types, charts = PAGES[page]
    at = _open(app, page)
    assert [t.value for t in at.title] == [title]
    assert not at.error, [e.value for e in at.error]
    missing = set(types) - _types(at)
    assert not missing, f"{page} lacks {missing}"
    assert len(at.get("plotly_chart")) >= charts
    # the shared sidebar found the fixture's run and records
    assert "1 run(s) and 3 records folder(s)" in " ".join(c.value for c in at.sidebar.caption)


def test_overview_compares_the_records(app) -> None:
    at = _open(app, "views/overview.py")
    table = _markdown_tables(at)[0]
    assert set(table["model"]) == {"tiny", "two-chains", "fcn32s"}
    # 64x64 records cost millions of MACs: the table says MMACs (dynviz.units)
    assert (table["real MMACs avg"].astype(float) > 0).all()
    assert (table["params"].str.replace(",", "").astype(int) > 0).all()
    assert "mIoU" in table.columns and "real max" in table.columns and "real min" in table.columns
    assert table.loc[table["model"] == "tiny", "weights"].item() == "iteration 40"


def test_overview_draws_the_curves_as_pictures_until_asked_for_charts(app) -> None:
    """Issue 26: the Overview's first drawing loads no charting code; the Interactive toggle
    brings the same series back as charts."""
    at = _open(app, "views/overview.py")
    pictures = [url for element in at.get("image") for url in element.value]
    assert pictures and all(u.startswith("data:image/svg+xml;base64,") for u in pictures)
    svg = base64.b64decode(pictures[0].split(",", 1)[1]).decode()
    assert "<svg" in svg and "runs/tiny" in svg  # the legend names the run
    assert not at.get("vega_lite_chart")
    at.toggle(key="overview_interactive").set_value(True).run()
    assert not at.exception
    assert len(at.get("vega_lite_chart")) == len(pictures) and not at.get("image")


def test_markdown_tables_format_and_escape_their_cells(root, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(APP.parent))
    import _state

    frame = pd.DataFrame(
        {
            "name": ["a|b", "*c*", None],
            "score": [0.123456, float("nan"), 2.0],
            "count": pd.array([1234567, 2, None], dtype="Int64"),
            "kept": [True, False, True],
        }
    )
    text = _state.markdown_table(frame, {"score": "%.2f", "count": "localized"})
    lines = text.splitlines()
    assert lines[0] == "| name | score | count | kept |"
    assert lines[1] == "| :--- | ---: | ---: | :--- |"  # numbers to the right
    assert lines[2] == "| a\\|b | 0.12 | 1,234,567 | yes |"
    assert lines[3] == "| \\*c\\* |  | 2 | no |"  # no emphasis; NaN empty
    assert lines[4] == "|  | 2.00 |  | yes |"  # a missing count too


def test_sidebar_defaults_to_dynamic_records(app) -> None:
    assert app.sidebar.selectbox(key="records_label").value == "records/tiny"


def test_route_explorer_shows_the_recorded_route(app) -> None:
    at = _open(app, "views/route_explorer.py")
    metrics = _metrics(at)
    assert metrics["Real cost"].endswith(" MMACs") and _amount(metrics["Real cost"]) > 0
    assert _amount(metrics["Expected cost"]) > 0
    assert len(at.get("image")) >= 1
    (spec,) = _charts(at)
    assert "paths open" in spec["layout"]["title"]["text"]
    widths = {
        t["line"]["width"]
        for t in spec["data"]
        if t.get("mode") == "lines" and "width" in t.get("line", {})
    }
    assert len(widths) > 1  # width follows alpha: open and closed paths differ


def test_route_explorer_compares_two_images(app) -> None:
    at = _open(app, "views/route_explorer.py")
    at.toggle(key="explorer_compare").set_value(True).run()
    assert not at.exception
    assert at.selectbox(key="explorer_image_1").value != at.selectbox(key="explorer_image_0").value
    charts = _charts(at)
    titles = [c["layout"]["title"]["text"] for c in charts]
    assert len(titles) == 2 and titles[0] != titles[1]
    # issue 23: the paths that differ are listed and marked on both routes, the legends sit
    # under the grids, and the costs keep their unit
    (said,) = [m.value for m in at.markdown if "paths differ" in m.value]
    count = int(said.split("**")[1].split()[0])
    bands = [
        [t for t in c["data"] if t.get("name") == "open in only one of the two images"]
        for c in charts
    ]
    if count:
        assert all(len(b) == 1 for b in bands)
        assert sum(x is None for x in bands[0][0]["x"]) == count  # one segment per path
    assert all(c["layout"]["legend"]["orientation"] == "h" for c in charts)
    assert not at.metric  # half a page cuts a metric's value ("5.19 ..."): lines that wrap
    costs = [m.value for m in at.markdown if m.value.startswith("**Real cost**")]
    pattern = re.compile(r"\*\*Real cost\*\* [\d.]+ [KMG]?MACs")
    assert len(costs) == 2 and all(pattern.search(c) for c in costs)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("notes.png", b"this is not an image at all", "not an image"),
        ("cut.png", _png(64, 64)[:200], "truncated or corrupt"),
        ("empty.png", b"", "empty"),
    ],
    ids=["not-an-image", "truncated", "empty"],
)
def test_bad_upload_gives_a_message(app, name, data, message) -> None:
    at = _open(app, "views/route_explorer.py")
    at.radio(key="explorer_source_0").set_value("Upload").run()
    at.file_uploader(key="explorer_upload_0").set_value((name, data, "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and message in errors[0] and name in errors[0]
    assert not at.get("plotly_chart")


def test_too_large_upload_gives_a_message(app) -> None:
    buffer = io.BytesIO()
    Image.new("L", (5000, 4000)).save(buffer, "PNG")  # 20 megapixels, a few KiB
    at = _open(app, "views/route_explorer.py")
    at.radio(key="explorer_source_0").set_value("Upload").run()
    at.file_uploader(key="explorer_upload_0").set_value(
        ("big.png", buffer.getvalue(), "image/png")
    ).run()
    assert not at.exception
    (error,) = [e.value for e in at.error]
    assert "too large" in error and "5000x4000" in error


def test_good_upload_runs_the_model(app) -> None:
    at = _open(app, "views/route_explorer.py")
    at.radio(key="explorer_source_0").set_value("Upload").run()
    at.file_uploader(key="explorer_upload_0").set_value(("photo.png", _png(), "image/png")).run()
    assert not at.exception and not at.error
    assert _amount(_metrics(at)["Real cost"]) > 0
    (spec,) = _charts(at)
    assert spec["layout"]["title"]["text"].startswith("photo.png:")
    # issue 23: an upload is told what the model knows, and the prediction has a class legend
    (note,) = [i.value for i in at.info if "uploaded image" in i.value]
    assert "synthetic" in note
    legends = [m.value for m in at.markdown if "background:rgb(" in m.value]
    assert legends and "background" in legends[0]  # the class names of the records


def test_threshold_slider_changes_the_common_network(app) -> None:
    at = _open(app, "views/common_networks.py")
    assert at.slider(key="common_threshold").value == pytest.approx(0.95)
    strict = _metrics(at)
    strict_yaml = at.code[0].value
    at.slider(key="common_threshold").set_value(0.3).run()
    assert not at.exception and not at.error
    loose = _metrics(at)
    assert int(loose["Open paths"]) > int(strict["Open paths"])
    assert loose["Parameters"] != strict["Parameters"]
    assert _amount(loose["Cost at 64x64"]) > _amount(strict["Cost at 64x64"])
    assert at.code[0].value != strict_yaml
    assert "paths:" in at.code[0].value and "space:" in at.code[0].value


def test_latency_page_times_the_nodes_on_request(app) -> None:
    at = _open(app, "views/latency.py")
    assert not at.dataframe and at.info  # nothing is timed before the button is pressed
    at.number_input(key="latency_h").set_value(64)
    at.number_input(key="latency_w").set_value(64).run()
    at.button(key="latency_measure").click().run()
    assert not at.exception, [e.value for e in at.exception]
    nodes = at.dataframe[0].value
    assert set(nodes["component"]) >= {"op", "gate", "lateral"}
    assert (nodes["ms"] > 0).all() and (nodes["mmacs"] > 0).all()
    assert len(_charts(at)) == 1 and "x" in _metrics(at)["Cell op, slowest / fastest scale (time)"]
    # the selected records' space is not layer16: no special case, but their common network
    routes = at.dataframe[1].value
    assert routes["route"].tolist() == ["every path open, no gates", "common-95 of tiny"]
    assert routes["time_ratio"].iloc[0] == 1.0 and 0 < routes["gmacs_ratio"].iloc[1] < 1
    at.selectbox(key="latency_space").set_value("layer16").run()
    assert at.info and len(at.dataframe) == 0  # another space: measure again


def test_distributions_filters(app) -> None:
    at = _open(app, "views/distributions.py")
    before = _charts(at)[0]
    at.pills(key="dist_directions").set_value(["keep"]).run()
    assert not at.exception
    after = _charts(at)[0]
    assert before["data"] != after["data"]
    at.multiselect(key="dist_models").set_value(["records/tiny", "records/two-chains"]).run()
    assert not at.exception
    names = {t.get("name") for t in _charts(at)[0]["data"] if t.get("type") == "bar"}
    assert names == {"tiny", "two-chains"}


def test_empty_folder_explains_what_to_do(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(APP_DIR_ENV, str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert any("Nothing found" in i.value for i in at.info)
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, page
        if page != "views/special_cases.py":  # the zoo's special cases need no records
            assert at.info, page


def test_unreadable_records_are_set_aside(root, tmp_path, monkeypatch) -> None:
    import shutil

    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    broken = copy / "records" / "broken"
    broken.mkdir()
    (broken / "records.json").write_text("{not json", encoding="utf-8")
    empty = copy / "records" / "empty"  # a recording killed before its first chunk
    empty.mkdir()
    sidecar = json.loads((copy / "records" / "tiny" / "records.json").read_text())
    (empty / "records.json").write_text(json.dumps(sidecar), encoding="utf-8")
    monkeypatch.setenv(APP_DIR_ENV, str(copy))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception
    options = at.sidebar.selectbox(key="records_label").options
    assert "records/broken" not in options and "records/empty" not in options
    assert any("2 unreadable" in e.label for e in at.sidebar.expander)
    assert any("no image recorded yet" in c.value for c in at.sidebar.caption)
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, page


# ---------------------------------------------------------------------------- dynviz app
def test_app_command_binds_localhost_and_passes_the_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("STREAMLIT_SERVER_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)  # no .streamlit/config.toml here
    assert cli(["app", str(tmp_path), "--dry-run", "--server.port", "8765"]) == 0
    line = capsys.readouterr().out
    assert "--server.address 127.0.0.1" in line and "--server.port 8765" in line
    # streamlit run, through the module that preloads the explorer first (issue 26)
    assert f"-m dynviz.commands.app run {APP}" in line
    assert cli(["app", str(tmp_path), "--dry-run", "--no-preload"]) == 0
    assert f"-m streamlit run {APP}" in capsys.readouterr().out
    assert cli(["app", str(tmp_path), "--dry-run", "--server.port", "8765", "--no-preload"]) == 0
    assert f"-m streamlit run {APP}" in capsys.readouterr().out


def test_app_command_honours_the_users_address(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = build_command(APP, env={"STREAMLIT_SERVER_ADDRESS": "0.0.0.0"})
    assert "--server.address" not in command
    command = build_command(APP, ["--server.address=10.0.0.2"], env={})
    assert command.count("--server.address=10.0.0.2") == 1 and "127.0.0.1" not in command
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "config.toml").write_text('[server]\naddress = "0.0.0.0"\n')
    assert "--server.address" not in build_command(APP, env={})
    assert "--server.address" in build_command(APP, env={}, check_config_files=False)


def test_app_command_refuses_a_missing_folder(tmp_path, capsys):
    assert cli(["app", str(tmp_path / "nope"), "--dry-run"]) == 3  # a bad file or folder
    assert "no such folder" in capsys.readouterr().err


def test_app_says_first_when_it_serves_beyond_this_machine(tmp_path, capsys, monkeypatch):
    """Issue 25: started on a non-loopback address, the first line says who can see what."""
    monkeypatch.delenv("STREAMLIT_SERVER_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli(["app", str(tmp_path), "--dry-run", "--address", "0.0.0.0"]) == 0
    said = capsys.readouterr()
    first = said.err.splitlines()[0]
    assert first.startswith("warning: serving on 0.0.0.0") and str(tmp_path.resolve()) in first
    assert cli(["app", str(tmp_path), "--dry-run"]) == 0  # 127.0.0.1 by default: no warning
    assert "warning" not in capsys.readouterr().err
    from dynviz.commands.app import is_loopback, served_address

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.2") and not is_loopback("lab")
    assert served_address(["x", "--server.address=10.0.0.2"], {}) == "10.0.0.2"
    assert served_address(["x"], {"STREAMLIT_SERVER_ADDRESS": "0.0.0.0"}) == "0.0.0.0"
    assert served_address(["x"], {}) is None


def test_preload_leaves_nothing_to_read_for_the_first_page(root, monkeypatch) -> None:
    """Issue 26: ``_state.preload`` (what ``dynviz app`` runs before its server answers) reads
    every records folder and makes the sidebar's and the Overview's tables; a first page after
    it reads no records and the summaries of the records shown start on their own."""
    monkeypatch.setenv(APP_DIR_ENV, str(root))
    monkeypatch.syspath_prepend(str(APP.parent))
    import _state

    monkeypatch.setattr(_state, "PRELOAD_SUMMARY_DELAY", 0.0)
    monkeypatch.setattr(_state, "_summarising", set())  # none started by an earlier test
    times = _state.preload()
    assert set(times) == {"records", "overview"}
    background = [t for t in threading.enumerate() if t.name == "dynviz-summaries"]
    assert background

    def refuse(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        raise AssertionError(f"{path} read again by the first page")

    monkeypatch.setattr(_state, "read_records", refuse)
    monkeypatch.setattr(_state, "_table1", refuse)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Overview"]
    assert len(_markdown_tables(at)) >= 2  # the records' Table 1, the runs and the records
    for thread in background:
        thread.join(timeout=TIMEOUT)
    monkeypatch.setattr(_state, "path_statistics", refuse)
    selected = str(root / "records" / "tiny")
    assert _state.summarised(selected, _state.stamp(selected))  # made in the background


def test_the_folder_is_fixed_at_launch(root, tmp_path, monkeypatch) -> None:
    """Issue 25: neither the sidebar nor ``?dir=`` chooses another folder; ``?records=`` picks
    only among the records under the folder; a symlink out of it is not followed."""
    import shutil

    inside = tmp_path / "served"
    shutil.copytree(root, inside)
    outside = tmp_path / "private"
    shutil.copytree(root / "records" / "tiny", outside / "secret")
    (inside / "link").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv(APP_DIR_ENV, str(inside))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params["dir"] = str(outside)
    at.query_params["records"] = str(outside / "secret")
    at.run()
    assert not at.exception
    assert not at.text_input  # no free path box
    labels = at.sidebar.selectbox(key="records_label").options
    assert labels and not any("secret" in label or "link" in label for label in labels)
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert f"in `{inside.resolve()}`" in captions and str(outside) not in captions


# ------------------------------------------------------------------------------ uploads
def test_read_upload_decodes_common_formats() -> None:
    for mode, fmt in (
        ("RGB", "PNG"),
        ("L", "PNG"),
        ("RGBA", "PNG"),
        ("RGB", "JPEG"),
        ("P", "GIF"),
        ("RGB", "BMP"),
        ("RGB", "WEBP"),
    ):
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((12, 20, 3), np.uint8)).convert(mode).save(buffer, fmt)
        image = read_upload(buffer.getvalue(), name=f"x.{fmt.lower()}")
        assert image.image.shape == (12, 20, 3) and image.image.dtype == np.uint8
        assert image.format == fmt


@pytest.mark.parametrize(
    ("data", "kwargs", "message"),
    [
        (b"", {}, "empty"),
        (b"GIF89a but not really", {}, "not an image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", {}, "not an image"),  # never handed to Ghostscript
        (_png()[:120], {}, "truncated"),
        (_png(), {"max_bytes": 100}, "too large"),
        (_png(), {"max_pixels": 100}, "too large"),
    ],
    ids=["empty", "garbage", "eps", "truncated", "bytes", "pixels"],
)
def test_read_upload_refuses_bad_files(data, kwargs, message) -> None:
    with pytest.raises(UploadError, match=message):
        read_upload(data, name="upload.png", **kwargs)


def test_overlay_and_colorize() -> None:
    image = np.full((4, 5, 3), 100, np.uint8)
    classes = np.zeros((4, 5), np.uint8)
    classes[0, 0] = 255
    classes[1, 1] = 1
    assert (colorize(classes)[0, 0] == 255).all()
    assert (overlay(image, classes, opacity=0.0) == image).all()
    blended = overlay(image, classes, opacity=1.0)
    assert (blended[0, 0] == 100).all()  # ignored pixels keep the image
    assert (blended[1, 1] == colorize(classes)[1, 1]).all()
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image, classes[:2])
    assert fit_size(500, 3000, 1024) == (171, 1024) and fit_size(10, 20, None) == (10, 20)


# ------------------------------------------------------------------- gate attribution
def test_route_explorer_attribution_panel(app, root) -> None:
    """The toggle shows the clickable path grid, the chosen path's map over the image (diverging,
    centred at zero) and its logit, alpha and top-10% share; the logit is the library's."""
    from _records_fixture import SPEC, SPLIT

    from dynviz.analysis.attribution import attribute
    from dynviz.data import build_dataset
    from dynviz.model.checkpoint import load_model

    at = _open(app, "views/route_explorer.py")
    assert len(_charts(at)) == 1  # off by default
    at.toggle(key="attr_on_0").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    metrics = _metrics(at)
    assert {"Logit", "Alpha", "Top 10% share"} <= set(metrics)
    charts = _charts(at)
    maps = [c for c in charts if any(t.get("type") == "heatmap" for t in c["data"])]
    assert maps and all(
        t["zmid"] == 0 and t["zmin"] == -t["zmax"]
        for c in maps
        for t in c["data"]
        if t.get("type") == "heatmap"
    )
    grid = [c for c in charts if any(t.get("name") == "path" for t in c["data"])]
    assert len(grid) == 1
    # pick another node: the metrics follow, and match dynviz.analysis.attribution on the same image
    node = at.selectbox(key="attr_node_0")
    target = node.options[-1]
    node.select_index(len(node.options) - 1).run()
    assert not at.exception
    direction = at.radio(key="attr_dir_0").value
    model, _ = load_model(root / "runs" / "tiny" / "checkpoint_best.pt")
    data = build_dataset(SPEC, split=SPLIT)
    image_id = at.selectbox(key="explorer_image_0").value
    index = [data.image_id(i) for i in range(len(data))].index(image_id)
    attr = attribute(model, data.raw(index)[0])
    layer, stride = (int(v) for v in target.removeprefix("layer ").split(", 1/"))
    gate = attr.node(layer, {4: 0, 8: 1, 16: 2, 32: 3}[stride])
    assert float(_metrics(at)["Logit"]) == pytest.approx(
        float(gate.logits[gate.index(direction)]), rel=1e-3, abs=1e-3
    )
    assert "off by" in " ".join(c.value for c in at.caption)


def test_attribution_panel_explains_forced_and_static_records(app) -> None:
    at = _open(app, "views/route_explorer.py")
    for label, message in (
        ("records/two-chains", "forced a route"),
        ("records/fcn32s", "no gates"),
    ):
        at.sidebar.selectbox(key="records_label").set_value(label).run()
        at.toggle(key="attr_on_0").set_value(True).run()
        assert not at.exception, [e.value for e in at.exception]
        assert any(message in i.value for i in at.info), [i.value for i in at.info]


def test_routing_vs_scale_relates_attribution_to_object_size(app) -> None:
    at = _open(app, "views/routing_vs_scale.py")
    assert not at.error, [e.value for e in at.error]
    assert any(s.value == "Attribution versus object size" for s in at.subheader)
    table = at.dataframe[-1].value
    # readable columns, classes by name (issue 23)
    assert {"class", "direction", "objects", "Spearman rho (area, lift)", "paths leaving"} <= set(
        table.columns
    )
    assert "scale_index" not in table.columns and "small_mean" not in table.columns
    assert not any(str(c).startswith("class ") for c in table["class"])
    assert (table["objects"] > 0).all()
    # the adaptivity figures are a table with their intervals, the scatter's axes readable
    figures = at.dataframe[0].value
    assert list(figures.columns) == ["figure", "value", "95% interval", "what it measures"]
    assert "regime from the route" in set(figures["figure"])
    extremes = figures.set_index("figure").loc["dearest over cheapest image"]
    spread = figures.set_index("figure").loc["cost spread", "value"]
    assert float(extremes["value"].rstrip("x")) >= float(spread.rstrip("x"))  # images, not tenths
    assert "budgeted networks: 1.11-1.12x" in extremes["what it measures"]
    axes = [c["layout"]["yaxis"]["title"]["text"] for c in _charts(at) if "yaxis" in c["layout"]]
    assert "fine share" not in axes
    scatter = [c for c in _charts(at) if c["layout"].get("xaxis", {}).get("type") == "log"]
    assert scatter
    pooled = _metrics(at)["Spearman of area with lift, all classes"]
    assert pooled == "-" or -1.0 <= float(pooled) <= 1.0
    at.selectbox(key="attr_scale_direction").set_value("keep")
    at.selectbox(key="attr_scale_value").set_value("mass").run()
    assert not at.exception


def test_attribution_panel_on_an_upload(app) -> None:
    at = _open(app, "views/route_explorer.py")
    at.radio(key="explorer_source_0").set_value("Upload").run()
    at.file_uploader(key="explorer_upload_0").set_value(("photo.png", _png(), "image/png")).run()
    at.toggle(key="attr_on_0").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert {"Logit", "Alpha", "Top 10% share"} <= set(_metrics(at))
    heatmap = next(t for c in _charts(at) for t in c["data"] if t.get("type") == "heatmap")
    z = heatmap["z"]  # plotly 6 sends arrays as {"dtype", "bdata", "shape"}
    shape = tuple(int(v) for v in z["shape"].split(",")) if isinstance(z, dict) else np.shape(z)
    assert shape == (40, 56)  # upsampled to the uploaded image


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""
    import struct
    import zlib

    data = bytearray(_png(8, 8))
    data[16:24] = struct.pack(">II", width, height)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def test_hostile_uploads_are_messages_with_memory_bounded() -> None:
    """Issue 25, item 5: a decompression bomb, a 20000x20000 PNG header, a CMYK JPEG, a 16-bit
    PNG, an animated GIF: each decoded or refused with a message naming the file, and nothing
    allocates the claimed pixels."""
    import tracemalloc

    tracemalloc.start()
    try:
        claimed = r"bomb.png: the image (has too many pixels|is too large)"
        with pytest.raises(UploadError, match=claimed):
            read_upload(_png_claiming(20000, 20000), name="bomb.png")
        with pytest.raises(UploadError, match="too many pixels|too large"):
            read_upload(_png_claiming(60000, 60000), name="huge.png")  # past PIL's own limit
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20  # far below the 1.6 GB the header claims
    buffer = io.BytesIO()
    Image.new("CMYK", (20, 12), (0, 255, 255, 0)).save(buffer, "JPEG")
    cmyk = read_upload(buffer.getvalue(), name="cmyk.jpg").image
    assert cmyk.shape == (12, 20, 3) and cmyk[..., 0].mean() > 200  # red, as viewers show it
    buffer = io.BytesIO()
    Image.fromarray(np.full((12, 20), 40000, np.uint16)).save(buffer, "PNG")
    wide = read_upload(buffer.getvalue(), name="wide.png").image
    assert wide.shape == (12, 20, 3) and wide.dtype == np.uint8 and wide.max() > 0
    frames = [Image.new("RGB", (20, 12), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    gif = read_upload(buffer.getvalue(), name="anim.gif").image
    assert gif.shape == (12, 20, 3) and gif[..., 0].mean() > 200  # the first frame
