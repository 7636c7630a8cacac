"""Damaged records (issue 25, item 2): a truncated part, a zero-byte part, a part of another
schema, a missing sidecar and a sidecar of a newer format, read by ``dynviz analyze``,
``dynviz extract``, the notebook's reading path (:func:`dynviz.record.read_records` with no
logging set up), the explorer's (:func:`dynviz.analysis.runs.records_problem`, the sidebar) and
``dynviz compare``'s. Each names the file and the fault in one line; a damaged part is skipped
with its chunk and said so (``--strict``: an error), never a traceback.

The records: an untrained ``tiny`` network on 6 synthetic images, 2 images per chunk, so three
chunks of which one is damaged."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _records_fixture import SPEC, SPLIT, calibrated_tiny

from dynviz.analysis.compare import PER_IMAGE, read_confusions
from dynviz.analysis.runs import find_folders, records_problem
from dynviz.cli import main as cli
from dynviz.data import build_dataset
from dynviz.record import RecordError, read_records, record

PART = "part-r0-c1.parquet"  # the damaged chunk: images 2 and 3 of 6


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def _zero(file: Path) -> None:
    file.write_bytes(b"")


def _other_schema(file: Path) -> None:  # a Parquet file of some other program
    pq.write_table(pa.table({"x": [1, 2], "label": ["a", "b"]}), file)


# fault -> (the damaged part, what is done to it, what the message says)
PART_FAULTS = {
    "truncated images part": ("images", _truncate, "truncated or not Parquet"),
    "zero-byte gates part": ("gates", _zero, r"empty file \(0 bytes\)"),
    "gates part of another schema": ("gates", _other_schema, "not a gates part"),
}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("damaged") / "tiny"
    dataset = build_dataset(SPEC, split=SPLIT)
    record(
        calibrated_tiny(),
        dataset,
        out,
        name="tiny",
        chunk_size=2,
        data_spec=SPEC,
        split=SPLIT,
        progress=False,
    )
    return out


def _copy(recorded: Path, tmp_path: Path, name: str = "tiny") -> Path:
    folder = tmp_path / "records" / name
    shutil.copytree(recorded, folder)
    return folder


def _damage(recorded: Path, tmp_path: Path, fault: str) -> tuple[Path, Path, str]:
    """A copy of the records with ``fault``: ``(folder, damaged file, message pattern)``."""
    folder = _copy(recorded, tmp_path)
    table, damage, pattern = PART_FAULTS[fault]
    file = folder / table / PART
    damage(file)
    return folder, file, pattern


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# ------------------------------------------------------------------------------ the reader
@pytest.mark.parametrize("fault", list(PART_FAULTS))
def test_a_damaged_part_is_skipped_naming_the_file_and_the_images_lost(
    recorded, tmp_path, caplog, fault
):
    whole = read_records(recorded)
    lost = set(pq.read_table(recorded / "images" / PART, columns=["image_id"])[0].to_pylist())
    assert len(whole.images) == 6 and len(lost) == 2 and not whole.skipped
    folder, file, pattern = _damage(recorded, tmp_path, fault)
    with caplog.at_level(logging.WARNING, logger="dynviz"):
        records = read_records(folder)
    # the rest is read, whole: every image of the two other chunks, with its gate rows
    assert set(records.images["image_id"]) == set(whole.images["image_id"]) - lost
    kept = whole.gates[~whole.gates["image_id"].isin(lost)].reset_index(drop=True)
    assert len(records.gates) == len(kept)
    assert set(records.gates["image_id"]) == set(records.images["image_id"])
    # what was skipped: the file, the fault, the images lost
    (skipped,) = records.skipped
    assert skipped.file == file and skipped.images == 2
    assert records.images_lost == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert str(file) in warnings[0] and "2 images lost" in warnings[0]
    note = records.skipped_note
    assert "\n" not in note and str(file) in note and "2 of 6 images lost" in note
    assert str(folder) in note and "1 damaged part" in note
    # strict: the first damaged part is an error naming it
    with pytest.raises(RecordError, match=pattern) as err:
        read_records(folder, strict=True)
    assert str(err.value).startswith(str(file)) and "\n" not in str(err.value)


def test_an_images_part_without_its_gates_part_is_skipped(recorded, tmp_path):
    folder = _copy(recorded, tmp_path)
    (folder / "gates" / PART).unlink()
    records = read_records(folder)
    assert len(records.images) == 4 and records.skipped[0].file == folder / "images" / PART
    assert "without its gates part" in records.skipped_note
    with pytest.raises(RecordError, match="without its gates part"):
        read_records(folder, strict=True)


def test_no_readable_part_is_an_error_either_way(recorded, tmp_path):
    folder = _copy(recorded, tmp_path)
    for file in (folder / "images").iterdir():
        _zero(file)
    with pytest.raises(RecordError, match=r"c0\.parquet: empty file .*\(and 2 more\); no readable"):
        read_records(folder)
    with pytest.raises(RecordError, match=r"c0\.parquet: empty file \(0 bytes\)$"):
        read_records(folder, strict=True)  # the first one


def _missing_sidecar(folder: Path) -> None:
    (folder / "records.json").unlink()


def _newer_sidecar(folder: Path) -> None:
    meta = json.loads((folder / "records.json").read_text(encoding="utf-8"))
    meta["format_version"] = 99
    (folder / "records.json").write_text(json.dumps(meta), encoding="utf-8")


def _empty_sidecar(folder: Path) -> None:
    (folder / "records.json").write_text("", encoding="utf-8")


SIDECAR_FAULTS = {
    "missing sidecar": (_missing_sidecar, r"records\.json: missing \(the folder holds 3 images"),
    "newer sidecar": (_newer_sidecar, r"records\.json: records format version 99 is newer"),
    "zero-byte sidecar": (_empty_sidecar, r"records\.json: cannot read the sidecar"),
}


@pytest.mark.parametrize("fault", list(SIDECAR_FAULTS))
def test_a_bad_sidecar_is_an_error_naming_it(recorded, tmp_path, fault):
    folder = _copy(recorded, tmp_path)
    damage, pattern = SIDECAR_FAULTS[fault]
    damage(folder)
    for strict in (False, True):
        with pytest.raises(RecordError, match=pattern) as err:
            read_records(folder, strict=strict)
        assert "\n" not in str(err.value)


# -------------------------------------------------------------------------- the commands
def _analyze(folder: Path, out: Path, *extra: str) -> int:
    return cli(["analyze", str(folder), "--out", str(out), "--no-html", "--formats", "png", *extra])


def test_analyze_skips_a_damaged_part_and_says_so(recorded, tmp_path, capsys):
    folder, file, _ = _damage(recorded, tmp_path, "truncated images part")
    assert _analyze(folder, tmp_path / "report", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["skipped"] == [{"file": str(file), "fault": out["skipped"][0]["fault"], "images": 2}]
    report = (tmp_path / "report" / "report.md").read_text()
    lost = "skipped 1 damaged part (2 of 6 images lost)"
    assert f"**Not in this report:** {folder}: {lost}" in report
    assert _analyze(recorded, tmp_path / "whole") == 0  # undamaged: no such line
    assert "Not in this report" not in (tmp_path / "whole" / "report.md").read_text()
    capsys.readouterr()
    assert _analyze(folder, tmp_path / "report2") == 0
    printed = capsys.readouterr().out
    assert f"skipped 1 damaged part (2 of 6 images lost): {file}: truncated" in printed
    # --strict: one line naming the file and the fault, exit status 3, nothing written
    assert _analyze(folder, tmp_path / "strict", "--strict") == 3
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert line.startswith(f"error: {file}: truncated or not Parquet")
    assert not (tmp_path / "strict").exists()


@pytest.mark.parametrize("fault", list(PART_FAULTS))
def test_extract_skips_a_damaged_part_and_strict_refuses_it(recorded, tmp_path, capsys, fault):
    folder, file, pattern = _damage(recorded, tmp_path, fault)
    out = tmp_path / "common.yaml"
    assert cli(["extract", str(folder), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [s["file"] for s in summary["skipped"]] == [str(file)]
    header = [line for line in out.read_text().splitlines() if line.startswith("#")]
    assert any(str(file) in line and "2 of 6 images lost" in line for line in header)
    assert "4 images" in header[1]  # the common network of the images read
    assert cli(["extract", str(folder), "--out", str(tmp_path / "s.yaml"), "--strict"]) == 3
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {file}: ") and not (tmp_path / "s.yaml").exists()


@pytest.mark.parametrize("fault", list(SIDECAR_FAULTS))
def test_the_commands_name_a_bad_sidecar_in_one_line(recorded, tmp_path, capsys, fault):
    folder = _copy(recorded, tmp_path)
    damage, pattern = SIDECAR_FAULTS[fault]
    damage(folder)
    assert _analyze(folder, tmp_path / "report") == 3
    assert re.search(pattern, _one_line(capsys.readouterr().err))
    assert not (tmp_path / "report").exists()
    assert cli(["extract", str(folder), "--out", str(tmp_path / "c.yaml")]) == 3
    assert re.search(pattern, _one_line(capsys.readouterr().err))
    assert not (tmp_path / "c.yaml").exists()


def test_compare_names_a_records_folder_and_a_damaged_confusion_table(
    recorded, tmp_path, capsys, caplog
):
    # compare evaluates runs, not records: a records folder is one line naming it
    code = cli(["compare", str(recorded), "--data", SPEC, "--out", str(tmp_path / "cmp")])
    assert code == 3
    assert _one_line(capsys.readouterr().err).startswith(f"error: {recorded}: ")
    # what it writes and the explorer reads back: a damaged per-image table is skipped, named
    folder = tmp_path / "comparison"
    folder.mkdir()
    (folder / PER_IMAGE).write_bytes(b"PAR1 not really")
    with caplog.at_level(logging.WARNING, logger="dynviz"):
        assert read_confusions(folder) == {}
    assert any(str(folder / PER_IMAGE) in r.getMessage() for r in caplog.records)


# -------------------------------------------------------------------- notebook, explorer
def test_the_notebooks_reading_path_warns_in_one_line_without_logging_set_up(recorded, tmp_path):
    folder, file, _ = _damage(recorded, tmp_path, "zero-byte gates part")
    code = (
        "import sys; from dynviz.record import read_records; "
        "r = read_records(sys.argv[1]); print(len(r.images))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "4"
    line = _one_line(done.stderr)
    assert str(file) in line and "empty file (0 bytes)" in line and "2 images lost" in line


def test_the_explorers_library_calls_name_each_fault(recorded, tmp_path):
    damaged, file, _ = _damage(recorded, tmp_path, "gates part of another schema")
    for name, (damage, _) in SIDECAR_FAULTS.items():
        damage(_copy(recorded, tmp_path, name.replace(" ", "-")))
    catalog = find_folders(tmp_path)
    found = {Path(p).name: p for p in catalog.records}
    assert set(found) == {"tiny", "missing-sidecar", "newer-sidecar", "zero-byte-sidecar"}
    assert records_problem(found["tiny"]) == ""  # usable: the sidebar says what it skipped
    assert str(file) in read_records(damaged).skipped_note
    for name, (_, pattern) in SIDECAR_FAULTS.items():
        problem = records_problem(found[name.replace(" ", "-")])
        assert re.search(pattern, problem) and "\n" not in problem


def test_the_explorer_shows_what_it_skipped_and_sets_aside_the_unreadable(
    recorded, tmp_path, monkeypatch
):
    streamlit = pytest.importorskip("streamlit")
    pytest.importorskip("plotly")
    from streamlit.testing.v1 import AppTest

    from dynviz.commands.app import APP_DIR_ENV, explorer_script

    _, file, _ = _damage(recorded, tmp_path, "truncated images part")
    _newer_sidecar(_copy(recorded, tmp_path, "newer"))
    _missing_sidecar(_copy(recorded, tmp_path, "lost"))
    streamlit.cache_data.clear()
    streamlit.cache_resource.clear()
    monkeypatch.setenv(APP_DIR_ENV, str(tmp_path))
    at = AppTest.from_file(str(explorer_script()), default_timeout=60).run()
    assert not at.exception, at.exception
    assert at.sidebar.selectbox(key="records_label").options == ["records/tiny"]
    warnings = [w.value for w in at.sidebar.warning]
    assert any(str(file) in w and "2 of 6 images lost" in w for w in warnings), warnings
    assert any("2 unreadable" in e.label for e in at.sidebar.expander)
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert "format version 99 is newer" in captions and "records.json: missing" in captions
    streamlit.cache_data.clear()
    streamlit.cache_resource.clear()
