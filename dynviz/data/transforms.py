"""Joint image/label transforms and the official input normalisation.

Every transform works on numpy arrays *before* normalisation: ``image`` is ``(H, W, 3)`` uint8
RGB and ``label`` is ``(H, W)`` uint8 (255 = ignore). Transforms are plain callables with the
signature::

    transform(image, label, rng) -> (image, label)

where ``rng`` is a :class:`numpy.random.Generator`. Random transforms draw *only* from that
generator, so a training run is reproducible and resumable: the dataset derives one generator
per ``(transform_seed, epoch, index)`` (see :class:`dynviz.data.base.SegmentationDataset`) and
:class:`Compose` passes it through. Passing ``rng=None`` uses fresh OS entropy (not
reproducible; fine for interactive use). Deterministic transforms ignore ``rng``.

The training recipe follows the official DynamicRouting code (Cityscapes): random rescale with
scale 0.5-2.0 (image bilinear, label nearest), horizontal flip with p = 0.5, then a random crop
that pads centrally with image 0 and label 255 where the image is smaller than the crop. The
official code draws the short side from {512, ..., 2048}; :class:`RandomScale` draws the factor
uniformly from a continuous range instead, which covers the same scales at any input size. No
colour jitter, as in the official recipe.

Normalisation (:func:`normalize`) also follows the official code: BGR channel order, subtract the
mean ``[103.530, 116.280, 123.675]`` (BGR), std 1 (no division).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from PIL import Image

__all__ = [
    "IGNORE_INDEX",
    "PIXEL_MEAN_BGR",
    "PIXEL_STD",
    "Compose",
    "RandomCropPad",
    "RandomHorizontalFlip",
    "RandomScale",
    "Resize",
    "Transform",
    "denormalize",
    "normalize",
    "train_transforms",
]

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
"""Label value that marks pixels excluded from the loss and the metrics."""

PIXEL_MEAN_BGR = (103.530, 116.280, 123.675)
"""Per-channel mean subtracted by :func:`normalize`, in BGR order (official code)."""

PIXEL_STD = (1.0, 1.0, 1.0)
"""Per-channel std of the official code: 1, so :func:`normalize` does not divide."""


class Transform(Protocol):
    """A joint image/label transform (see the module docstring for the contract)."""

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Transform one ``(H, W, 3)`` uint8 image and its ``(H, W)`` uint8 label."""
        ...


def _generator(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """Turn ``n`` or ``(h, w)`` into a validated ``(h, w)`` of positive ints."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v <= 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair (h, w), got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_pair(image: np.ndarray, label: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if label.shape != image.shape[:2]:
        raise ValueError(f"label shape {label.shape} does not match image {image.shape[:2]}")


def _resize_pair(
    image: np.ndarray, label: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Resize to ``size = (h, w)``: image bilinear, label nearest (no new label values)."""
    _check_pair(image, label)
    height, width = size
    if (height, width) == label.shape:
        return image, label
    pil_size = (width, height)  # PIL sizes are (width, height)
    image = np.asarray(Image.fromarray(image).resize(pil_size, Image.Resampling.BILINEAR))
    label = np.asarray(
        Image.fromarray(label.astype(np.uint8, copy=False)).resize(
            pil_size, Image.Resampling.NEAREST
        )
    )
    return image, label


class Compose:
    """Apply transforms in order, passing the same generator to each.

    Args:
        transforms: the transforms to chain.
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = _generator(rng)
        for transform in self.transforms:
            image, label = transform(image, label, rng)
        return image, label

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


class Resize:
    """Resize to a fixed ``(h, w)``; image bilinear, label always nearest.

    Args:
        size: output size, an int for a square or ``(h, w)``.
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size, "size")

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return _resize_pair(image, label, self.size)

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


class RandomScale:
    """Rescale both sides by one factor drawn uniformly from ``[min_scale, max_scale]``.

    The image is resampled bilinearly, the label by nearest neighbour. Output sides are rounded
    and at least 1 pixel.

    Args:
        min_scale: smallest factor (official: 0.5).
        max_scale: largest factor (official: 2.0).
    """

    def __init__(self, min_scale: float = 0.5, max_scale: float = 2.0) -> None:
        if not 0 < min_scale <= max_scale:
            raise ValueError(
                f"need 0 < min_scale <= max_scale, got min_scale={min_scale}, max_scale={max_scale}"
            )
        self.min_scale = float(min_scale)
        self.max_scale = float(max_scale)

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        factor = _generator(rng).uniform(self.min_scale, self.max_scale)
        height, width = label.shape
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        return _resize_pair(image, label, size)

    def __repr__(self) -> str:
        return f"RandomScale({self.min_scale}, {self.max_scale})"


class RandomHorizontalFlip:
    """Flip image and label left-right together with probability ``p``.

    Args:
        p: flip probability (official: 0.5).
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        # Always draw, so the stream of later transforms does not depend on p being 0 or 1.
        if _generator(rng).random() < self.p:
            return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(label[:, ::-1])
        return image, label

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomCropPad:
    """Crop a fixed-size window, padding centrally first where the input is smaller.

    As the official ``RandomCropPad``: along each side shorter than the crop the input is padded
    centrally (image with ``image_fill``, label with ``label_fill``); then a window of ``crop``
    is taken at a uniformly random offset (offset 0 along padded sides).

    Args:
        crop: output size, an int for a square or ``(h, w)`` (official: 768).
        image_fill: pad value for the image (official: 0).
        label_fill: pad value for the label (official: 255, ignored).
    """

    def __init__(
        self, crop: int | Sequence[int], image_fill: int = 0, label_fill: int = IGNORE_INDEX
    ) -> None:
        self.crop = _pair(crop, "crop")
        self.image_fill = int(image_fill)
        self.label_fill = int(label_fill)

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        _check_pair(image, label)
        rng = _generator(rng)
        crop_h, crop_w = self.crop
        height, width = label.shape
        pad_h, pad_w = max(0, crop_h - height), max(0, crop_w - width)
        if pad_h or pad_w:
            pads = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
            image = np.pad(image, (*pads, (0, 0)), constant_values=self.image_fill)
            label = np.pad(label, pads, constant_values=self.label_fill)
            height, width = label.shape
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        window = (slice(top, top + crop_h), slice(left, left + crop_w))
        return np.ascontiguousarray(image[window]), np.ascontiguousarray(label[window])

    def __repr__(self) -> str:
        return f"RandomCropPad(crop={self.crop})"


def train_transforms(
    crop: int | Sequence[int], scale: tuple[float, float] = (0.5, 2.0), flip_p: float = 0.5
) -> Compose:
    """The official training augmentation: rescale, flip, crop-pad.

    Args:
        crop: crop size, an int or ``(h, w)`` (official: 768x768 on Cityscapes).
        scale: ``(min, max)`` rescale factor range.
        flip_p: horizontal flip probability.

    Returns:
        A :class:`Compose` taking ``(image, label, rng)``.
    """
    return Compose(
        [RandomScale(*scale), RandomHorizontalFlip(flip_p), RandomCropPad(crop)],
    )


def normalize(image: np.ndarray) -> torch.Tensor:
    """Turn an RGB uint8 image into the network input of the official code.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.

    Returns:
        ``(3, H, W)`` float32 tensor, channels in BGR order, mean-subtracted, not scaled.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {image.shape}")
    bgr = image[:, :, ::-1].astype(np.float32) - np.asarray(PIXEL_MEAN_BGR, dtype=np.float32)
    bgr /= np.asarray(PIXEL_STD, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))


def denormalize(tensor: torch.Tensor) -> np.ndarray:
    """Invert :func:`normalize` for display.

    Args:
        tensor: ``(3, H, W)`` or ``(B, 3, H, W)`` normalised BGR tensor (any device).

    Returns:
        ``(H, W, 3)`` or ``(B, H, W, 3)`` uint8 RGB array (rounded and clipped).
    """
    array = tensor.detach().to("cpu", torch.float32).numpy()
    if array.ndim not in (3, 4) or array.shape[-3] != 3:
        raise ValueError(f"expected (3, H, W) or (B, 3, H, W), got {tuple(array.shape)}")
    channels_last = np.moveaxis(array, -3, -1)  # (..., H, W, 3), BGR
    channels_last = channels_last * np.asarray(PIXEL_STD, dtype=np.float32)
    channels_last = channels_last + np.asarray(PIXEL_MEAN_BGR, dtype=np.float32)
    rgb = channels_last[..., ::-1]
    return np.ascontiguousarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
