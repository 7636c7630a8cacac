"""Cityscapes and VOC folder layouts, read from fixtures written by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dynviz.data import (
    CITYSCAPES_CLASSES,
    VOC_CLASSES,
    CityscapesDataset,
    DataError,
    VOCDataset,
    build_dataset,
    read_image,
    read_label,
)

H, W = 64, 96


def _rgb(seed: int, height: int = H, width: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _smooth_rgb(seed: int) -> np.ndarray:
    """A gradient image that JPEG keeps close to the original."""
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([2 * xx, 3 * yy, np.full_like(xx, 10 * seed)], -1).astype(np.uint8)


def _write_cityscapes(
    root: Path,
    split: str = "train",
    city: str = "aachen",
    frames: int = 2,
    label: np.ndarray | None = None,
    kind: str = "labelTrainIds",
) -> list[Path]:
    """Write ``frames`` image/label pairs; returns the image paths."""
    image_dir = root / "leftImg8bit" / split / city
    label_dir = root / "gtFine" / split / city
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for frame in range(frames):
        stem = f"{city}_000000_{frame:06d}"
        path = image_dir / f"{stem}_leftImg8bit.png"
        Image.fromarray(_rgb(frame)).save(path)
        values = label if label is not None else np.full((H, W), frame, dtype=np.uint8)
        Image.fromarray(values).save(label_dir / f"{stem}_gtFine_{kind}.png")
        paths.append(path)
    return paths


def test_label_ids_map_to_train_ids(tmp_path: Path) -> None:
    ids = np.zeros((H, W), dtype=np.uint8)
    # road, car, unlabeled, parking (no trainId), bicycle, sky, 255 (not in the table), 200.
    for column, label_id in enumerate([7, 26, 0, 9, 33, 23, 255, 200]):
        ids[:, column * 12 : (column + 1) * 12] = label_id
    _write_cityscapes(tmp_path, frames=1, label=ids, kind="labelIds")
    ds = build_dataset(f"cityscapes:{tmp_path}")
    _, train_ids = ds.raw(0)
    assert train_ids[0, ::12].tolist() == [0, 13, 255, 255, 18, 10, 255, 255]
    assert ds.num_classes == 19 and ds.class_names == list(CITYSCAPES_CLASSES)
    assert ds.class_names[0] == "road" and ds.class_names[13] == "car"
    assert ds.class_names[18] == "bicycle"
    assert ds[0]["stats"] == {} and ds.image_id(0) == "aachen/aachen_000000_000000"


def test_the_shipped_label_table_is_cityscapesscripts_table() -> None:
    """dynviz ships the 19 train classes (names, labelIds, colours) so that the base install reads
    Cityscapes data; they must equal cityscapesscripts' own table, entry by entry."""
    labels = pytest.importorskip("cityscapesscripts.helpers.labels").labels
    from dynviz.data.cityscapes import (
        TRAIN_LABELS,
        label_id_to_train_id_lut,
        train_id_to_label_id_lut,
    )
    from dynviz.data.palette import cityscapes_palette

    theirs = sorted(
        (lab.trainId, lab.name, lab.id, lab.color) for lab in labels if 0 <= lab.trainId < 19
    )
    assert theirs == [(k, n, i, c) for k, (n, i, c) in enumerate(TRAIN_LABELS)]
    assert list(CITYSCAPES_CLASSES) == [name for _, name, _, _ in theirs]
    lut = np.full(256, 255, np.uint8)
    for lab in labels:
        if 0 <= lab.id < 256 and 0 <= lab.trainId < 19:
            lut[lab.id] = lab.trainId
    np.testing.assert_array_equal(label_id_to_train_id_lut(), lut)
    back = train_id_to_label_id_lut()
    assert [int(back[k]) for k in range(19)] == [i for _, _, i, _ in theirs]
    assert cityscapes_palette()[:19].tolist() == [list(c) for _, _, _, c in theirs]


def test_cityscapes_data_needs_no_cityscapesscripts(tmp_path: Path) -> None:
    """With cityscapesscripts unimportable, the package, the labelIds mapping and the colours all
    work (a fresh interpreter, so nothing imported earlier hides an import)."""
    import subprocess
    import sys

    ids = np.full((H, W), 26, np.uint8)  # car
    _write_cityscapes(tmp_path, frames=1, label=ids, kind="labelIds")
    script = (
        "import sys\n"
        "sys.modules['cityscapesscripts'] = None\n"
        "import dynviz, dynviz.cli, dynviz.data\n"
        "from dynviz.data import build_dataset\n"
        "from dynviz.data.palette import palette_for\n"
        f"ds = build_dataset('cityscapes:{tmp_path.as_posix()}')\n"
        "label = ds.raw(0)[1]\n"
        "print(ds.num_classes, int(label[0, 0]), palette_for('cityscapes')[13].tolist())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["19", "13", "[0,", "0,", "142]"]


def test_train_ids_preferred_over_label_ids(tmp_path: Path) -> None:
    _write_cityscapes(tmp_path, frames=1, label=np.full((H, W), 7, np.uint8), kind="labelIds")
    _write_cityscapes(tmp_path, frames=1, label=np.full((H, W), 3, np.uint8))
    assert np.unique(CityscapesDataset(tmp_path).raw(0)[1]).tolist() == [3]


def test_cityscapes_sorted_over_cities(tmp_path: Path) -> None:
    _write_cityscapes(tmp_path, city="zurich", frames=1)
    _write_cityscapes(tmp_path, city="bonn", frames=2)
    ds = CityscapesDataset(tmp_path)
    assert [ds.image_id(i) for i in range(len(ds))] == [
        "bonn/bonn_000000_000000",
        "bonn/bonn_000000_000001",
        "zurich/zurich_000000_000000",
    ]


def test_cityscapes_missing_label_names_image(tmp_path: Path) -> None:
    images = _write_cityscapes(tmp_path, frames=2)
    next((tmp_path / "gtFine/train/aachen").glob("*000001*")).unlink()
    with pytest.raises(DataError, match="aachen_000000_000001") as info:
        CityscapesDataset(tmp_path)
    assert str(images[1]) in str(info.value)


def test_cityscapes_size_mismatch_names_label(tmp_path: Path) -> None:
    _write_cityscapes(tmp_path, frames=1)
    label_path = next((tmp_path / "gtFine").rglob("*.png"))
    Image.fromarray(np.zeros((H, W - 1), np.uint8)).save(label_path)
    ds = CityscapesDataset(tmp_path)
    with pytest.raises(DataError, match="size") as info:
        ds[0]
    assert str(label_path) in str(info.value)


def test_truncated_image_names_file(tmp_path: Path) -> None:
    (image,) = _write_cityscapes(tmp_path, frames=1)
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    ds = CityscapesDataset(tmp_path)
    with pytest.raises(DataError) as info:
        ds.raw(0)
    assert str(image) in str(info.value)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="garbage.png"):
        read_image(garbage)


def test_bad_label_value_names_file_and_values(tmp_path: Path) -> None:
    values = np.zeros((H, W), np.uint8)
    values[0, 0], values[1, 1], values[2, 2] = 19, 40, 255
    _write_cityscapes(tmp_path, frames=1, label=values)
    with pytest.raises(DataError, match=r"\[19, 40\]") as info:
        CityscapesDataset(tmp_path)[0]
    assert "aachen_000000_000000_gtFine_labelTrainIds.png" in str(info.value)


def test_empty_and_missing_split_name_the_folder(tmp_path: Path) -> None:
    _write_cityscapes(tmp_path, frames=1)
    empty = tmp_path / "leftImg8bit" / "val"
    (empty / "aachen").mkdir(parents=True)
    with pytest.raises(DataError, match="empty") as info:
        build_dataset(f"cityscapes:{tmp_path}", split="val")
    assert str(empty) in str(info.value)
    with pytest.raises(DataError, match="split folder not found") as info:
        build_dataset(f"cityscapes:{tmp_path}", split="test")
    assert str(tmp_path / "leftImg8bit" / "test") in str(info.value)


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P"])
def test_non_rgb_images_become_rgb(tmp_path: Path, mode: str) -> None:
    (image_path,) = _write_cityscapes(tmp_path, frames=1)
    rgb = _rgb(0)
    if mode in ("L", "LA"):
        gray = rgb[:, :, 0]
        Image.fromarray(gray).convert(mode).save(image_path)
        expected = np.repeat(gray[:, :, None], 3, axis=2)
    elif mode == "RGBA":
        Image.fromarray(np.dstack([rgb, np.full((H, W), 10, np.uint8)])).save(image_path)
        expected = rgb  # alpha is dropped, not composited
    else:
        palette_image = Image.fromarray(rgb).quantize(colors=16)
        palette_image.save(image_path)
        expected = np.asarray(palette_image.convert("RGB"))
    assert Image.open(image_path).mode == mode
    image, _ = CityscapesDataset(tmp_path).raw(0)
    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    np.testing.assert_array_equal(image, expected)


def test_read_label_rejects_colour_labels(tmp_path: Path) -> None:
    path = tmp_path / "colour.png"
    Image.fromarray(_rgb(1)).save(path)
    with pytest.raises(DataError, match="colour.png"):
        read_label(path)
    with pytest.raises(DataError, match="missing.png"):
        read_label(tmp_path / "missing.png")


# VOC -------------------------------------------------------------------------------------------


def _voc_palette() -> list[int]:
    """The standard VOC colour map (bit-interleaved), flattened for PIL."""
    palette = []
    for index in range(256):
        r = g = b = 0
        value = index
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette += [r, g, b]
    return palette


def _voc_label(cls: int) -> np.ndarray:
    """A class-``cls`` square on background with a 255 boundary band."""
    label = np.zeros((H, W), np.uint8)
    label[16:48, 24:72] = 255
    label[18:46, 26:70] = cls
    return label


def _write_voc(
    devkit: Path, splits: dict[str, list[str]], aug: dict[str, int] | None = None
) -> Path:
    """Write a VOC2012 tree under ``devkit``; ``aug`` maps extra SBD ids to a label class."""
    root = devkit / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids = sorted({i for members in splits.values() for i in members})
    for number, image_id in enumerate(ids, start=1):
        jpeg = root / "JPEGImages" / f"{image_id}.jpg"
        Image.fromarray(_smooth_rgb(number)).save(jpeg, quality=95)
        label = Image.fromarray(_voc_label(number % 20 + 1)).convert("P")
        label.putpalette(_voc_palette())
        label.save(root / "SegmentationClass" / f"{image_id}.png")
    for split, members in splits.items():
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(members) + "\n")
    if aug is not None:
        (root / "SegmentationClassAug").mkdir()
        for image_id, cls in aug.items():
            Image.fromarray(_smooth_rgb(cls)).save(root / "JPEGImages" / f"{image_id}.jpg")
            Image.fromarray(np.full((H, W), cls, np.uint8)).save(
                root / "SegmentationClassAug" / f"{image_id}.png"
            )
    return root


def test_voc_palette_labels_read_as_indices(tmp_path: Path) -> None:
    root = _write_voc(tmp_path / "VOCdevkit", {"train": ["2007_000032"], "val": ["2007_000033"]})
    assert Image.open(root / "SegmentationClass" / "2007_000032.png").mode == "P"
    for path in (tmp_path / "VOCdevkit", root):  # VOCdevkit or VOC2012 itself
        ds = build_dataset(f"voc:{path}", split="val")
        image, label = ds.raw(0)
        np.testing.assert_array_equal(label, _voc_label(2 % 20 + 1))
        assert sorted(np.unique(label).tolist()) == [0, 3, 255]
        assert image.shape == (H, W, 3) and ds.image_id(0) == "2007_000033"
    # JPEG is lossy: close to the source, not equal.
    assert np.abs(image.astype(int) - _smooth_rgb(2).astype(int)).mean() < 3
    assert (ds.num_classes, ds.class_names) == (21, list(VOC_CLASSES))
    assert ds[0]["label"].max().item() == 255 and ds[0]["stats"] == {}


def test_voc_trainaug_uses_sbd_labels(tmp_path: Path) -> None:
    root = _write_voc(tmp_path, {"train": ["a", "b"], "val": ["c"]}, aug={"x": 7, "y": 9})
    lists = root / "ImageSets/Segmentation"
    (lists / "aug.txt").write_text("x\ny\n")
    ds = VOCDataset(root, "train")
    assert [ds.image_id(i) for i in range(len(ds))] == ["a", "b", "x", "y"]
    assert np.unique(ds.raw(2)[1]).tolist() == [7]
    assert 255 in ds.raw(0)[1]  # VOC ids keep their fine SegmentationClass label
    (lists / "trainaug.txt").write_text("y\na\n")
    ds = build_dataset(f"voc:{root}", split="trainaug")
    assert [ds.image_id(i) for i in range(len(ds))] == ["y", "a"]
    assert len(VOCDataset(root, "val")) == 1


def test_voc_errors_name_the_file(tmp_path: Path) -> None:
    root = _write_voc(tmp_path, {"train": ["a", "b"], "val": ["c"]})
    lists = root / "ImageSets/Segmentation"
    with pytest.raises(DataError, match="trainaug"):
        VOCDataset(root, "trainaug")
    with pytest.raises(DataError, match="test.txt"):
        VOCDataset(root, "test")
    (lists / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="empty") as info:
        VOCDataset(root, "empty")
    assert str(lists / "empty.txt") in str(info.value)
    (root / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(DataError, match="b.png"):
        VOCDataset(root, "train")
    (root / "JPEGImages" / "c.jpg").unlink()
    with pytest.raises(DataError, match="c.jpg"):
        VOCDataset(root, "val")
    Image.fromarray(np.full((H, W), 30, np.uint8)).save(root / "SegmentationClass" / "b.png")
    with pytest.raises(DataError, match=r"b\.png has values \[30\]"):
        VOCDataset(root, "train")[1]
    with pytest.raises(DataError, match="JPEGImages"):
        VOCDataset(tmp_path / "VOC2012" / "ImageSets")
