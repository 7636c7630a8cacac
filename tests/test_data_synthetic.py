"""Synthetic scenes, dataset specs, the Cityscapes writer and the ``dynviz data`` CLI."""

from __future__ import annotations

import argparse
import colorsys
import dataclasses
import json
import pickle
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dynviz.commands import data as data_cli
from dynviz.data import (
    CITYSCAPES_CLASSES,
    DataError,
    SceneOptions,
    SyntheticScenes,
    build_dataset,
    denormalize,
    parse_spec,
    train_transforms,
    write_cityscapes_layout,
)
from dynviz.data.cityscapes import META_FILE

SMALL = "synthetic:count=8,size=64x64"


def _regime_stats(regime: str, count: int = 16) -> dict[str, np.ndarray]:
    ds = SyntheticScenes(count=count, size=(96, 96), regime=regime, seed=3)
    rows = [ds.stats(i) for i in range(count)]
    return {key: np.array([r[key] for r in rows]) for key in rows[0]}


def test_default_spec_and_item_contract() -> None:
    ds = build_dataset("synthetic")
    assert (len(ds), ds.num_classes, ds.ignore_index, ds.name) == (64, 6, 255, "synthetic")
    assert ds.class_names[0] == "background" and len(set(ds.class_names)) == 6
    item = ds[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 128, 128)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (128, 128)
    assert item["image_id"] == "train_000000"
    assert all(isinstance(v, float) for v in item["stats"].values())
    image, label = ds.raw(0)
    assert image.dtype == np.uint8 and image.shape == (128, 128, 3) and label.dtype == np.uint8
    # The item is the normalised raw image, and denormalize inverts it exactly.
    np.testing.assert_array_equal(denormalize(item["image"]), image)
    np.testing.assert_array_equal(item["label"].numpy(), label)
    assert len({ds.image_id(i) for i in range(len(ds))}) == len(ds)


def test_deterministic_by_seed_split_and_index() -> None:
    a = build_dataset(SMALL)
    b = build_dataset(SMALL)
    assert all(a.raw(i)[0].tobytes() == b.raw(i)[0].tobytes() for i in range(len(a)))
    # On-demand generation: image 5 does not depend on what was generated before.
    fresh = build_dataset(SMALL)
    np.testing.assert_array_equal(fresh.raw(5)[0], a.raw(5)[0])
    np.testing.assert_array_equal(fresh.raw(-1)[1], a.raw(7)[1])
    other_seed = build_dataset(SMALL + ",seed=1")
    val = build_dataset(SMALL, split="val")
    for i in range(len(a)):
        assert not np.array_equal(a.raw(i)[0], other_seed.raw(i)[0])
        assert not np.array_equal(a.raw(i)[0], val.raw(i)[0])
    assert not np.array_equal(a.raw(0)[0], a.raw(1)[0])


def test_global_rng_untouched() -> None:
    """Generation and augmentation draw only from their own generators."""
    numpy_state = np.random.get_state()[1].copy()  # noqa: NPY002 (the legacy global RNG)
    torch_state = torch.get_rng_state()
    python_state = random.getstate()
    build_dataset(SMALL, transform=train_transforms(crop=32))[3]
    assert np.array_equal(np.random.get_state()[1], numpy_state)  # noqa: NPY002
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == python_state


def test_regimes_differ_in_object_scale() -> None:
    tiny, huge, mixed = (_regime_stats(r) for r in ("tiny", "huge", "mixed"))
    assert (tiny["regime_code"] == 0).all() and (huge["regime_code"] == 1).all()
    assert (mixed["regime_code"] == 2).all()
    assert tiny["mean_object_area"].mean() < huge["mean_object_area"].mean() / 10
    assert tiny["max_object_area"].max() < 0.05 < huge["max_object_area"].min()
    assert (huge["object_count"] <= 3).all() and (tiny["object_count"] >= 8).all()
    # an occluded large object can leave a small visible fragment
    assert tiny["small_fraction"].mean() > 0.4 and huge["small_fraction"].mean() < 0.1
    # Mixed has one large object and many small ones.
    assert (mixed["max_object_area"] > 0.05).mean() > 0.9 and mixed["small_fraction"].mean() > 0.3


def test_per_image_regime_varies() -> None:
    ds = SyntheticScenes(count=24, size=(64, 64))
    codes = {ds.stats(i)["regime_code"] for i in range(len(ds))}
    assert codes == {0.0, 1.0, 2.0}


@pytest.mark.parametrize("regime", ["tiny", "huge", "mixed"])
def test_stats_agree_with_label_map(regime: str) -> None:
    ds = SyntheticScenes(count=6, size=(80, 64), regime=regime, num_classes=5)
    for i in range(len(ds)):
        sample = ds.sample(i)
        stats, label, inst = sample.stats, sample.label, sample.instances
        assert stats == ds[i]["stats"]
        assert stats["foreground_fraction"] == pytest.approx(np.mean(label != 0))
        assert np.array_equal(inst > 0, label > 0)
        areas = np.bincount(inst.ravel())[1:]
        areas = areas[areas > 0] / label.size
        assert stats["object_count"] == len(areas)
        assert stats["max_object_area"] == pytest.approx(areas.max())
        assert stats["median_object_area"] == pytest.approx(np.median(areas))
        assert stats["mean_object_area"] * stats["object_count"] == pytest.approx(
            stats["foreground_fraction"]
        )
        assert stats["small_fraction"] == pytest.approx(np.mean(areas < 0.01))
        assert stats["classes_present"] == len(np.unique(label[label > 0]))
        # Each visible object has a single class.
        for k in np.unique(inst[inst > 0]):
            assert len(np.unique(label[inst == k])) == 1
        assert label.max() < ds.num_classes


def _nearest_colour_accuracy(regime: str) -> tuple[float, float]:
    """Share of object pixels a nearest-class-colour rule gets right (means from the same set),
    and the smallest distance between two class means."""
    ds = SyntheticScenes(count=24, size=(64, 64), regime=regime, seed=7)
    pairs = [ds.raw(i) for i in range(len(ds))]
    pixels = np.concatenate([img.reshape(-1, 3) for img, _ in pairs]).astype(np.float64)
    labels = np.concatenate([lab.ravel() for _, lab in pairs])
    means = np.stack([pixels[labels == k].mean(0) for k in range(ds.num_classes)])
    gaps = np.linalg.norm(means[:, None] - means[None], axis=-1)[np.triu_indices(6, 1)]
    nearest = np.argmin(((pixels[:, None] - means[None]) ** 2).sum(-1), axis=1)
    object_pixels = labels > 0
    return float(np.mean(nearest[object_pixels] == labels[object_pixels])), float(gaps.min())


def test_classes_learnable_but_not_trivial() -> None:
    """A pair's small objects share a colour (texture is needed); its large ones do not."""
    small, small_gap = _nearest_colour_accuracy("tiny")
    large, large_gap = _nearest_colour_accuracy("huge")
    assert 1 / 5 < small < 0.85 and small_gap < 10  # a pair's small members share a colour
    assert large > 0.9 and large_gap > 5  # every class has its own colour when large


def test_generation_is_fast() -> None:
    ds = SyntheticScenes(count=20, size=(128, 128))
    ds.sample(0)
    start = time.perf_counter()
    for i in range(len(ds)):
        ds.sample(i)
    # 20 ms per 128x128 image is the budget; allow slack for a loaded CI machine.
    assert (time.perf_counter() - start) / len(ds) < 0.05


def test_transform_gets_reproducible_per_epoch_generator() -> None:
    ds = build_dataset(SMALL, transform=train_transforms(crop=(48, 40)), transform_seed=5)
    again = build_dataset(SMALL, transform=train_transforms(crop=(48, 40)), transform_seed=5)
    first = ds[2]
    assert first["image"].shape == (3, 48, 40) and first["label"].shape == (48, 40)
    assert torch.equal(first["image"], again[2]["image"])
    ds.set_epoch(1)
    assert not torch.equal(first["image"], ds[2]["image"])
    ds.set_epoch(0)
    assert torch.equal(first["label"], ds[2]["label"])
    # Stats describe the untransformed image.
    assert first["stats"] == build_dataset(SMALL).stats(2)


def test_default_collate_batches_items() -> None:
    batch = next(iter(DataLoader(build_dataset(SMALL), batch_size=3)))
    assert batch["image"].shape == (3, 3, 64, 64) and batch["label"].dtype == torch.int64
    assert batch["image_id"] == ["train_000000", "train_000001", "train_000002"]
    assert batch["stats"]["object_count"].shape == (3,)


def test_spec_options_and_canonical_form() -> None:
    spec = parse_spec("Synthetic: count=5 , size=48x80,classes=3,seed=9,regime=tiny")
    assert spec.options == {
        "count": 5,
        "size": (48, 80),
        "classes": 3,
        "seed": 9,
        "regime": "tiny",
    }
    ds = build_dataset(spec)
    assert (len(ds), ds.raw(0)[0].shape, ds.num_classes) == (5, (48, 80, 3), 3)
    assert build_dataset(ds.spec).raw(1)[0].tobytes() == ds.raw(1)[0].tobytes()
    assert parse_spec("synthetic:size=32").options["size"] == (32, 32)
    assert str(parse_spec("synthetic")) == (
        "synthetic:count=64,size=128x128,classes=6,seed=0,regime=per-image"
    )
    assert parse_spec("cityscapes:/a:b/c").path == Path("/a:b/c")


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("synthetic:count=5,colour=red", "'colour'"),
        ("synthetic:count", "'count'"),
        ("synthetic:count=abc", "count='abc'"),
        ("synthetic:count=0", "count='0'"),
        ("synthetic:size=12xx4", "size='12xx4'"),
        ("synthetic:regime=large", "regime='large'"),
        ("synthetic:seed=1,seed=2", "'seed' given twice"),
        ("synthetic:count=4,,seed=1", "stray comma"),
        ("synthetic:classes=1", "classes must be in 2"),
        ("synthetic:tiny=3-x", "tiny='3-x'"),
        ("synthetic:tiny=8-3", "tiny=(8.0, 3.0) must be a range"),
        ("synthetic:huge=1.5-2", "whole numbers"),
        ("synthetic:huge_area=0.01-0.5", "0.04 <= LO"),
        ("synthetic:checker=0-2", "checker=(0.0, 2.0)"),
        ("synthetic:dark=1.5", "dark=1.5 must be a number in (0, 1]"),
        ("synthetic:dark=0.5-0.7", "dark='0.5-0.7' in spec 'synthetic:dark=0.5-0.7': expected one"),
        ("synthetic:large=ramp", "large='ramp' must be one of brightness, radial"),
        ("synthetic:small=colour", "small='colour' must be one of texture, hue"),
        ("synthetic:large=radial,dark=0.7", "dark=0.7 has no effect with large=radial"),
        ("synthetic:small=hue,checker=3-4", "checker=(3.0, 4.0) has no effect with small=hue"),
        ("imagenet:/data", "'imagenet'"),
        ("cityscapes", "cityscapes:PATH"),
        ("", "empty dataset spec"),
    ],
)
def test_bad_spec_names_the_part(spec: str, named: str) -> None:
    with pytest.raises(DataError, match=None) as info:
        build_dataset(spec)
    assert named in str(info.value)


def test_scene_options_round_trip_and_stay_out_of_default_specs() -> None:
    spec = parse_spec("synthetic:count=4,size=48,tiny=3-8,checker=2.4-4,dark=0.7,huge=2")
    text = "synthetic:count=4,size=48x48,classes=6,seed=0,regime=per-image"
    assert str(spec) == text + ",tiny=3-8,huge=2-2,checker=2.4-4,dark=0.7"
    ds = build_dataset(spec)
    assert ds.options == SceneOptions(tiny=(3, 8), huge=(2, 2), checker=(2.4, 4.0), dark=0.7)
    assert (
        ds.spec == str(spec)
        and build_dataset(ds.spec).raw(3)[0].tobytes() == ds.raw(3)[0].tobytes()
    )
    # an option given at its default value is the default scenes, and the spec does not name it
    assert build_dataset("synthetic:count=4,size=48,tiny=10-24,dark=0.5").spec == text
    cues = build_dataset("synthetic:count=4,size=48,small=HUE,large=radial")
    assert cues.spec == text + ",large=radial,small=hue"
    assert cues.options == SceneOptions(large="radial", small="hue")
    assert build_dataset("synthetic:count=4,size=48,large=brightness,small=texture").spec == text


def _scenes_by_regime(spec: str) -> dict[str, list]:
    ds = build_dataset(spec)
    out: dict[str, list] = {"tiny": [], "huge": [], "mixed": []}
    for i in range(len(ds)):
        out[ds.sample(i).regime].append(ds.sample(i))
    return out


def test_scene_options_change_only_what_they_name() -> None:
    base = _scenes_by_regime("synthetic:count=60,size=64,seed=2")
    sparse = _scenes_by_regime("synthetic:count=60,size=64,seed=2,tiny=3-5")
    bigger = _scenes_by_regime("synthetic:count=60,size=64,seed=2,huge=3,huge_area=0.5-0.6")
    assert all(len(base[r]) >= 10 for r in base)

    def same(a: dict, b: dict, regimes: tuple[str, ...]) -> bool:
        pairs = [pair for r in regimes for pair in zip(a[r], b[r], strict=True)]
        return all(x.image.tobytes() == y.image.tobytes() for x, y in pairs) and all(
            x.label.tobytes() == y.label.tobytes() for x, y in pairs
        )

    # tiny=3-5: tiny-object scenes have at most 5 objects (occlusion may hide some), others equal
    assert max(s.stats["object_count"] for s in sparse["tiny"]) <= 5
    assert min(s.stats["object_count"] for s in base["tiny"]) >= 6
    assert same(base, sparse, ("huge", "mixed"))
    # huge=3, huge_area=0.5-0.6: the largest object of a huge-object scene covers more
    largest = np.median([s.stats["max_object_area"] for s in bigger["huge"]])
    assert largest > np.median([s.stats["max_object_area"] for s in base["huge"]]) + 0.05
    assert same(base, bigger, ("tiny", "mixed"))


def test_checker_option_changes_the_pixels_of_small_checkered_objects_only() -> None:
    base = SyntheticScenes(count=6, size=(64, 64), seed=1, regime="tiny")
    coarse = SyntheticScenes(
        count=6, size=(64, 64), seed=1, regime="tiny", options=SceneOptions(checker=(4.0, 5.0))
    )
    checkered = {cls + 1 for cls, style in enumerate(base._styles) if style.texture != "plain"}
    for i in range(len(base)):
        a, b = base.sample(i), coarse.sample(i)
        assert a.label.tobytes() == b.label.tobytes()  # the same objects in the same places
        changed = (a.image != b.image).any(axis=2)
        assert changed.any()
        assert np.isin(a.label[changed], list(checkered)).all()


def test_dark_option_sets_the_brightness_of_a_pairs_second_large_member() -> None:
    ds = SyntheticScenes(count=30, size=(64, 64), seed=4, regime="huge")
    lighter = SyntheticScenes(
        count=30, size=(64, 64), seed=4, regime="huge", options=SceneOptions(dark=0.8)
    )
    ratios = []
    for i in range(len(ds)):
        a, b = ds.sample(i), lighter.sample(i)
        inside = np.isin(a.label, (2, 4))  # the second members of the first two pairs
        inside &= a.label == b.label
        if inside.sum() > 50:
            ratios.append(b.image[inside].mean() / a.image[inside].mean())
    assert len(ratios) >= 5
    assert abs(np.median(ratios) - 0.8 / 0.5) < 0.1


def test_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for kind in ("cityscapes", "voc"):
        with pytest.raises(DataError, match="nowhere"):
            build_dataset(f"{kind}:{missing}")


def test_cityscapes_layout_round_trip(tmp_path: Path) -> None:
    ds = SyntheticScenes(count=3, size=(64, 80), num_classes=5, seed=2, split="val")
    write_cityscapes_layout(ds, tmp_path, "val")
    city = tmp_path / "gtFine" / "val" / "synth"
    assert (tmp_path / "leftImg8bit/val/synth/synth_000000_000002_leftImg8bit.png").is_file()
    assert (city / "synth_000000_000000_gtFine_labelTrainIds.png").is_file()
    assert (city / "synth_000000_000000_gtFine_labelIds.png").is_file()
    back = build_dataset(f"cityscapes:{tmp_path}", split="val")
    assert (len(back), back.num_classes, back.class_names) == (3, 5, ds.class_names)
    for i in range(3):
        for original, loaded in zip(ds.raw(i), back.raw(i), strict=True):
            np.testing.assert_array_equal(original, loaded)
        assert back.stats(i) == ds.stats(i)
    assert back.image_id(1) == "synth/synth_000000_000001"
    # The labelIds files alone map back to the same train ids.
    for path in city.glob("*_labelTrainIds.png"):
        path.unlink()
    relabelled = build_dataset(f"cityscapes:{tmp_path}", split="val")
    np.testing.assert_array_equal(relabelled.raw(2)[1], ds.raw(2)[1])
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["sources"]["val"] == ds.spec


def test_cityscapes_layout_many_classes_writes_train_ids_only(tmp_path: Path) -> None:
    ds = SyntheticScenes(count=2, size=(64, 64), num_classes=24, regime="tiny")
    write_cityscapes_layout(ds, tmp_path, "train")
    assert not list(tmp_path.glob("gtFine/train/synth/*_labelIds.png"))
    back = build_dataset(f"cityscapes:{tmp_path}")
    assert back.num_classes == 24
    np.testing.assert_array_equal(back.raw(1)[1], ds.raw(1)[1])
    assert len(CITYSCAPES_CLASSES) == 19


def test_cli_synth_writes_loadable_splits(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="dynviz data")
    data_cli.configure_parser(parser)
    out = tmp_path / "synth"
    args = parser.parse_args(
        ["synth", "--out", str(out), "--count", "3", "--size", "48", "64", "--classes", "4"]
    )
    assert data_cli.main(args) == 0
    train = build_dataset(f"cityscapes:{out}", split="train")
    val = build_dataset(f"cityscapes:{out}", split="val")
    assert (len(train), len(val), train.num_classes) == (3, 3, 4)
    assert train.raw(0)[0].shape == (48, 64, 3)
    assert not np.array_equal(train.raw(0)[0], val.raw(0)[0])
    assert val.stats(0) == build_dataset(
        "synthetic:count=3,size=48x64,classes=4", split="val"
    ).stats(0)
    bad = parser.parse_args(["synth", "--out", str(out), "--size", "4", "4"])
    assert data_cli.main(bad) == 2


def test_rewriting_a_split_replaces_it(tmp_path: Path) -> None:
    write_cityscapes_layout(SyntheticScenes(count=4, size=(32, 32)), tmp_path, "train")
    write_cityscapes_layout(SyntheticScenes(count=2, size=(32, 32), seed=1), tmp_path, "train")
    back = build_dataset(f"cityscapes:{tmp_path}")
    assert len(back) == 2 and back.name == "cityscapes"
    np.testing.assert_array_equal(
        back.raw(1)[0], SyntheticScenes(count=2, seed=1, size=(32, 32)).raw(1)[0]
    )
    with pytest.raises(DataError, match=META_FILE):
        write_cityscapes_layout(
            SyntheticScenes(count=1, size=(32, 32), num_classes=3), tmp_path, "x"
        )


def test_datasets_pickle_for_worker_processes(tmp_path: Path) -> None:
    ds = build_dataset(SMALL, transform=train_transforms(crop=32))
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[4]["image"], ds[4]["image"])
    write_cityscapes_layout(SyntheticScenes(count=1, size=(32, 32)), tmp_path, "train")
    city = pickle.loads(pickle.dumps(build_dataset(f"cityscapes:{tmp_path}")))
    assert city[0]["label"].shape == (32, 32)


def _object_cues(regime: str) -> list[tuple[int, float, float, float]]:
    """(class, high-frequency energy, mean brightness, area) of each visible object interior."""
    ds = SyntheticScenes(count=40, size=(96, 96), regime=regime, seed=3)
    cues = []
    for i in range(len(ds)):
        sample = ds.sample(i)
        gray = sample.image.astype(np.float64).mean(axis=2)
        for k in np.unique(sample.instances)[1:]:
            mask = sample.instances == k
            # interior pixels: the object on both sides horizontally and vertically
            inner = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1]
            inner &= mask[1:-1, :-2] & mask[1:-1, 2:]
            if inner.sum() < 12:
                continue
            centre = gray[1:-1, 1:-1]
            detail = np.abs(centre - gray[1:-1, 2:])[inner].mean()
            cls = int(sample.label[mask][0])
            cues.append((cls, detail, centre[inner].mean(), mask.mean()))
    return cues


def test_small_objects_show_their_class_by_fine_texture_large_ones_by_brightness() -> None:
    from dynviz.data.synthetic import DARK_MEMBER, LARGE_OBJECT_AREA

    small = [c for c in _object_cues("tiny") if c[3] < LARGE_OBJECT_AREA]
    large = [c for c in _object_cues("huge") if c[3] >= LARGE_OBJECT_AREA]
    assert len(small) > 100 and len(large) > 30

    # classes 1 and 2 share a hue: the second is checkered when small...
    def checkered(cues, classes):
        return np.mean([d > 10 for cls, d, _, _ in cues if cls in classes])

    assert checkered(small, (1, 3)) < 0.1 and checkered(small, (2, 4)) > 0.9
    # ...but every large object is plain, and the second member of a pair is the dark one
    assert checkered(large, (1, 2, 3, 4, 5)) < 0.1

    def brightness(classes):
        return np.mean([b for cls, _, b, _ in large if cls in classes])

    for first, second in ((1, 2), (3, 4)):
        ratio = brightness((second,)) / brightness((first,))
        assert abs(ratio - DARK_MEMBER) < 0.15, (first, second, ratio)


def test_scenes_are_made_once_and_kept_within_the_memory_limit(monkeypatch) -> None:
    from dynviz.data import synthetic

    monkeypatch.setattr(synthetic, "SCENE_CACHE_BYTES", 3 * 32 * 32 * 4)  # three 32x32 scenes
    ds = SyntheticScenes(count=5, size=(32, 32), seed=4)
    made = []
    original = ds.sample
    monkeypatch.setattr(ds, "sample", lambda i: made.append(i) or original(i))
    for _ in range(2):
        for i in range(5):
            image, label = ds.raw(i)
            fresh = original(i)
            assert np.array_equal(image, fresh.image) and np.array_equal(label, fresh.label)
    assert made == [0, 1, 2, 3, 4, 3, 4]  # the first three are kept, the rest made again
    image, _ = ds.raw(0)
    image[:] = 0  # the caller's copy: the kept scene is unchanged
    assert ds.raw(0)[0].any()
    monkeypatch.undo()  # the counting sample() above does not pickle
    assert len(ds._scenes) == 3 and pickle.loads(pickle.dumps(ds))._scenes == {}


def _objects(sample, smallest: int):
    """``(class, pixels)`` of each visible object of at least ``smallest`` pixels."""
    for number in np.unique(sample.instances[sample.instances > 0]):
        inside = sample.instances == number
        if inside.sum() >= smallest:
            yield int(sample.label[inside][0]), inside


def test_radial_option_shows_a_large_objects_class_by_centre_or_rim() -> None:
    # one object a scene, so that its visible pixels are the ones its profile was drawn on
    one = SceneOptions(huge=(1, 1))
    base = SyntheticScenes(count=16, size=(64, 64), seed=5, regime="huge", options=one)
    radial = SyntheticScenes(
        count=16,
        size=(64, 64),
        seed=5,
        regime="huge",
        options=dataclasses.replace(one, large="radial"),
    )
    styles = base._styles
    seen = {False: 0, True: 0}
    yy, xx = np.mgrid[0:64, 0:64]
    for i in range(len(base)):
        a, b = base.sample(i), radial.sample(i)
        assert a.label.tobytes() == b.label.tobytes()  # the same objects in the same places
        changed = (a.image != b.image).any(axis=2)
        assert not changed[a.label == 0].any()  # the background is untouched
        value = b.image.astype(float).max(axis=2)
        for cls, inside in _objects(b, 400):
            distance = np.hypot(yy - yy[inside].mean(), xx - xx[inside].mean())
            d = distance / distance[inside].max()
            centre, rim = value[inside & (d < 0.3)].mean(), value[inside & (d > 0.75)].mean()
            second = styles[cls - 1].dark
            # first member: bright centre (1 at d=0, 0.4 at d=1); second: bright rim
            assert (rim > 1.4 * centre) if second else (centre > 1.4 * rim), (i, cls)
            seen[second] += 1
    assert min(seen.values()) >= 3


def test_hue_option_shows_a_small_objects_class_by_its_side_of_the_pairs_hue() -> None:
    ds = SyntheticScenes(
        count=12, size=(64, 64), seed=6, regime="tiny", options=SceneOptions(small="hue")
    )
    textured = SyntheticScenes(count=12, size=(64, 64), seed=6, regime="tiny")
    styles = ds._styles
    shifts = {False: [], True: []}
    for i in range(len(ds)):
        sample = ds.sample(i)
        for cls, inside in _objects(sample, 12):
            rgb = sample.image[inside].astype(float) / 255.0
            hue = colorsys.rgb_to_hsv(*rgb.mean(axis=0))[0]
            shifts[styles[cls - 1].dark].append((hue - styles[cls - 1].hue + 0.5) % 1.0 - 0.5)
            assert rgb.max(axis=1).std() < 0.05  # plain: no checkerboard
    assert min(len(v) for v in shifts.values()) >= 10
    # the first member below the pair's hue, the second above, both clearly off it
    assert max(shifts[False]) < -0.03 and min(shifts[True]) > 0.03
    checkered = [
        sample.image[inside].astype(float).max(axis=1).std() / 255.0
        for sample in map(textured.sample, range(len(textured)))
        for cls, inside in _objects(sample, 12)
        if styles[cls - 1].texture == "checkered"
    ]
    assert np.median(checkered) > 0.1  # the default scenes' second members are checkered
