"""The research workflows: re-runnable configs and overrides, predict, Cityscapes benchmark files
and the official evaluator, test-time augmentation, image+mask folders, one-line data errors."""

from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

import dynviz
from dynviz.analysis import aug_costs
from dynviz.cli import main as cli_main
from dynviz.data import (
    DataError,
    SyntheticScenes,
    build_dataset,
    parse_spec,
    write_cityscapes_layout,
    write_folder_layout,
)
from dynviz.data.palette import cityscapes_palette, voc_palette
from dynviz.errors import error_message
from dynviz.inference.evaluate import evaluate
from dynviz.inference.tta import (
    Augment,
    AugmentError,
    TableCache,
    forward_costs,
    infer,
    window_boxes,
)
from dynviz.model.checkpoint import make_checkpoint, save_checkpoint
from dynviz.model.cost import cost_table
from dynviz.record import read_records
from dynviz.train.runconfig import SettingsError, apply_overrides, parse_overrides, read_run_config

TRAIN = [
    "--crop",
    "64",
    "64",
    "--batch",
    "2",
    "--iters",
    "2",
    "--precise-bn",
    "0",
    "--workers",
    "0",
    "--no-tensorboard",
]


def _synthetic(split: str = "val", count: int = 3) -> SyntheticScenes:
    return SyntheticScenes(count=count, size=(64, 64), num_classes=6, seed=0, split=split)


def _checkpoint(path, data: str, num_classes: int = 6):
    model = dynviz.build_model("tiny", num_classes=num_classes)
    save_checkpoint(path, make_checkpoint(model, iteration=1, train_args={"data": data}))
    return model


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cs")
    write_cityscapes_layout(_synthetic("val", 3), root, "val")
    return root


# ------------------------------------------------------------------------ configs
def test_a_runs_config_yaml_trains_the_same_network_again(tmp_path, capsys):
    data = "synthetic:count=4,size=64x64"
    first, again = tmp_path / "a", tmp_path / "b"
    assert cli_main(["train", "tiny", "--data", data, "--out", str(first), *TRAIN]) == 0
    config = first / "config.yaml"
    assert cli_main(["train", "--config", str(config), "--out", str(again)]) == 0
    one = torch.load(first / "checkpoint_latest.pt", weights_only=True)
    two = torch.load(again / "checkpoint_latest.pt", weights_only=True)
    assert one["model"].keys() == two["model"].keys()
    assert all(torch.equal(one["model"][k], two["model"][k]) for k in one["model"])
    saved = yaml.safe_load(config.read_text())
    assert saved["environment"]["packages"]["torch"]
    assert "git" in saved["environment"]
    log = (first / "log.txt").read_text()
    assert "val mIoU" in log and "stopped at iteration 2/2" in log
    # the run's own folder is refused (it holds checkpoints), naming --resume
    assert cli_main(["train", "--config", str(config)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_overrides_use_the_config_names_and_unknown_keys_are_refused(tmp_path, capsys):
    data = "synthetic:count=4,size=64x64"
    first = tmp_path / "a"
    assert cli_main(["train", "tiny", "--data", data, "--out", str(first), *TRAIN]) == 0
    run = read_run_config(first / "config.yaml")
    changed = apply_overrides(
        run,
        parse_overrides(["lr=0.01", "budget_mu=0.2", "crop=32x48", "model.base_channels=16"]),
    )
    config = changed.train_config()
    assert config.lr == 0.01 and config.budget_mu == 0.2 and config.crop == (32, 48)
    assert changed.network().base_channels == 16
    with pytest.raises(SettingsError, match=r"'lrr'.*did you mean lr"):
        apply_overrides(run, parse_overrides(["lrr=0.1"]))
    with pytest.raises(SettingsError, match="model.widthh"):
        apply_overrides(run, parse_overrides(["model.widthh=3"]))
    with pytest.raises(SettingsError, match="iters"):
        apply_overrides(run, parse_overrides(["iters=abc"])).train_config()
    assert cli_main(["train", "--config", str(first / "config.yaml"), "lrr=1", "--out", "x"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown setting 'lrr' (did you mean lr?)"
    # a flat file of training arguments, with overrides after the options
    flat = tmp_path / "flat.yaml"
    flat.write_text(yaml.safe_dump({"model": "tiny", "data": data, "precise_bn": 0}))
    out = tmp_path / "flat"
    argv = ["train", "--config", str(flat), "--out", str(out), "--no-tensorboard"]
    assert cli_main([*argv, "iters=1", "batch=2", "crop=64,64", "workers=0"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert saved["iters"] == 1 and saved["crop"] == [64, 64] and saved["precise_bn"] == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: tiny\nlearning_rate: 0.1\n")
    with pytest.raises(SettingsError, match="learning_rate"):
        read_run_config(bad)


def test_eval_takes_settings_by_name(tmp_path, capsys):
    data = "synthetic:count=3,size=64x64"
    _checkpoint(tmp_path / "c.pt", data)
    settings = tmp_path / "eval.yaml"
    settings.write_text("split: train\nlimit: 2\n")
    argv = ["eval", str(tmp_path / "c.pt"), "--json", "--config", str(settings)]
    assert cli_main([*argv, "size=32x32"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["split"] == "train" and payload["num_images"] == 2
    assert payload["sizes"] == [[32, 32]]
    assert cli_main(["eval", str(tmp_path / "c.pt"), "limt=2"]) == 2
    assert "did you mean limit" in capsys.readouterr().err


# ------------------------------------------------------------------------------ TTA
def test_augment_parsing():
    aug = Augment.parse(["flip", "scales=0.5,1,1.5"])
    assert aug.variants == [
        (0.5, False),
        (0.5, True),
        (1.0, False),
        (1.0, True),
        (1.5, False),
        (1.5, True),
    ]
    assert Augment.parse(None) is None
    with pytest.raises(AugmentError, match="mirror"):
        Augment.parse(["mirror"])
    with pytest.raises(AugmentError, match="positive"):
        Augment.parse(["scales=0,1"])


def test_tta_averages_softmax_of_the_flipped_and_scaled_passes():
    model = dynviz.build_model("tiny", num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        plain, forwards = infer(model, x)
        assert len(forwards) == 1
        assert torch.allclose(plain, torch.softmax(model(x).logits, 1), atol=1e-6)
        flipped, forwards = infer(model, x, aug=Augment(flip=True))
        by_hand = (
            torch.softmax(model(x).logits, 1) + torch.softmax(model(x.flip(-1)).logits, 1).flip(-1)
        ) / 2
        assert torch.allclose(flipped, by_hand, atol=1e-6)
        assert [f.flip for f in forwards] == [False, True]
        scaled, forwards = infer(model, x, aug=Augment(scales=(0.5, 1.0)))
        assert [f.size for f in forwards] == [(32, 32), (64, 64)]
        half = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear")
        small = torch.nn.functional.interpolate(
            torch.softmax(model(half).logits, 1), size=(64, 64), mode="bilinear"
        )
        assert torch.allclose(scaled, (small + torch.softmax(model(x).logits, 1)) / 2, atol=1e-6)


def test_sliding_windows_cover_the_image_and_a_large_window_changes_nothing():
    boxes = window_boxes(100, 200, (64, 64))
    covered = np.zeros((100, 200), dtype=int)
    for top, left, bottom, right in boxes:
        assert bottom - top == 64 and right - left == 64
        covered[top:bottom, left:right] += 1
    assert covered.min() >= 1
    assert window_boxes(50, 60, (64, 64)) == [(0, 0, 50, 60)]
    model = dynviz.build_model("tiny", num_classes=3).eval()
    x = torch.randn(1, 3, 48, 48)
    with torch.inference_mode():
        whole, _ = infer(model, x)
        windowed, forwards = infer(model, x, window=(64, 64))
        assert torch.equal(whole, windowed) and len(forwards) == 1
        _, forwards = infer(model, torch.randn(1, 3, 64, 96), window=(64, 64))
        assert [f.box for f in forwards] == [(0, 0, 64, 64), (0, 32, 64, 96)]


def test_eval_with_aug_sums_the_cost_of_every_pass():
    model = dynviz.build_model("tiny", num_classes=6).eval()
    data = _synthetic("val", 2)
    plain = evaluate(model, data)
    aug = Augment(scales=(0.5, 1.0), flip=True)
    result = evaluate(model, data, aug=aug)
    assert set(result.aug_real_gmacs) == {"0.5", "0.5+flip", "1", "1+flip"}
    total = sum(stats.mean for stats in result.aug_real_gmacs.values())
    assert result.real_gmacs.mean == pytest.approx(total)
    # the unflipped full-scale pass is the plain evaluation
    assert result.aug_real_gmacs["1"].mean == pytest.approx(plain.real_gmacs.mean)
    assert result.to_dict()["aug"] == {"scales": [0.5, 1.0], "flip": True}
    assert "aug" not in plain.to_dict()
    # a half-size pass costs what the cost model says at 32x32
    with torch.inference_mode():
        _, forwards = infer(model, data[0]["image"].unsqueeze(0), aug=Augment(scales=(0.5,)))
    real, _ = forward_costs(model, forwards[0], TableCache(model), gates_ran=True)
    table = cost_table(model.config, (32, 32))
    assert float(real[0]) == pytest.approx(float(table.real(forwards[0].active, gates_ran=True)[0]))


def test_record_with_aug_has_a_row_per_image_and_variant(tmp_path):
    data = "synthetic:count=3,size=64x64"
    _checkpoint(tmp_path / "c.pt", data)
    plain, augmented = tmp_path / "plain", tmp_path / "aug"
    assert cli_main(["record", str(tmp_path / "c.pt"), "--out", str(plain), "--threads", "1"]) == 0
    argv = ["record", str(tmp_path / "c.pt"), "--out", str(augmented), "--aug", "flip"]
    assert cli_main([*argv, "scales=0.5,1", "limit=2"]) == 0
    assert cli_main([*argv, "scales=0.5,1"]) == 0  # completes, no duplicates
    base = read_records(plain)
    records = read_records(augmented)
    assert not {"aug_scale", "aug_flip", "source_image_id"} & set(base.images.columns)
    assert "aug" not in base.meta
    images = records.images
    assert len(images) == 3 * 4 and images["image_id"].is_unique
    assert images.groupby("source_image_id").size().tolist() == [4, 4, 4]
    row = images[(images["aug_scale"] == 0.5) & ~images["aug_flip"]].iloc[0]
    assert (row["height"], row["width"]) == (32, 32)
    assert row["image_id"] == f"{row['source_image_id']}@0.5"
    assert len(records.gates) == len(images) * (len(base.gates) // len(base.images))
    full = images[(images["aug_scale"] == 1.0) & ~images["aug_flip"]].set_index("source_image_id")
    same = base.images.set_index("image_id")
    assert np.allclose(full["real_gmacs"], same.loc[full.index, "real_gmacs"])
    assert records.meta["aug"] == {"scales": [0.5, 1.0], "flip": True}
    # the cost of augmentation per variant, and of the whole augmented image
    costs = aug_costs(images)
    variants, whole = costs[costs["aug_scale"].notna()], costs[costs["aug_scale"].isna()]
    assert len(variants) == 4 and len(whole) == 1
    assert variants["share"].sum() == pytest.approx(1.0)
    assert whole["real_gmacs_mean"].iloc[0] == pytest.approx(variants["real_gmacs_mean"].sum())
    assert aug_costs(base.images).empty
    report = tmp_path / "report"
    assert cli_main(["analyze", str(augmented), "--out", str(report)]) == 0
    assert "## Test-time augmentation" in (report / "report.md").read_text()


# -------------------------------------------------------------------------- predict
def _rotated_jpeg(path):
    stored = np.random.default_rng(0).integers(0, 255, (200, 100, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to show
    Image.fromarray(stored).save(path, exif=exif)


def test_predict_writes_masks_overlays_and_routes_and_skips_bad_files(tmp_path, capsys):
    _checkpoint(tmp_path / "c.pt", "synthetic:count=3,size=64x64")
    inputs = tmp_path / "in"
    inputs.mkdir()
    _rotated_jpeg(inputs / "photo.jpg")
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(inputs / "dark.png")
    (inputs / "truncated.png").write_bytes((inputs / "dark.png").read_bytes()[:60])
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "c.pt"), str(inputs), str(tmp_path / "gone.png")]
    assert cli_main([*argv, "--out", str(out), "--threads", "1"]) == 3
    err = capsys.readouterr().err
    assert "skipped 2 file(s)" in err and "truncated.png" in err and "gone.png" in err
    assert Image.open(out / "masks" / "photo.png").size == (200, 100)  # upright: 200 wide
    assert Image.open(out / "overlays" / "photo.png").size == (200, 100)
    mask = np.asarray(Image.open(out / "masks" / "dark.png"))
    assert mask.shape == (40, 50) and mask.max() < 6
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["image"].rsplit("/", 1)[-1] for r in rows] == ["dark.png", "photo.jpg"]
    assert float(rows[0]["real_gmacs"]) > 0 and rows[0]["route"].startswith("0:4:")
    assert int(rows[0]["active_paths"]) == len(rows[0]["route"].split())
    # augmented: one row per pass
    out2 = tmp_path / "out2"
    argv = ["predict", str(tmp_path / "c.pt"), str(inputs / "dark.png"), "--out", str(out2)]
    assert cli_main([*argv, "--aug", "flip", "scales=0.5,1", "--window", "32", "32"]) == 0
    frame = pd.read_csv(out2 / "predictions.csv")
    assert set(zip(frame["aug_scale"], frame["aug_flip"], strict=True)) == {
        (0.5, False),
        (0.5, True),
        (1.0, False),
        (1.0, True),
    }
    assert frame["input_height"].max() <= 32 and frame["input_width"].max() <= 32


def _predict_tree(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_a_stopped_predict_resumes_from_its_journal_and_ends_as_an_uninterrupted_run(
    tmp_path, monkeypatch
):
    import dynviz.inference.predict as predict

    torch.manual_seed(0)
    model = dynviz.build_model("tiny", num_classes=4).eval()
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k in range(5):
        pixels = rng.integers(0, 255, (32 + 8 * k, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"img{k}.png")
    palette = voc_palette()
    whole = predict.predict_files(model, [images], tmp_path / "whole", palette=palette)
    assert (whole.images, whole.reused) == (5, 0)
    calls = []
    real_infer = predict.infer

    def counted(*args, **kwargs):
        calls.append(1)
        if stop_after is not None and len(calls) > stop_after:
            raise KeyboardInterrupt  # stopped while segmenting the image after stop_after
        return real_infer(*args, **kwargs)

    monkeypatch.setattr(predict, "infer", counted)
    out = tmp_path / "out"
    stop_after = 3
    with pytest.raises(KeyboardInterrupt):
        predict.predict_files(model, [images], out, palette=palette)
    assert not (out / "predictions.csv").exists()
    lines = (out / predict.JOURNAL_FILE).read_text().splitlines()
    assert lines[0].startswith("# dynviz predict journal") and len(lines) == 2 + 3  # 3 images
    # the same run again: the three finished images are kept, two are segmented
    calls.clear()
    stop_after = None
    resumed = predict.predict_files(model, [images], out, palette=palette)
    assert (resumed.images, resumed.reused, len(calls)) == (5, 3, 2)
    assert _predict_tree(out) == _predict_tree(tmp_path / "whole")  # the journal is gone
    assert resumed.real_gmacs == whole.real_gmacs
    # another option changes the fingerprint: nothing is reused
    calls.clear()
    stop_after = 1
    with pytest.raises(KeyboardInterrupt):
        predict.predict_files(model, [images], out, palette=palette, opacity=0.3)
    calls.clear()
    stop_after = None
    other = predict.predict_files(model, [images], out, palette=palette)
    assert (other.reused, len(calls)) == (0, 5)
    # a torn last line takes its image with it; a removed overlay is redone too
    stop_after = 4
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        predict.predict_files(model, [images], out, palette=palette)
    journal = out / predict.JOURNAL_FILE
    journal.write_text(journal.read_text()[:-5])  # img3's row cut short
    (out / "overlays" / "img0.png").unlink()
    calls.clear()
    stop_after = None
    again = predict.predict_files(model, [images], out, palette=palette)
    assert (again.reused, len(calls)) == (2, 3)  # img1, img2 kept; img0, img3, img4 run
    assert _predict_tree(out) == _predict_tree(tmp_path / "whole")


def test_palettes_are_cityscapes_and_voc_colours():
    assert tuple(cityscapes_palette()[0]) == (128, 64, 128)  # road
    assert tuple(cityscapes_palette()[13]) == (0, 0, 142)  # car
    assert tuple(voc_palette()[1]) == (128, 0, 0) and tuple(voc_palette()[15]) == (192, 128, 128)


# ------------------------------------------------------------------- Cityscapes files
def test_cityscapes_test_files_and_the_official_evaluator_agree(tmp_path, cityscapes_root, capsys):
    spec = f"cityscapes:{cityscapes_root}"
    _checkpoint(tmp_path / "c.pt", spec)
    out = tmp_path / "sub"
    argv = ["eval", str(tmp_path / "c.pt"), "--json", "--format", "cityscapes-test"]
    assert cli_main([*argv, "--out", str(out), "--evaluator", "cityscapes"]) == 0
    payload = json.loads(capsys.readouterr().out)
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"synth_000000_{i:06d}_leftImg8bit.png" for i in range(3)]
    official = payload["cityscapes_evaluator"]["miou"]
    assert official == pytest.approx(payload["miou"], abs=1e-9)
    # labelIds: the train ids 0..5 map to road, sidewalk, building, wall, fence, pole
    values = set(np.unique(np.asarray(Image.open(out / names[0]))).tolist())
    assert values <= {7, 8, 11, 12, 13, 17}
    assert cli_main(["eval", str(tmp_path / "c.pt"), "--format", "cityscapes-test"]) == 2
    assert "--out" in capsys.readouterr().err
    _checkpoint(tmp_path / "s.pt", "synthetic:count=2,size=64x64")
    argv = ["eval", str(tmp_path / "s.pt"), "--format", "cityscapes-test", "--out", str(out)]
    assert cli_main(argv) == 2
    assert "needs Cityscapes data" in capsys.readouterr().err


# --------------------------------------------------------------------------- folders
def test_folder_layout_round_trips_synthetic_data(tmp_path):
    source = _synthetic("val", 3)
    write_folder_layout(source, tmp_path / "f", "val")
    folder = build_dataset(f"folder:{tmp_path / 'f'}", split="val")
    assert folder.num_classes == 6 and folder.class_names == source.class_names
    for index in range(3):
        image, label = folder.raw(index)
        want_image, want_label = source.raw(index)
        assert np.array_equal(image, want_image) and np.array_equal(label, want_label)
    model = dynviz.build_model("tiny", num_classes=6).eval()
    assert evaluate(model, folder).miou == pytest.approx(evaluate(model, source).miou)


def _flat_folder(root, masks: dict[str, np.ndarray], *, settings: str | None = "num_classes: 3\n"):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem, mask in masks.items():
        Image.fromarray(np.zeros((*mask.shape, 3), dtype=np.uint8)).save(
            root / "images" / f"{stem}.jpg"
        )
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    if settings is not None:
        (root / "dataset.yaml").write_text(settings)


def test_folder_errors_name_the_file(tmp_path):
    good = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    _flat_folder(tmp_path / "a", {"x": good, "y": np.array([[0, 7], [1, 1]], dtype=np.uint8)})
    data = build_dataset(f"folder:{tmp_path / 'a'}", split="anything")
    assert data.raw(0)[1].tolist() == [[0, 1], [2, 255]]
    with pytest.raises(DataError, match=r"masks/y\.png has values \[7\] outside \[0, 3\)"):
        data.raw(1)
    (tmp_path / "a" / "images" / "z.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"without a mask.*images/z\.png"):
        build_dataset(f"folder:{tmp_path / 'a'}")
    _flat_folder(tmp_path / "b", {"x": good})
    Image.fromarray(np.zeros((3, 3), dtype=np.uint8)).save(tmp_path / "b" / "masks" / "x.png")
    pattern = r"masks/x\.png has size 3x3 .* image .*images/x\.jpg has 2x2"
    with pytest.raises(DataError, match=pattern):
        build_dataset(f"folder:{tmp_path / 'b'}")[0]
    _flat_folder(tmp_path / "c", {"x": good}, settings=None)
    with pytest.raises(DataError, match=r"class count is unknown.*classes=K"):
        build_dataset(f"folder:{tmp_path / 'c'}")
    assert build_dataset(f"folder:{tmp_path / 'c'},classes=4").num_classes == 4


def test_folder_list_file_ignore_value_and_reduce_zero_label(tmp_path):
    mask = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    _flat_folder(tmp_path, {"x": mask}, settings="num_classes: 3\nreduce_zero_label: true\n")
    assert build_dataset(f"folder:{tmp_path}").raw(0)[1].tolist() == [[255, 0], [1, 2]]
    lists = tmp_path / "lists"  # no dataset.yaml beside the list: classes and ignore given
    lists.mkdir()
    (lists / "train.txt").write_text("# image mask\n../images/x.jpg ../masks/x.png\n")
    listed = build_dataset(f"folder:{lists / 'train.txt'},classes=4,ignore=0")
    assert listed.raw(0)[1].tolist() == [[255, 1], [2, 3]]
    assert str(parse_spec(f"folder:{tmp_path},classes=4")) == f"folder:{tmp_path},classes=4"
    (tmp_path / "val.txt").write_text("images/x.jpg masks/missing.png\n")
    with pytest.raises(DataError, match=r"val\.txt:1: mask not found"):
        build_dataset(f"folder:{tmp_path / 'val.txt'}")


def test_train_eval_and_record_run_on_a_folder_copy(tmp_path, capsys):
    for split in ("train", "val"):
        write_folder_layout(_synthetic(split, 3), tmp_path / "f", split)
    assert cli_main(["data", "synth", "--out", str(tmp_path / "g"), "--format", "folder",
                     "--count", "2", "--size", "64", "64"]) == 0  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "g" / "masks").iterdir()) == ["train", "val"]
    spec = f"folder:{tmp_path / 'f'}"
    run = tmp_path / "run"
    assert cli_main(["train", "tiny", "--data", spec, "--out", str(run), *TRAIN]) == 0
    assert cli_main(["eval", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["data"] == spec
    assert cli_main(["record", str(run), "--out", str(tmp_path / "rec")]) == 0
    assert len(read_records(tmp_path / "rec").images) == 3


# ------------------------------------------------------------------------ data errors
def test_a_corrupt_image_in_a_worker_is_one_line_and_exit_3(tmp_path, capsys):
    for split in ("train", "val"):
        write_folder_layout(_synthetic(split, 3), tmp_path / "f", split)
    bad = tmp_path / "f" / "images" / "train" / "train_000001.png"
    bad.write_bytes(bad.read_bytes()[:300])
    spec = f"folder:{tmp_path / 'f'}"
    argv = ["train", "tiny", "--data", spec, "--out", str(tmp_path / "run"), *TRAIN]
    assert cli_main([*argv[:-3], "--workers", "1", "--no-tensorboard"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot read image ")
    assert "train_000001.png" in err and "truncated" in err
    _checkpoint(tmp_path / "c.pt", spec)
    for command in (["eval"], ["record", "--out", str(tmp_path / "rec")]):
        argv = [command[0], str(tmp_path / "c.pt"), *command[1:], "--split", "train"]
        assert cli_main([*argv, "--workers", "1"]) == 3
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "train_000001.png" in err
    # the record kept the image before the bad one
    assert len(read_records(tmp_path / "rec").images) == 1


def test_worker_error_message_keeps_the_last_line():
    text = (
        "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent "
        'call last):\n  File "x.py", line 1, in f\n    raise DataError(...)\n'
        "dynviz.data.errors.DataError: cannot read image a.png: image file is truncated\n"
    )
    assert error_message(DataError(text)) == "cannot read image a.png: image file is truncated"
    assert error_message(DataError("plain")) == "plain"


def test_tensorboard_missing_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys, caplog):
    import dynviz.train.runlog as runlog

    monkeypatch.setattr(runlog, "tensorboard_available", lambda: False)
    argv = ["train", "tiny", "--data", "synthetic:count=4,size=64x64", *TRAIN[:-1]]
    assert cli_main([*argv, "--out", str(tmp_path / "a"), "--tensorboard"]) == 2
    assert "pip install 'dynviz[tensorboard]'" in capsys.readouterr().err
    with caplog.at_level(logging.INFO):
        assert cli_main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert "dynviz[tensorboard]" in caplog.text
    assert not list((tmp_path / "b").glob("events.*"))


def test_an_uploaded_photo_is_upright(tmp_path):
    from dynviz.record.uploads import read_upload

    _rotated_jpeg(tmp_path / "photo.jpg")
    upload = read_upload((tmp_path / "photo.jpg").read_bytes(), name="photo.jpg")
    assert (upload.width, upload.height) == (200, 100)


def test_a_bad_sample_mid_training_keeps_the_iterations_done(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    original = SyntheticScenes.raw

    def failing(self, index):
        calls["n"] += 1
        if calls["n"] > 6:  # batch 2: three iterations, then a bad file
            raise DataError("cannot read image /data/bad.png: image file is truncated")
        return original(self, index)

    monkeypatch.setattr(SyntheticScenes, "raw", failing)
    run = tmp_path / "run"
    argv = ["train", "tiny", "--data", "synthetic:count=8,size=64x64", "--out", str(run)]
    options = [*TRAIN[:6], "5", *TRAIN[7:]]  # --iters 5
    assert cli_main([*argv, *options]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/data/bad.png" in err and "--resume" in err
    assert torch.load(run / "checkpoint_latest.pt", weights_only=True)["iteration"] == 3
    monkeypatch.setattr(SyntheticScenes, "raw", original)
    assert cli_main([*argv, "--resume"]) == 0
    assert torch.load(run / "checkpoint_latest.pt", weights_only=True)["iteration"] == 5
