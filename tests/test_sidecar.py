"""The typed records sidecar, and the recorder's in-memory frames (one forward pass, no folder)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import dynviz
from dynviz.data import normalize
from dynviz.model.checkpoint import make_checkpoint, save_checkpoint, sha256_file
from dynviz.record import (
    SIDECAR,
    CheckpointRef,
    RecordError,
    Sidecar,
    SidecarError,
    read_records,
    record,
    record_batch,
)
from dynviz.record.uploads import predict, route_image

SPEC = "synthetic:count=4,size=64x64,classes=4,seed=3"


@pytest.fixture(scope="module")
def forced(two_chains):
    return two_chains


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, model, dataset, forced):
    folder = tmp_path_factory.mktemp("sidecar")
    file = folder / "checkpoint.pt"
    save_checkpoint(file, make_checkpoint(model, iteration=7, best_metric=0.1, rng=False))
    checkpoint = {"path": str(file), "sha256": sha256_file(file), "iteration": 7}
    out = folder / "records"
    record(
        model,
        dataset,
        out,
        route=forced,
        name="mine",
        checkpoint=checkpoint,
        data_spec=SPEC,
        split="val",
        progress=False,
    )
    return out


def test_the_sidecar_reads_what_the_recorder_wrote(recorded, model, forced):
    records = read_records(recorded)
    sidecar = records.sidecar
    raw = json.loads((recorded / SIDECAR).read_text())
    assert sidecar.name == "mine" == records.label
    assert sidecar.config == model.config
    assert sidecar.route is None  # the network has gates: no static route
    assert sidecar.forced_route.paths == forced.paths
    assert sidecar.ran_route.paths == forced.paths == records.route.paths
    assert (sidecar.routing, sidecar.route_name) == ("forced", "two-chains")
    assert sidecar.dynamic is False  # a forced route, not the gates, chose
    assert sidecar.checkpoint == CheckpointRef(
        raw["checkpoint"]["path"], raw["checkpoint_sha256"], 7
    )
    assert sidecar.trained
    assert (sidecar.data, sidecar.split, sidecar.data_label) == (SPEC, "val", f"{SPEC} [val]")
    assert sidecar.input_sizes == ((64, 64),) and sidecar.input_size == (64, 64)
    assert sidecar.num_images == 4 == len(records.images)
    assert sidecar.params == sum(p.numel() for p in model.parameters())
    assert sidecar.threshold == pytest.approx(model.config.active_threshold)
    assert sidecar.dynviz_version == dynviz.__version__
    # the round trip is exact: writing the typed sidecar gives back the file
    assert sidecar.to_dict() == raw
    assert Sidecar.from_dict(raw) == sidecar


def test_unknown_keys_survive_and_untrained_dynamic_records_read(tmp_path, model, dataset):
    out = tmp_path / "dyn"
    record(model, dataset, out, limit=1, progress=False)
    raw = json.loads((out / SIDECAR).read_text())
    raw["lab"] = {"operator": "me", "seed": 3}  # e.g. written by a newer dynviz
    (out / SIDECAR).write_text(json.dumps(raw))
    sidecar = read_records(out).sidecar
    assert sidecar.extra == {"lab": {"operator": "me", "seed": 3}}
    assert sidecar.to_dict() == raw
    assert sidecar.aug is None
    assert (sidecar.routing, sidecar.route_name, sidecar.ran_route) == ("dynamic", None, None)
    assert sidecar.dynamic and not sidecar.trained and sidecar.checkpoint is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("input_sizes", "64x64", "'input_sizes' must be a list"),
        ("num_images", "4", "'num_images' must be int"),
        ("dynamic", 1, "'dynamic' must be bool"),
        ("checkpoint", "run/checkpoint.pt", "'checkpoint' must be dict"),
        ("class_names", "car", "'class_names' must be a list"),
    ],
)
def test_a_bad_value_names_the_file_and_key(tmp_path, model, dataset, key, value, message):
    out = tmp_path / "bad"
    record(model, dataset, out, limit=1, progress=False)
    raw = json.loads((out / SIDECAR).read_text())
    raw[key] = value
    (out / SIDECAR).write_text(json.dumps(raw))
    with pytest.raises(SidecarError, match=message) as info:
        read_records(out)
    assert str(out / SIDECAR) in str(info.value)
    assert isinstance(info.value, RecordError)


def test_a_route_that_does_not_parse_is_named_when_used():
    sidecar = Sidecar.from_dict(
        {"config": {"name": "x", "num_layers": 4}, "route": {"space": 3, "paths": []}},
        where="somewhere/records.json",
    )
    assert sidecar.routing == "static"  # listing still works
    with pytest.raises(SidecarError, match="somewhere/records.json: route"):
        _ = sidecar.route


def test_in_memory_frames_equal_what_the_recorder_writes(recorded, model, dataset, forced):
    written = read_records(recorded)
    items = [dataset[i] for i in range(len(dataset))]
    batch = record_batch(
        model,
        torch.stack([it["image"] for it in items]),
        image_ids=[it["image_id"] for it in items],
        labels=torch.stack([it["label"] for it in items]),
        route=forced,
        stats=[it["stats"] for it in items],
    )
    pd.testing.assert_frame_equal(batch.gates, written.gates)
    pd.testing.assert_frame_equal(batch.images, written.images)
    assert batch.prediction.shape == (len(items), 64, 64) and batch.prediction.dtype == np.uint8


def test_an_upload_runs_the_model_once(model, dataset):
    from dynviz.record.rows import folded_form

    image, _ = dataset.raw(0)
    calls = []
    runner = folded_form(model)  # what the upload runs: the inference form, folded once
    handle = runner.register_forward_hook(lambda *args: calls.append(1))
    try:
        result = route_image(model, image, image_id="up")
    finally:
        handle.remove()
    assert len(calls) == 1
    assert np.array_equal(result.prediction, predict(model, image))
    single = record_batch(model, normalize(image).unsqueeze(0), image_ids=["up"])
    pd.testing.assert_frame_equal(result.gates, single.gates)
    assert result.real_gmacs == pytest.approx(single.images["real_gmacs"].iloc[0])
    assert np.isnan(single.images["miou"].iloc[0])  # an upload has no label


def test_an_augmented_recording_says_so(tmp_path, model, dataset):
    from dynviz.inference.tta import Augment

    out = tmp_path / "aug"
    aug = Augment(scales=(0.5, 1.0), flip=True)
    record(model, dataset, out, limit=1, aug=aug, progress=False)
    raw = json.loads((out / SIDECAR).read_text())
    sidecar = read_records(out).sidecar
    assert sidecar.aug == aug and sidecar.extra == {}
    assert sidecar.to_dict() == raw
