"""The recorder: schema, forced routes, re-runs and resumes without duplicates, validation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import dynviz
from dynviz.analysis.common import extract_common
from dynviz.cli import main as cli
from dynviz.inference.metrics import ConfusionMatrix, per_image_miou
from dynviz.model.checkpoint import make_checkpoint, save_checkpoint, sha256_file
from dynviz.record import (
    DIRECTION_DTYPE,
    DIRECTIONS,
    GATE_COLUMNS,
    RecordError,
    check_model,
    combine_records,
    read_records,
    record,
    write_records,
)

SPEC = "synthetic:count=6,size=64x64,classes=4"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, model, dataset):
    out = tmp_path_factory.mktemp("records") / "tiny"
    record(model, dataset, out, chunk_size=4, batch_size=2, data_spec=SPEC, split="val")
    return out


def test_schema_and_contents(recorded, model):
    records = read_records(recorded)
    num_paths = int(model.route_mask.sum())
    assert len(records.images) == 6
    assert len(records.gates) == 6 * num_paths
    assert list(records.gates.columns) == [*GATE_COLUMNS, "gate_alpha"]
    dtypes = records.gates.dtypes
    assert str(dtypes["layer"]) == "int16" and str(dtypes["scale"]) == "int16"
    assert str(dtypes["scale_index"]) == "int8" and str(dtypes["alpha"]) == "float32"
    assert str(dtypes["active"]) == "bool"
    assert list(records.gates["direction"].cat.categories) == list(DIRECTIONS)
    assert set(records.gates["scale"]) == {4, 8, 16, 32}
    assert (records.gates["scale"] == 4 * 2 ** records.gates["scale_index"].astype(int)).all()
    # only paths that exist: per image, the (layer, scale, direction) set equals the space's
    paths = {(layer, scale, d.label) for layer, scale, d in model.config.paths}
    first = records.gates[records.gates["image_id"] == records.images["image_id"][0]]
    assert {
        (int(a), int(b), str(c))
        for a, b, c in zip(first["layer"], first["scale_index"], first["direction"], strict=True)
    } == paths
    assert (records.gates["active"] == (records.gates["alpha"] > 0)).all()
    images = records.images
    for column in (
        "real_gmacs",
        "expected_gmacs",
        "miou",
        "pixel_accuracy",
        "height",
        "width",
        "stat_mean_object_area",
        "stat_regime_code",
        "confusion",
    ):
        assert column in images.columns
    assert (images["height"] == 64).all() and (images["real_gmacs"] > 0).all()
    assert images["image_id"].is_unique
    sidecar = records.sidecar
    assert sidecar.checkpoint is None and records.meta["checkpoint_sha256"] is None
    assert sidecar.input_sizes == ((64, 64),) and sidecar.num_images == 6
    assert sidecar.data == SPEC and sidecar.split == "val"
    assert sidecar.config_dict == model.config.to_dict() and sidecar.route_dict is None
    assert sidecar.dynviz_version == dynviz.__version__ and sidecar.created
    assert records.config == model.config
    check_model(records, model)


def test_costs_match_the_cost_table(recorded, model, dataset):
    from dynviz.model.cost import cost_table

    records = read_records(recorded)
    item = dataset[0]
    with torch.inference_mode():
        out = model(item["image"].unsqueeze(0))
    table = cost_table(model.config, (64, 64))
    row = records.images.set_index("image_id").loc[item["image_id"]]
    assert row["real_gmacs"] == pytest.approx(float(table.real(out.active)[0]) / 1e9)
    assert row["expected_gmacs"] == pytest.approx(
        float(table.expected(out.gates)[0]) / 1e9, rel=1e-5
    )
    pred = out.logits.argmax(1)[0]
    assert row["miou"] == pytest.approx(per_image_miou(pred, item["label"], 4))
    matrix = ConfusionMatrix(4).update(pred, item["label"])
    assert row["pixel_accuracy"] == pytest.approx(matrix.pixel_accuracy())
    assert (np.asarray(row["confusion"]) == matrix.matrix.reshape(-1)).all()


def test_forced_route_is_recorded_exactly_and_extracted(tmp_path, model, dataset, two_chains):
    route = two_chains
    out = tmp_path / "forced"
    record(model, dataset, out, route=route, limit=4)
    records = read_records(out)
    mask = route.mask().numpy()
    for _, rows in records.gates.groupby("image_id"):
        expected = mask[
            rows["layer"].to_numpy(),
            rows["scale_index"].to_numpy(),
            rows["direction"].cat.codes.to_numpy(),
        ]
        assert (rows["active"].to_numpy() == expected).all()
    assert records.sidecar.forced_route_dict["name"] == "two-chains"
    assert not records.sidecar.dynamic
    assert records.route is not None and records.route.paths == route.paths
    common = extract_common(records, threshold=0.95)
    assert common.paths == route.paths and common.space == route.space


def test_rerun_and_resume_never_duplicate(tmp_path, model, dataset, caplog):
    out = tmp_path / "resume"
    record(model, dataset, out, chunk_size=2)  # three chunks of two images
    full = read_records(out)
    # simulate a crash: the last chunk's images part never written, and a stale temp file
    images_dir, gates_dir = out / "images", out / "gates"
    parts = sorted(p.name for p in images_dir.glob("part-*.parquet"))
    assert parts == ["part-r0-c0.parquet", "part-r0-c1.parquet", "part-r0-c2.parquet"]
    (images_dir / "part-r0-c2.parquet").unlink()
    (gates_dir / ".part-r0-c3.parquet.abc.tmp").write_bytes(b"half")
    partial = read_records(out)  # the orphan gates part is ignored
    assert len(partial.images) == 4 and len(partial.gates) == 4 * len(full.gates) // 6
    result = record(model, dataset, out, chunk_size=2)
    assert (result.recorded, result.skipped) == (2, 4)
    again = read_records(out)
    assert len(again.images) == 6 and again.images["image_id"].is_unique
    assert len(again.gates) == len(full.gates)
    assert not (gates_dir / "part-r0-c2.parquet").exists()  # the orphan was removed
    assert not list(gates_dir.glob(".part-*"))
    keys = ["image_id", "layer", "scale", "direction"]
    assert not again.gates.duplicated(keys).any()
    merged = again.gates.merge(full.gates, on=keys, suffixes=("", "_first"))
    assert np.allclose(merged["alpha"], merged["alpha_first"])
    # a plain re-run records nothing
    result = record(model, dataset, out, chunk_size=2)
    assert (result.recorded, result.skipped) == (0, 6)
    assert len(read_records(out).images) == 6


def test_limit_then_full_run_completes(tmp_path, model, dataset):
    out = tmp_path / "grow"
    record(model, dataset, out, limit=2)
    record(model, dataset, out)
    records = read_records(out)
    assert len(records.images) == 6 and records.images["image_id"].is_unique
    assert records.sidecar.num_images == 6


def test_other_model_is_refused(recorded, model, dataset, tmp_path, two_chains):
    other = dynviz.build_model("tiny", num_classes=dataset.num_classes, base_channels=16)
    records = read_records(recorded)
    with pytest.raises(RecordError, match="base_channels"):
        check_model(records, other)
    with pytest.raises(RecordError, match="base_channels"):
        read_records(recorded, model=other)
    static = dynviz.build_model(model.config, route=two_chains)
    with pytest.raises(RecordError, match="route"):
        check_model(records, static)
    copy = tmp_path / "copy"
    shutil.copytree(recorded, copy)
    with pytest.raises(RecordError, match="config"):
        record(other, dataset, copy, data_spec=SPEC, split="val")  # appending is refused too


def _hand_records(tmp_path):
    gates = pd.DataFrame(
        {
            "image_id": ["a", "a", "b", "b"],
            "layer": [0, 0, 0, 0],
            "scale": [4, 4, 4, 4],
            "scale_index": [0, 0, 0, 0],
            "direction": ["keep", "down", "keep", "down"],
            "alpha": [0.9, 0.0, 0.8, 0.1],
            "active": [True, False, True, True],
        }
    )
    images = pd.DataFrame(
        {
            "image_id": ["a", "b"],
            "real_gmacs": [1.0, 2.0],
            "expected_gmacs": [1.0, 2.0],
            "miou": [0.5, np.nan],
            "pixel_accuracy": [0.9, np.nan],
            "height": np.int32([8, 8]),
            "width": np.int32([8, 8]),
            "stat_mean_object_area": [0.1, 0.2],
        }
    )
    config = dynviz.RoutingSpaceConfig(name="hand", num_layers=2, base_channels=4)
    return write_records(tmp_path / "hand", gates, images, {"config": config.to_dict()})


def test_schema_errors_name_the_file(tmp_path):
    folder = _hand_records(tmp_path)
    assert len(read_records(folder).images) == 2
    part = folder / "gates" / "part-r0-c0.parquet"
    table = pq.read_table(part)
    pq.write_table(table.drop(["alpha"]), part)
    with pytest.raises(RecordError, match=r"part-r0-c0\.parquet.*missing column.*alpha"):
        read_records(folder)
    pq.write_table(
        table.set_column(
            table.schema.get_field_index("active"), "active", pa.array(["yes"] * len(table))
        ),
        part,
    )
    with pytest.raises(RecordError, match=r"part-r0-c0\.parquet.*'active'.*string"):
        read_records(folder)
    images = folder / "images" / "part-r0-c0.parquet"
    pq.write_table(pq.read_table(images).drop(["real_gmacs"]), images)
    with pytest.raises(RecordError, match=r"images/part-r0-c0\.parquet.*real_gmacs"):
        read_records(folder)
    (folder / "records.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(RecordError, match="records.json"):
        read_records(folder)
    with pytest.raises(RecordError, match="no records.json"):
        read_records(tmp_path)


def test_combine_labels_models(recorded, tmp_path):
    one = read_records(recorded)
    two = read_records(_hand_records(tmp_path))
    gates, images = combine_records([one, two])
    assert list(gates["model"].cat.categories) == ["tiny", "hand"]
    assert len(images) == len(one.images) + len(two.images)
    gates, _ = combine_records([one, one])  # same label twice: folder names, then suffixes
    assert gates["model"].nunique() == 2


def test_cli_records_a_checkpoint(tmp_path, model, capsys):
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "checkpoint_latest.pt", make_checkpoint(model, iteration=7, rng=False))
    out = tmp_path / "cli"
    code = cli(
        ["record", str(run), "--data", SPEC, "--out", str(out), "--limit", "2", "--no-progress"]
    )
    assert code == 0
    assert "recorded 2 image(s)" in capsys.readouterr().out
    records = read_records(out)
    assert records.sidecar.checkpoint.sha256 == sha256_file(run / "checkpoint_latest.pt")
    assert records.sidecar.checkpoint.iteration == 7
    assert records.label == "run"
    code = cli(["record", "tiny", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "--data" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_ranks_write_disjoint_parts(tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    base = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29541",
        "-m",
        "dynviz.cli",
        "record",
        "tiny",
        "--data",
        SPEC,
        "--out",
        str(out),
        "--chunk",
        "2",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for extra in (["--limit", "3"], []):  # a partial run, then the rest with two ranks
        done = subprocess.run(base + extra, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    records = read_records(out)
    assert len(records.images) == 6 and records.images["image_id"].is_unique
    names = {p.name for p in (out / "images").glob("part-*.parquet")}
    assert any(n.startswith("part-r1-") for n in names)
    assert records.sidecar.num_images == 6


def test_parts_with_different_values_read_as_one_table(tmp_path):
    folder = _hand_records(tmp_path)
    gates = pd.DataFrame(
        {
            "image_id": ["c", "c"],
            "layer": [0, 0],
            "scale": [4, 4],
            "scale_index": [0, 0],
            "direction": ["up", "up"],
            "alpha": [0.5, 0.0],
            "active": [True, False],
        }
    )
    images = read_records(folder).images.iloc[:1].assign(image_id="c")
    write_records(folder, gates, images, read_records(folder).sidecar, chunk=1)
    records = read_records(folder)
    assert records.gates["direction"].dtype == DIRECTION_DTYPE  # keep/down + up: one category
    assert records.gates["direction"].astype(str).tolist() == [
        "keep",
        "down",
        "keep",
        "down",
        "up",
        "up",
    ]
    assert records.gates["image_id"].dtype == "string"
    bad = folder / "gates" / "part-r0-c1.parquet"
    pq.write_table(
        pq.read_table(bad).set_column(
            4, "direction", pa.array(["sideways", "up"]).dictionary_encode()
        ),
        bad,
    )
    with pytest.raises(RecordError, match=r"gates.*direction.*sideways"):
        read_records(folder)


def test_recording_leaves_the_training_mode_as_it_was(tmp_path, model, dataset):
    model.train()
    model.stem.eval()  # a mixed state comes back exactly
    record(model, dataset, tmp_path / "a", progress=False)
    assert model.training and not model.stem.training
    assert all(m.training for name, m in model.named_modules() if not name.startswith("stem"))
    model.eval()
    record(model, dataset, tmp_path / "b", progress=False)
    assert not any(m.training for m in model.modules())


def test_records_keep_the_gates_own_alpha_below_the_threshold(tmp_path, model, dataset):
    """Issue 23: with an active threshold, a closed path's row keeps the gate's own alpha
    (gate_alpha) beside the alpha the route used (0) and active False; open rows agree; the
    records of the same weights at threshold 0 hold the same gate values; a part written
    before the column existed reads gate_alpha as alpha."""
    from dataclasses import replace

    from dynviz.record import GATE_ALPHA

    closed = dynviz.build_model("tiny", num_classes=dataset.num_classes).eval()
    closed.load_state_dict(model.state_dict())
    closed.config = replace(closed.config, active_threshold=0.9)
    record(model, dataset, tmp_path / "open", data_spec=SPEC, split="val")
    record(closed, dataset, tmp_path / "closed", data_spec=SPEC, split="val")
    opened, shut = read_records(tmp_path / "open").gates, read_records(tmp_path / "closed").gates
    assert shut[GATE_ALPHA].dtype == np.float32
    below = (shut[GATE_ALPHA] > 0) & (shut[GATE_ALPHA] <= 0.9)
    assert below.any()  # the gates (bias 1.5) leave some alphas at or below 0.9
    assert (shut.loc[below, "alpha"] == 0).all() and not shut.loc[below, "active"].any()
    on = shut["active"]
    assert (shut.loc[on, GATE_ALPHA] == shut.loc[on, "alpha"]).all()
    assert (shut.loc[on, "alpha"] > 0.9).all()
    # closing changes what later cells receive; the first cell's gate sees the stem alone
    first = (shut["layer"] == 0).to_numpy()
    np.testing.assert_allclose(
        shut[GATE_ALPHA].to_numpy()[first], opened[GATE_ALPHA].to_numpy()[first], rtol=1e-5
    )
    np.testing.assert_array_equal(opened[GATE_ALPHA], opened["alpha"])  # threshold 0
    # older parts (no gate_alpha column) read it as alpha
    for part in (tmp_path / "open" / "gates").glob("*.parquet"):
        pq.write_table(pq.read_table(part).drop_columns([GATE_ALPHA]), part)
    old = read_records(tmp_path / "open").gates
    assert (old[GATE_ALPHA] == old["alpha"]).all()


def test_written_parts_have_the_format_schemas(recorded, tmp_path):
    """Every part the recorder and write_records write has exactly the format's schema."""
    from dynviz.record.format import GATE_SCHEMA, IMAGE_SCHEMA, images_schema

    hand = _hand_records(tmp_path)
    for folder in (recorded, hand):
        for part in sorted((folder / "gates").glob("part-*.parquet")):
            assert pq.read_schema(part).equals(GATE_SCHEMA, check_metadata=False), part
        for part in sorted((folder / "images").glob("part-*.parquet")):
            schema = pq.read_schema(part)
            assert schema.equals(images_schema(schema.names), check_metadata=False), part
            assert schema.names[: len(IMAGE_SCHEMA)] == IMAGE_SCHEMA.names
    recorded_names = pq.read_schema(next((recorded / "images").glob("part-*"))).names
    assert recorded_names[len(IMAGE_SCHEMA)] == "confusion"
    stats = [n for n in recorded_names if n.startswith("stat_")]
    assert (
        "stat_mean_object_area" in stats and stats == sorted(stats) == recorded_names[-len(stats) :]
    )


def test_a_part_is_written_atomically(tmp_path, monkeypatch):
    """A writer that fails half-way leaves neither a partial part under the final name nor a
    temporary file, and an existing part keeps its content."""
    from dynviz.record import format as records_format

    table = pa.table({"x": pa.array(np.arange(1000, dtype=np.int64))})
    part = tmp_path / "part-r0-c0.parquet"
    real = pq.write_table

    def half_then_fail(data, handle, **kwargs):
        real(data.slice(0, 10), handle, **kwargs)  # bytes reach the temporary file
        raise RuntimeError("disk pulled")

    monkeypatch.setattr(records_format.pq, "write_table", half_then_fail)
    with pytest.raises(RuntimeError, match="disk pulled"):
        records_format.write_part(table, part)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(records_format.pq, "write_table", real)
    records_format.write_part(table, part)
    monkeypatch.setattr(records_format.pq, "write_table", half_then_fail)
    with pytest.raises(RuntimeError):
        records_format.write_part(table.slice(0, 5), part)
    assert [p.name for p in tmp_path.iterdir()] == [part.name]
    assert pq.read_table(part).equals(table)


@pytest.mark.parametrize("ignore", [255, -1, 4, 5000])
def test_confusion_rows_count_every_labelled_pixel_and_name_a_stray_label(ignore):
    """Per image, pixel by pixel against a plain loop, for ignore labels that get their own
    bincount row (255, 4 = K) and ones mapped to row K first (-1, 5000)."""
    from dynviz.model import ConfigError
    from dynviz.record.rows import confusion_rows

    k, gen = 4, torch.Generator().manual_seed(0)
    pred = torch.randint(0, k, (3, 9, 11), generator=gen)
    labels = torch.randint(0, k, (3, 9, 11), generator=gen)
    labels[0, :2], labels[2, 5] = ignore, ignore
    expected = torch.zeros(3, k, k, dtype=torch.int64)
    for i, (p, y) in enumerate(zip(pred, labels, strict=True)):
        for target, guess in zip(y.flatten().tolist(), p.flatten().tolist(), strict=True):
            if target != ignore:
                expected[i, target, guess] += 1
    ids = ["a", "b", "c"]
    assert torch.equal(confusion_rows(pred, labels, k, ignore, ids), expected.view(3, k * k))
    for stray in {k, 7, -3, 300, 2000} - {ignore}:
        bad = labels.clone()
        bad[1, 3, 3] = stray
        with pytest.raises(ConfigError, match=rf"image 'b': labels \[{stray}\]"):
            confusion_rows(pred, bad, k, ignore, ids)
