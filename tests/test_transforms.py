"""Joint transforms and the official normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dynviz.data.transforms import (
    PIXEL_MEAN_BGR,
    Compose,
    RandomCropPad,
    RandomHorizontalFlip,
    RandomScale,
    Resize,
    denormalize,
    normalize,
    train_transforms,
)


def _pair(height: int = 40, width: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    label = rng.choice(np.array([0, 1, 5, 255], dtype=np.uint8), (height, width))
    return image, label


def test_normalize_numbers() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30  # R, G, B
    out = normalize(image)
    assert out.dtype == torch.float32 and out.shape == (3, 2, 3)
    # BGR order, mean subtracted, no division by a std.
    assert out[0, 0, 0].item() == pytest.approx(30 - 103.530, abs=1e-4)
    assert out[1, 0, 0].item() == pytest.approx(20 - 116.280, abs=1e-4)
    assert out[2, 0, 0].item() == pytest.approx(10 - 123.675, abs=1e-4)
    assert PIXEL_MEAN_BGR == (103.530, 116.280, 123.675)


def test_denormalize_inverts_normalize() -> None:
    image, _ = _pair()
    np.testing.assert_array_equal(denormalize(normalize(image)), image)
    batch = torch.stack([normalize(image), normalize(image[::-1].copy())])
    restored = denormalize(batch)
    assert restored.shape == (2, 40, 60, 3)
    np.testing.assert_array_equal(restored[1], image[::-1])
    with pytest.raises(ValueError):
        denormalize(torch.zeros(4, 5, 5))


def test_flip_flips_both() -> None:
    image, label = _pair()
    flipped_image, flipped_label = RandomHorizontalFlip(p=1.0)(
        image, label, np.random.default_rng()
    )
    np.testing.assert_array_equal(flipped_image, image[:, ::-1])
    np.testing.assert_array_equal(flipped_label, label[:, ::-1])
    same = RandomHorizontalFlip(p=0.0)(image, label, np.random.default_rng())
    assert same[0] is image and same[1] is label
    flips = [RandomHorizontalFlip()(image, label, np.random.default_rng(s))[1] for s in range(40)]
    share = np.mean([np.array_equal(f, label[:, ::-1]) for f in flips])
    assert 0.2 < share < 0.8


def test_crop_pad_pads_centrally_with_0_and_255() -> None:
    image = np.full((10, 20, 3), 7, np.uint8)
    label = np.full((10, 20), 3, np.uint8)
    out_image, out_label = RandomCropPad((16, 24))(image, label, np.random.default_rng(0))
    assert out_image.shape == (16, 24, 3) and out_label.shape == (16, 24)
    # 6 rows and 4 columns of padding, split evenly around the input.
    assert (out_image[3:13, 2:22] == 7).all() and (out_label[3:13, 2:22] == 3).all()
    ring = np.ones((16, 24), bool)
    ring[3:13, 2:22] = False
    assert (out_image[ring] == 0).all() and (out_label[ring] == 255).all()


def test_crop_is_a_random_window() -> None:
    image, label = _pair(30, 50)
    offsets = set()
    for seed in range(10):
        out_image, out_label = RandomCropPad(16)(image, label, np.random.default_rng(seed))
        matches = [
            (top, left)
            for top in range(30 - 16 + 1)
            for left in range(50 - 16 + 1)
            if np.array_equal(out_image, image[top : top + 16, left : left + 16])
        ]
        assert len(matches) == 1
        top, left = matches[0]
        np.testing.assert_array_equal(out_label, label[top : top + 16, left : left + 16])
        offsets.add(matches[0])
    assert len(offsets) > 5


def test_crop_pads_one_side_and_crops_the_other() -> None:
    image, label = _pair(10, 50)
    out_image, out_label = RandomCropPad((14, 20))(image, label, np.random.default_rng(1))
    assert out_label.shape == (14, 20)
    assert (out_label[:2] == 255).all() and (out_label[-2:] == 255).all()
    assert (out_image[:2] == 0).all() and (out_label[2:12] != 255).any()


def test_random_scale_range_and_nearest_labels() -> None:
    image, label = _pair(40, 60)
    sizes = set()
    for seed in range(12):
        out_image, out_label = RandomScale(0.5, 2.0)(image, label, np.random.default_rng(seed))
        height, width = out_label.shape
        assert 20 <= height <= 80 and out_image.shape == (height, width, 3)
        assert width == pytest.approx(height * 1.5, abs=1.5)
        assert set(np.unique(out_label)) <= {0, 1, 5, 255}
        sizes.add(height)
    assert len(sizes) > 6


@settings(max_examples=30, deadline=None)
@given(
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    out_h=st.integers(1, 40),
    out_w=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_resize_never_invents_label_values(
    height: int, width: int, out_h: int, out_w: int, seed: int
) -> None:
    image, label = _pair(height, width, seed)
    out_image, out_label = Resize((out_h, out_w))(image, label)
    assert out_image.shape == (out_h, out_w, 3) and out_label.shape == (out_h, out_w)
    assert set(np.unique(out_label)) <= set(np.unique(label))


def test_resize_upsamples_labels_by_repetition() -> None:
    label = np.array([[0, 1], [2, 255]], np.uint8)
    image = np.zeros((2, 2, 3), np.uint8)
    _, out = Resize((4, 4))(image, label)
    np.testing.assert_array_equal(out, np.kron(label, np.ones((2, 2), np.uint8)))


def test_train_transforms_reproducible_from_generator() -> None:
    image, label = _pair(50, 70)
    transform = train_transforms(crop=(32, 48))
    assert isinstance(transform, Compose) and len(transform.transforms) == 3
    first = transform(image, label, np.random.default_rng(42))
    second = transform(image, label, np.random.default_rng(42))
    other = transform(image, label, np.random.default_rng(43))
    assert first[0].shape == (32, 48, 3) and first[1].shape == (32, 48)
    assert first[0].dtype == np.uint8 and first[1].dtype == np.uint8
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], other[0])
    assert set(np.unique(first[1])) <= {0, 1, 5, 255}


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        RandomScale(2.0, 0.5)
    with pytest.raises(ValueError):
        RandomHorizontalFlip(1.5)
    with pytest.raises(ValueError):
        RandomCropPad((0, 4))
    with pytest.raises(ValueError):
        Resize((4, 4))(np.zeros((3, 3, 3), np.uint8), np.zeros((2, 3), np.uint8))
