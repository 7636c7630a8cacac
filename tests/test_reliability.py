"""Faults and untrusted input: a killed run loses at most the iterations since its checkpoint,
a killed recording resumes without duplicates (a kill inside a part write included), a torn part
is redone, untrusted YAML executes nothing.

A kill lands inside a file write through :data:`_STALLING`: a child that runs the command line
with ``atomic_write`` of one module wrapped, so that its n-th write of a file ending in a
suffix writes half its bytes, says so in a marker file and sleeps until it is killed."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dynviz.data import build_dataset
from dynviz.model.checkpoint import LATEST, load_checkpoint, make_checkpoint, save_checkpoint
from dynviz.model.config import ConfigError, RoutingSpaceConfig
from dynviz.model.route import Route, RouteError
from dynviz.model.zoo import build_model
from dynviz.record import read_records, record

DATA = "synthetic:count=16,size=32x32,classes=3"


def _dynviz(*argv: str) -> list[str]:
    return [sys.executable, "-m", "dynviz.cli", *argv]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


_STALLING = """
import io, sys, time
import importlib
module, suffix, nth, marker = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
target = importlib.import_module(module)
real, seen = target.atomic_write, [0]
def atomic_write(path, write):
    if str(path).endswith(suffix):
        seen[0] += 1
        if seen[0] == nth:
            def half(handle):
                buffer = io.BytesIO()
                write(buffer)
                data = buffer.getvalue()
                handle.write(data[: len(data) // 2])
                handle.flush()
                open(marker, "w").write(str(path))
                time.sleep(600)
            return real(path, half)
    return real(path, write)
target.atomic_write = atomic_write
from dynviz.cli import main
sys.exit(main(sys.argv[5:]))
"""


def _kill_inside_write(module: str, suffix: str, nth: int, marker: Path, *argv: str) -> str:
    """Run ``dynviz ARGV`` and SIGKILL it inside its ``nth`` write of a ``suffix`` file by
    ``module.atomic_write`` (half the file written); returns the path it was writing."""
    command = [sys.executable, "-c", _STALLING, module, suffix, str(nth), str(marker), *argv]
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _kill_when(proc, marker.exists)
    except AssertionError as err:
        raise AssertionError(f"{err}: {proc.stderr.read().decode()[-2000:]}") from None
    finally:
        proc.stderr.close()
    path = marker.read_text()
    marker.unlink()
    return path


def _checkpoint(path: Path, num_classes: int = 4) -> Path:
    """A fixed tiny network's checkpoint: records made from it are equal row for row."""
    torch.manual_seed(0)
    save_checkpoint(path, make_checkpoint(build_model("tiny", num_classes=num_classes), rng=False))
    return path


def _rows(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A records folder's images and gates tables in one order (parts may be numbered apart)."""
    records = read_records(folder)
    images = records.images.sort_values("image_id").reset_index(drop=True)
    gates = records.gates.sort_values(["image_id", "layer", "scale_index", "direction"])
    return images, gates.reset_index(drop=True)


def _assert_same_records(folder: Path, reference: Path) -> None:
    images, gates = _rows(folder)
    want_images, want_gates = _rows(reference)
    assert images["image_id"].is_unique  # no image twice
    assert images["image_id"].tolist() == want_images["image_id"].tolist()  # none missing
    pd.testing.assert_frame_equal(gates, want_gates)
    pd.testing.assert_frame_equal(
        images.drop(columns="confusion"), want_images.drop(columns="confusion")
    )
    assert images["confusion"].map(list).tolist() == want_images["confusion"].map(list).tolist()


def _part_files(folder: Path) -> tuple[set[str], set[str], list[Path]]:
    """The gates and images part names of a records folder and its temporary files."""
    gates = {p.name for p in (folder / "gates").glob("part-*.parquet")}
    images = {p.name for p in (folder / "images").glob("part-*.parquet")}
    return gates, images, sorted(folder.rglob("*.tmp"))


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"process ended before it could be killed: {proc.returncode}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting to kill the process")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _iteration(path: Path) -> int:
    try:
        return int(load_checkpoint(path)["iteration"])
    except Exception:  # not there yet, or being replaced
        return -1


def test_sigkilled_training_resumes_from_its_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    args = [
        "train",
        "tiny",
        "--data",
        DATA,
        "--val-data",
        DATA,
        "--out",
        str(run),
        "--iters",
        "60",
        "--batch",
        "2",
        "--crop",
        "32",
        "32",
        "--checkpoint-every",
        "5",
        "--eval-every",
        "0",
        "--workers",
        "0",
        "--threads",
        "1",
        "--precise-bn",
        "4",
        "--no-progress",
        "--no-tensorboard",
    ]
    # killed inside the 3rd save (iteration 15), half the new checkpoint written
    saving = _kill_inside_write("dynviz.model.checkpoint", ".pt", 3, tmp_path / "stalled", *args)
    assert saving == str(run / LATEST)
    assert _iteration(run / LATEST) == 10  # the previous checkpoint is whole and loads
    # the half-written one is a hidden temporary, never read as a checkpoint
    (half,) = run.glob("*.tmp")
    assert half.name.startswith(f".{LATEST}.") and half.stat().st_size > 0
    done = subprocess.run(
        _dynviz(*args, "--resume"), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert _iteration(run / LATEST) == 60
    assert not list(run.glob(".*.tmp"))  # the resumed run cleared what the killed one left


def test_sigkilled_recording_resumes_without_duplicates(tmp_path):
    out, marker = tmp_path / "records", tmp_path / "stalled"
    args = [
        "record",
        str(_checkpoint(tmp_path / "tiny.pt")),
        "--data",
        "synthetic:count=12,size=32x32,classes=4",
        "--out",
        str(out),
        "--chunk",
        "2",
        "--no-progress",
    ]
    # the 4th part write is chunk 1's images part: killed with half of it in a temporary file
    torn = _kill_inside_write("dynviz.record.format", ".parquet", 4, marker, *args)
    assert torn == str(out / "images" / "part-r0-c1.parquet")
    gates, images, temporaries = _part_files(out)
    assert images == {"part-r0-c0.parquet"} and "part-r0-c1.parquet" in gates
    assert [p.parent.name for p in temporaries] == ["images"]  # a reader never sees it
    done = subprocess.run(_dynviz(*args), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "10 image(s)" in done.stdout and "2 already there" in done.stdout
    records = read_records(out)
    assert len(records.images) == 12 and records.images["image_id"].is_unique
    per_image = records.gates.groupby("image_id", observed=True).size()
    assert per_image.nunique() == 1 and len(per_image) == 12  # every image once, whole
    gates, images, temporaries = _part_files(out)
    assert gates == images and not temporaries


@pytest.mark.slow
def test_recording_killed_at_random_points_ends_equal_to_an_uninterrupted_run(tmp_path):
    rng = random.Random(25)
    ckpt = _checkpoint(tmp_path / "tiny.pt")
    out, reference, marker = tmp_path / "records", tmp_path / "reference", tmp_path / "stalled"

    def args(folder: Path) -> list[str]:
        data = "synthetic:count=40,size=32x32,classes=4"
        return ["record", str(ckpt), "--data", data, "--out", str(folder), "--chunk", "2"]

    subprocess.run(_dynviz(*args(reference)), env=_env(), check=True, capture_output=True)
    kills = []
    writes = rng.sample(range(1, 5), 3)  # both kinds: a gates part (odd n), an images part (even)
    for point in range(6):
        committed = len(_part_files(out)[1])
        if point % 2 == 0:  # inside the nth part write of this run
            nth = writes[point // 2]
            path = _kill_inside_write("dynviz.record.format", ".parquet", nth, marker, *args(out))
            kills.append(f"inside write {nth} ({Path(path).parent.name})")
            assert _part_files(out)[2], "the kill left no temporary file"
        else:  # between writes, after some chunks, or wherever the kill lands
            more = rng.randint(1, 3)
            proc = subprocess.Popen(
                _dynviz(*args(out)),
                env=_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            _kill_when(proc, lambda n=committed + more: len(_part_files(out)[1]) >= n)
            kills.append(f"after {more} chunk(s)")
        gates, images, _ = _part_files(out)
        assert images <= gates  # a chunk's images part is written last and commits it
    # a torn part under its final name (a copy or a disk crash, not a kill): detected, redone
    truncated = sorted((out / "images").glob("part-*.parquet"))[1]
    truncated.write_bytes(truncated.read_bytes()[:100])
    emptied = sorted((out / "gates").glob("part-*.parquet"))[3]
    emptied.write_bytes(b"")
    done = subprocess.run(_dynviz(*args(out)), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, (kills, done.stderr)
    assert f"{truncated}: torn part" in done.stderr and f"{emptied}: torn part" in done.stderr
    _assert_same_records(out, reference)
    gates, images, temporaries = _part_files(out)
    assert gates == images and not temporaries, kills


def test_a_torn_part_is_detected_and_its_images_recorded_again(tmp_path, caplog):
    torch.manual_seed(0)
    model = build_model("tiny", num_classes=4).eval()
    data = build_dataset("synthetic:count=6,size=32x32,classes=4", split="val")
    first = record(model, data, tmp_path / "a", chunk_size=2, progress=False)
    assert first.parts == 3
    part = tmp_path / "a" / "images" / "part-r0-c1.parquet"
    part.write_bytes(part.read_bytes()[:-20])  # the footer lost
    (tmp_path / "a" / "gates" / "part-r0-c2.parquet").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="dynviz.record.recorder"):
        again = record(model, data, tmp_path / "a", chunk_size=2, progress=False)
    assert (again.recorded, again.skipped) == (4, 2)
    assert f"{part}: torn part" in caplog.text and "part-r0-c2.parquet: torn part" in caplog.text
    record(model, data, tmp_path / "b", chunk_size=2, progress=False)
    _assert_same_records(tmp_path / "a", tmp_path / "b")


def _images(folder: Path, count: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 256, (24 + 4 * index, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{index}.png")
    return folder


def _predict_outputs(out: Path) -> dict[str, bytes]:
    """Every output file of ``dynviz predict`` by its path in ``out`` (temporaries included)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_a_killed_predict_leaves_no_torn_file_and_a_rerun_completes(tmp_path):
    out = tmp_path / "out"
    args = [
        "predict",
        str(_checkpoint(tmp_path / "tiny.pt")),
        str(_images(tmp_path / "images", 5)),
        "--out",
        str(out),
        "--threads",
        "1",
    ]
    first = subprocess.run(_dynviz(*args), env=_env(), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    earlier = _predict_outputs(out)
    assert len(earlier) == 11 and earlier["predictions.csv"].count(b"\n") == 6
    # killed inside its 5th image write (the 3rd image's mask), half the PNG written
    writing = _kill_inside_write("dynviz.inference.predict", ".png", 5, tmp_path / "mark", *args)
    assert writing == str(out / "masks" / "img2.png")
    killed = _predict_outputs(out)
    temporaries = [name for name in killed if Path(name).name.startswith(".")]
    # the half mask and the journal of the two finished images, both hidden
    assert len(temporaries) == 2 and ".predictions.csv.partial" in temporaries
    assert [name for name in temporaries if name.endswith(".tmp")][0].startswith("masks/.img2")
    assert {k: v for k, v in killed.items() if k not in temporaries} == earlier  # intact
    again = subprocess.run(_dynviz(*args, "--json"), env=_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["reused"] == 2  # img0 and img1 are not segmented again
    assert _predict_outputs(out) == earlier  # complete: no torn file, no row twice


@pytest.mark.parametrize("loader", [RoutingSpaceConfig.from_yaml, Route.from_yaml])
def test_yaml_cannot_execute_code(tmp_path, loader):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\nnum_layers: 4\n")
    with pytest.raises((ConfigError, RouteError), match="evil.yaml"):
        loader(path)
    assert not marker.exists()


# ------------------------------------------------------------------ full or read-only disk
# A full disk is RLIMIT_FSIZE in the child (SIGXFSZ ignored, so a write past the limit fails
# with EFBIG as one on a full disk fails with ENOSPC). A read-only folder is a read-only bind
# mount in a user namespace when the tests run as root (root ignores file modes), else mode
# 0555.


def _full_disk(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def _can_mount_read_only() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


@contextlib.contextmanager
def _read_only(folder: Path):
    """A prefix that runs a command with ``folder`` read-only (the folder is restored after)."""
    if os.geteuid() != 0:
        folders = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
        for path in folders:
            path.chmod(0o555)
        try:
            yield []
        finally:
            for path in folders:
                path.chmod(0o755)
        return
    if not _can_mount_read_only():
        pytest.skip("running as root without user namespaces: no read-only folder to try")
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
    yield ["unshare", "-rm", "sh", "-c", script, str(folder)]


def _faulty(*argv: str, prefix: Sequence[str] = (), limit: int | None = None):
    return subprocess.run(
        [*prefix, *_dynviz(*argv)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=None if limit is None else _full_disk(limit),
    )


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden temporaries included) by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _one_line_naming(done: subprocess.CompletedProcess, path: Path, status: int = 1) -> str:
    assert done.returncode == status, done.stderr
    lines = done.stderr.strip().splitlines()  # log lines before it, then the error
    assert [line for line in lines if "error" in line.lower()] == lines[-1:], done.stderr
    assert lines[-1].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert str(path) in lines[-1], lines[-1]
    return lines[-1]


@pytest.mark.slow
def test_record_on_a_full_or_read_only_disk_names_the_path_and_keeps_the_records(tmp_path):
    out, new = tmp_path / "records", tmp_path / "new"
    model = str(_checkpoint(tmp_path / "tiny.pt"))

    def args(folder: Path) -> list[str]:
        data = "synthetic:count=8,size=32x32,classes=4"
        return ["record", model, "--data", data, "--out", str(folder), "--chunk", "2"]

    subprocess.run(_dynviz(*args(out), "--limit", "4"), env=_env(), check=True, capture_output=True)
    earlier = _tree(out)
    line = _one_line_naming(_faulty(*args(out), limit=2048), out / "gates")
    assert "File too large" in line and _tree(out) == earlier  # no part of the chunk left
    with _read_only(out) as prefix:
        _one_line_naming(_faulty(*args(out), prefix=prefix), out)
    assert _tree(out) == earlier
    with _read_only(tmp_path) as prefix:
        _one_line_naming(_faulty(*args(new), prefix=prefix), new)
    assert not new.exists()
    done = subprocess.run(_dynviz(*args(out)), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0 and "4 already there" in done.stdout, done.stderr
    assert len(read_records(out).images) == 8


def test_predict_on_a_full_or_read_only_disk_names_the_path_and_keeps_the_outputs(tmp_path):
    out = tmp_path / "out"
    args = ["predict", str(_checkpoint(tmp_path / "tiny.pt")), str(_images(tmp_path / "images", 3))]
    args += ["--out", str(out), "--threads", "1"]
    subprocess.run(_dynviz(*args), env=_env(), check=True, capture_output=True)
    earlier = _tree(out)
    line = _one_line_naming(_faulty(*args, limit=2048), out)
    assert "File too large" in line and _tree(out) == earlier
    with _read_only(out) as prefix:
        _one_line_naming(_faulty(*args, prefix=prefix), out)
    assert _tree(out) == earlier


@pytest.mark.slow
def test_analyze_and_extract_on_a_full_or_read_only_disk_keep_what_was_there(tmp_path):
    records, report, yaml = (
        tmp_path / "records",
        tmp_path / "report",
        tmp_path / "routes" / "common.yaml",
    )
    subprocess.run(
        _dynviz(
            "record",
            str(_checkpoint(tmp_path / "tiny.pt")),
            "--data",
            "synthetic:count=6,size=32x32,classes=4",
            "--out",
            str(records),
            "--no-progress",
        ),
        env=_env(),
        check=True,
        capture_output=True,
    )
    analyze = ["analyze", str(records), "--out", str(report), "--formats", "png"]
    extract = ["extract", str(records), "--out", str(yaml), "--threshold", "0"]
    for argv in (analyze, extract):
        subprocess.run(_dynviz(*argv), env=_env(), check=True, capture_output=True)
    for argv, folder, named in ((analyze, report, report), (extract, yaml.parent, yaml)):
        earlier = _tree(folder)
        line = _one_line_naming(_faulty(*argv, limit=1024), named)
        assert "File too large" in line and _tree(folder) == earlier
        with _read_only(folder) as prefix:
            _one_line_naming(_faulty(*argv, prefix=prefix), named)
        assert _tree(folder) == earlier


def test_training_on_a_disk_that_fills_up_keeps_the_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    args = ["train", "tiny", "--data", DATA, "--out", str(run), "--iters", "200", "--batch", "2"]
    args += ["--crop", "32", "32", "--checkpoint-every", "5", "--eval-every", "0", "--workers", "0"]
    args += ["--threads", "1", "--no-progress", "--no-tensorboard"]
    proc = subprocess.Popen(
        _dynviz(*args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while _iteration(run / LATEST) < 5:
        assert proc.poll() is None and time.monotonic() < deadline, (
            proc.stderr.read() if proc.stderr else ""
        )
        time.sleep(0.05)
    size = (run / LATEST).stat().st_size
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (size // 2, size // 2))  # the disk fills
    _, err = proc.communicate(timeout=120)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
    line = _one_line_naming(done, run / LATEST)
    assert "File too large" in line
    assert 5 <= _iteration(run / LATEST) < 200  # the last whole checkpoint loads
    assert not list(run.glob(".*.tmp"))


def test_a_chunk_whose_images_part_fails_leaves_no_gates_part(tmp_path, monkeypatch):
    from dynviz.record import format as fmt

    torch.manual_seed(0)
    model = build_model("tiny", num_classes=4).eval()
    data = build_dataset("synthetic:count=4,size=32x32,classes=4", split="val")
    real = fmt.write_part

    def disk_full_at_images(table, path):
        if path.parent.name == "images" and path.name == "part-r0-c1.parquet":
            raise OSError(28, f"cannot write {path}: No space left on device")
        real(table, path)

    monkeypatch.setattr(fmt, "write_part", disk_full_at_images)
    with pytest.raises(OSError, match="part-r0-c1.parquet: No space left"):
        record(model, data, tmp_path / "r", chunk_size=2, progress=False)
    gates, images, temporaries = _part_files(tmp_path / "r")
    assert gates == images == {"part-r0-c0.parquet"} and not temporaries
