"""PASCAL VOC 2012 segmentation layout (``voc:PATH``).

``PATH`` is the ``VOC2012`` folder or a ``VOCdevkit`` folder containing it::

    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClass/<id>.png          palette PNGs: the indices are the classes
    VOC2012/SegmentationClassAug/<id>.png       optional, SBD labels (mmseg voc_aug.py)
    VOC2012/ImageSets/Segmentation/<split>.txt  one id per line

Labels are read as palette *indices* (never colours): 0 background, 1..20 the objects, 255 the
boundary/void band, which is ignored.

SBD augmentation, following mmseg's ``pascal_voc12_aug`` configuration: when
``SegmentationClassAug/`` exists and the split is ``train`` or ``trainaug``, the id list is
``trainaug.txt`` if present, else ``train.txt`` followed by the ids of ``aug.txt`` (both lists as
written by mmseg's converter), else ``train.txt`` alone. Each id takes its label from
``SegmentationClass/`` when the fine VOC annotation exists there, else from
``SegmentationClassAug/``. Split ``trainaug`` without ``SegmentationClassAug/`` is an error; any
other split uses ``SegmentationClass/`` only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from dynviz.data.base import DatasetTransform, SegmentationDataset, load_pair
from dynviz.data.errors import DataFileError

__all__ = ["VOC_CLASSES", "VOCDataset", "resolve_voc_root"]

logger = logging.getLogger(__name__)

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
"""The 21 VOC segmentation classes in index order."""

_AUG_SPLITS = ("train", "trainaug")


def resolve_voc_root(path: str | Path) -> Path:
    """Return the ``VOC2012`` folder for ``path`` (``VOC2012`` itself or ``VOCdevkit``).

    Raises:
        DataError: the path does not exist or holds no ``JPEGImages`` folder.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataFileError(f"VOC path does not exist: {path}")
    for candidate in (path, path / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DataFileError(f"not a VOC2012 folder (no JPEGImages/ in it or in VOC2012/): {path}")


def _read_ids(list_file: Path) -> list[str]:
    if not list_file.is_file():
        raise DataFileError(f"VOC split list not found: {list_file}")
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"cannot read VOC split list {list_file}: {exc}") from exc
    # Lines may carry extra columns ("<id> 1"); the id is the first token.
    return [line.split()[0] for line in lines if line.strip()]


class VOCDataset(SegmentationDataset):
    """A split of PASCAL VOC 2012 segmentation (optionally with SBD labels).

    Args:
        root: ``VOC2012`` or ``VOCdevkit`` folder.
        split: name of a list in ``ImageSets/Segmentation`` (``train``, ``val``, ``trainval``,
            ``trainaug``).
        transform: joint transform ``(image, label, rng) -> (image, label)`` or ``None``.
        transform_seed: seed of the augmentation stream.

    Raises:
        DataError: missing folder or list, empty list, or an id without its image or label
            (the message names the path).
    """

    name = "voc"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        transform: DatasetTransform | None = None,
        transform_seed: int = 0,
    ) -> None:
        super().__init__(transform=transform, transform_seed=transform_seed)
        self.root = resolve_voc_root(root)
        self.split = split
        self.class_names = list(VOC_CLASSES)
        self.num_classes = len(VOC_CLASSES)
        ids, list_files = self._split_ids(split)
        if not ids:
            raise DataFileError(f"VOC split is empty: no ids in {', '.join(map(str, list_files))}")
        self._ids = list(dict.fromkeys(ids))  # drop duplicates, keep order
        self._pairs = [self._files_for(image_id) for image_id in self._ids]
        logger.debug("voc %s/%s: %d images", self.root, split, len(self._ids))

    def _split_ids(self, split: str) -> tuple[list[str], list[Path]]:
        lists = self.root / "ImageSets" / "Segmentation"
        self.use_aug = (self.root / "SegmentationClassAug").is_dir() and split in _AUG_SPLITS
        if split == "trainaug" and not self.use_aug:
            raise DataFileError(
                f"split 'trainaug' needs SBD labels: {self.root / 'SegmentationClassAug'} not found"
            )
        if not self.use_aug:
            return _read_ids(lists / f"{split}.txt"), [lists / f"{split}.txt"]
        if (lists / "trainaug.txt").is_file():
            return _read_ids(lists / "trainaug.txt"), [lists / "trainaug.txt"]
        if split == "trainaug":
            raise DataFileError(f"VOC split list not found: {lists / 'trainaug.txt'}")
        files = [lists / "train.txt"]
        if (lists / "aug.txt").is_file():
            files.append(lists / "aug.txt")
        else:
            logger.warning("%s has no trainaug.txt or aug.txt: using train.txt only", lists)
        return [i for f in files for i in _read_ids(f)], files

    def _files_for(self, image_id: str) -> tuple[Path, Path]:
        image = self.root / "JPEGImages" / f"{image_id}.jpg"
        if not image.is_file():
            raise DataFileError(f"missing VOC image for id {image_id!r}: {image}")
        label = self.root / "SegmentationClass" / f"{image_id}.png"
        if not label.is_file() and self.use_aug:
            label = self.root / "SegmentationClassAug" / f"{image_id}.png"
        if not label.is_file():
            raise DataFileError(f"missing VOC label for image {image}: {label} not found")
        return image, label

    def __len__(self) -> int:
        return len(self._ids)

    def image_id(self, index: int) -> str:
        """The VOC id, e.g. ``2007_000032``."""
        return self._ids[self._index(index)]

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, label = self._pairs[self._index(index)]
        return load_pair(image, label, num_classes=self.num_classes)
