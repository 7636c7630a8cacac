"""Shared pieces of every dataset: file reading, label checks and the dataset base class.

:func:`read_image` and :func:`read_label` are the only places that open image files; both raise
:class:`~dynviz.data.errors.DataError` naming the file. Images are always returned as RGB:
grayscale (``L``, ``I;16``), palette (``P``), ``CMYK`` and ``RGBA``/``LA`` images are converted,
and an alpha channel is dropped (not composited). Labels are single-channel index images: palette
PNGs are read as their indices, never as colours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from dynviz.data.errors import DataError, DataFileError
from dynviz.data.transforms import IGNORE_INDEX, normalize

__all__ = [
    "DatasetTransform",
    "SegmentationDataset",
    "MIN_IMAGE_SIDE",
    "check_image_size",
    "check_label_values",
    "load_pair",
    "read_image",
    "read_label",
]

logger = logging.getLogger(__name__)

DatasetTransform = Callable[
    [np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]
]
"""``transform(image HxWx3 uint8 RGB, label HxW uint8, rng) -> (image, label)``."""

_LABEL_MODES = ("L", "P", "1", "I", "I;16", "I;16B", "I;16L")


def _open(path: Path, what: str, *, exif_transpose: bool = False) -> Image.Image:
    """Open and fully decode ``path`` (decoding is where truncated files fail); with
    ``exif_transpose``, turned upright as its EXIF Orientation tag says."""
    if not path.is_file():
        raise DataFileError(f"{what} file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()  # the decoded pixels stay valid after the file is closed
            if exif_transpose:
                return ImageOps.exif_transpose(img)
            return img
    except DataError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, EOFError, zlib.error, ...
        raise DataFileError(f"cannot read {what} {path}: {exc}") from exc


MIN_IMAGE_SIDE = 8
"""The smallest height or width of an image that a command segments on its own (``predict``,
``attribute``, ``flops --image``, the explorer's uploads): 2x2 features at 1/4. A smaller image
is refused, not padded into a prediction that means nothing."""


def image_size_problem(name: str | Path, height: int, width: int) -> str | None:
    """Why an image of this size is not segmented (a side under :data:`MIN_IMAGE_SIDE`), naming
    the file; None when it is fine."""
    if min(height, width) < MIN_IMAGE_SIDE:
        return (
            f"{name}: {width}x{height} (WxH) is too small to segment; the least is "
            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}"
        )
    return None


def check_image_size(image: np.ndarray, name: str | Path) -> np.ndarray:
    """``image`` when both its sides are at least :data:`MIN_IMAGE_SIDE`.

    Raises:
        DataFileError: naming the file and its size (:func:`image_size_problem`).
    """
    problem = image_size_problem(name, *image.shape[:2])
    if problem:
        raise DataFileError(problem)
    return image


def read_image(path: str | Path, *, exif_transpose: bool = False) -> np.ndarray:
    """Read an image file as RGB.

    Args:
        path: image file (any format PIL reads).
        exif_transpose: turn the image upright as its EXIF Orientation tag says (a photo
            tagged Orientation=6 comes back rotated, as viewers show it).

    Returns:
        ``(H, W, 3)`` uint8 RGB array. Grayscale, palette and CMYK images are converted; the alpha
        channel of RGBA/LA images is dropped.

    Raises:
        DataError: the file is missing, unreadable or truncated (the message names it).
    """
    path = Path(path)
    img = _open(path, "image", exif_transpose=exif_transpose)
    if img.mode != "RGB":
        logger.debug("converting %s image %s to RGB", img.mode, path)
    return to_rgb(img)


def to_rgb(img: Image.Image) -> np.ndarray:
    """A decoded PIL image as a ``(H, W, 3)`` uint8 RGB array: 16/32-bit grayscale keeps the
    top 8 bits of its used range; grayscale, palette and CMYK are converted; alpha is dropped.
    The one conversion of data-set files and explorer uploads."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        values = np.asarray(img).astype(np.int64)
        top = int(values.max()) if values.size else 0
        shift = max(0, top.bit_length() - 8)
        gray = (values >> shift).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def read_label(path: str | Path) -> np.ndarray:
    """Read a label map as class indices.

    Args:
        path: single-channel PNG (``L``, palette ``P``: the indices are read, or 16-bit).

    Returns:
        ``(H, W)`` uint8 array of raw values (before any id mapping).

    Raises:
        DataError: the file is missing, unreadable, truncated, multi-channel, or holds values
            above 255 (the message names it).
    """
    path = Path(path)
    img = _open(path, "label")
    if img.mode not in _LABEL_MODES:
        raise DataFileError(
            f"label {path} is a {img.mode} image; expected a single-channel index image "
            "(L or palette P). Colour-coded labels are not supported."
        )
    values = np.asarray(img)
    if values.dtype == bool:
        return values.astype(np.uint8)
    if values.size and int(values.max()) > 255:
        raise DataFileError(f"label {path} has values above 255 (max {int(values.max())})")
    return np.ascontiguousarray(values.astype(np.uint8))


def check_label_values(label: np.ndarray, num_classes: int, path: str | Path) -> None:
    """Raise unless every value is a class index in ``[0, num_classes)`` or 255.

    Args:
        label: ``(H, W)`` label map after any id mapping.
        num_classes: number of classes of the dataset.
        path: the label file, for the message.

    Raises:
        DataError: naming the file and the offending values.
    """
    bad = (label >= num_classes) & (label != IGNORE_INDEX)
    if bad.any():
        values = np.unique(label[bad]).tolist()
        raise DataFileError(
            f"label {path} has values {values} outside [0, {num_classes}) and not "
            f"{IGNORE_INDEX} (ignore)"
        )


def load_pair(
    image_path: str | Path,
    label_path: str | Path,
    *,
    num_classes: int,
    lut: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read, map and check one image/label pair.

    Args:
        image_path: the image file.
        label_path: the label file.
        num_classes: number of classes, for the value check.
        lut: optional 256-entry uint8 lookup table applied to the raw label values.

    Returns:
        ``(image (H, W, 3) uint8 RGB, label (H, W) uint8)``.

    Raises:
        DataError: unreadable files, size mismatch, or bad label values (naming the file).
    """
    image = read_image(image_path)
    label = read_label(label_path)
    if label.shape != image.shape[:2]:
        raise DataFileError(
            f"label {label_path} has size {label.shape[1]}x{label.shape[0]} (WxH) but image "
            f"{image_path} has {image.shape[1]}x{image.shape[0]}"
        )
    if lut is not None:
        label = lut[label]
    check_label_values(label, num_classes, label_path)
    return image, label


class SegmentationDataset(Dataset):
    """Base class: raw samples in, normalised training samples out.

    Subclasses set ``name``, ``num_classes``, ``class_names`` and implement :meth:`__len__`,
    :meth:`raw`, :meth:`image_id` and optionally :meth:`stats`.

    ``__getitem__(i)`` returns ``{"image": (3, H, W) float32 normalised BGR, "label": (H, W)
    int64 with 255 = ignore, "image_id": str, "stats": dict[str, float]}``. The transform (if
    any) is called as ``transform(image, label, rng)`` before normalisation, with a generator
    seeded by ``(transform_seed, epoch, i)``: the same sample of the same epoch is augmented the
    same way in any process and with any number of workers, so training can be resumed exactly.
    Call :meth:`set_epoch` at the start of each epoch (before creating the loader iterator when
    workers are persistent). The ``stats`` describe the untransformed image.

    Args:
        transform: joint transform ``(image, label, rng) -> (image, label)`` or ``None``.
        transform_seed: seed of the augmentation stream.
    """

    name: str = "dataset"
    num_classes: int = 0
    class_names: list[str]
    ignore_index: int = IGNORE_INDEX

    def __init__(
        self, *, transform: DatasetTransform | None = None, transform_seed: int = 0
    ) -> None:
        super().__init__()
        self.transform = transform
        self.transform_seed = int(transform_seed)
        self.epoch = 0

    def __len__(self) -> int:
        raise NotImplementedError

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The untransformed, unnormalised sample (for display).

        Args:
            index: sample index.

        Returns:
            ``(image (H, W, 3) uint8 RGB, label (H, W) uint8, 255 = ignore)``.
        """
        raise NotImplementedError

    def image_id(self, index: int) -> str:
        """A stable id, unique within the dataset."""
        raise NotImplementedError

    def stats(self, index: int) -> dict[str, float]:
        """Object-scale statistics of the image (empty without instance information)."""
        return {}

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch``."""
        self.epoch = int(epoch)

    def transform_rng(self, index: int) -> np.random.Generator:
        """The generator passed to the transform for sample ``index`` in the current epoch."""
        return np.random.default_rng([self.transform_seed, self.epoch, index])

    def _index(self, index: int) -> int:
        length = len(self)
        if index < 0:
            index += length
        if not 0 <= index < length:
            raise IndexError(f"index {index} out of range for {self.name} of size {length}")
        return int(index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._index(index)
        image, label = self.raw(index)
        if self.transform is not None:
            image, label = self.transform(image, label, self.transform_rng(index))
            if label.shape != image.shape[:2]:
                raise ValueError(f"transform returned label {label.shape} for image {image.shape}")
        return {
            "image": normalize(image),
            "label": torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64)),
            "image_id": self.image_id(index),
            "stats": dict(self.stats(index)),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, len={len(self)})"
