"""Cityscapes folder layout: reading (``cityscapes:PATH``) and writing.

Layout (as cityscapesScripts, mmseg and detectron2)::

    ROOT/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png   (preferred)
    ROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png        (fallback)

``labelTrainIds`` files are used as they are. Otherwise ``labelIds`` are mapped to the 19 train
ids through Cityscapes' label table (:data:`TRAIN_LABELS`, shipped with dynviz and checked against
``cityscapesscripts.helpers.labels`` in the tests; a 256-entry lookup table: ids whose trainId is
-1/255 become 255 = ignore). Nothing here needs the ``cityscapes`` extra.

A folder written by :func:`write_cityscapes_layout` also holds ``dynviz_dataset.json`` with the
class names and the per-image scale statistics. When it is present the loader takes its class
names (and class count) instead of the 19 Cityscapes classes and returns its statistics, so
synthetic data round-trips through the layout; ``name`` stays ``cityscapes``.

Images are read as RGB; grayscale and RGBA files are converted (alpha dropped).
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dynviz.data.base import DatasetTransform, SegmentationDataset, load_pair
from dynviz.data.errors import DataFileError
from dynviz.data.transforms import IGNORE_INDEX

__all__ = [
    "CITYSCAPES_CLASSES",
    "META_FILE",
    "TRAIN_LABELS",
    "CityscapesDataset",
    "label_id_to_train_id_lut",
    "train_id_to_label_id_lut",
    "write_cityscapes_layout",
]

logger = logging.getLogger(__name__)

META_FILE = "dynviz_dataset.json"
"""Sidecar written by :func:`write_cityscapes_layout` (class names, per-image statistics)."""

_IMAGE_SUFFIX = "_leftImg8bit.png"
_TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"
_LABEL_ID_SUFFIX = "_gtFine_labelIds.png"


TRAIN_LABELS: tuple[tuple[str, int, tuple[int, int, int]], ...] = (
    ("road", 7, (128, 64, 128)),
    ("sidewalk", 8, (244, 35, 232)),
    ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)),
    ("fence", 13, (190, 153, 153)),
    ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)),
    ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)),
    ("terrain", 22, (152, 251, 152)),
    ("sky", 23, (70, 130, 180)),
    ("person", 24, (220, 20, 60)),
    ("rider", 25, (255, 0, 0)),
    ("car", 26, (0, 0, 142)),
    ("truck", 27, (0, 0, 70)),
    ("bus", 28, (0, 60, 100)),
    ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)),
    ("bicycle", 33, (119, 11, 32)),
)
"""The 19 evaluated Cityscapes classes in trainId order: ``(name, labelId, RGB colour)``, as in
cityscapesScripts' ``helpers/labels.py`` (every other labelId has trainId 255 or -1, ignored).
Shipped with dynviz so that reading, writing and drawing Cityscapes data needs no extra;
``tests/test_data_layouts.py`` checks the table against cityscapesscripts."""


@lru_cache(maxsize=1)
def label_id_to_train_id_lut() -> np.ndarray:
    """256-entry uint8 table mapping Cityscapes ``labelIds`` to ``trainIds`` (255 = ignore)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for train_id, (_, label_id, _) in enumerate(TRAIN_LABELS):
        lut[label_id] = train_id
    lut.setflags(write=False)
    return lut


@lru_cache(maxsize=1)
def train_id_to_label_id_lut() -> np.ndarray:
    """256-entry uint8 table mapping ``trainIds`` 0..18 back to ``labelIds`` (else 0)."""
    lut = np.zeros(256, dtype=np.uint8)  # 0 = "unlabeled"
    for train_id, (_, label_id, _) in enumerate(TRAIN_LABELS):
        lut[train_id] = label_id
    lut.setflags(write=False)
    return lut


CITYSCAPES_CLASSES: tuple[str, ...] = tuple(name for name, _, _ in TRAIN_LABELS)
"""The 19 Cityscapes train classes in trainId order (road ... bicycle)."""


def _read_meta(root: Path) -> dict[str, Any] | None:
    path = root / META_FILE
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        names = [str(n) for n in meta["class_names"]]
        if not names or not isinstance(meta.get("stats", {}), dict):
            raise ValueError("empty class_names or stats is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataFileError(f"cannot read dataset metadata {path}: {exc}") from exc
    meta["class_names"] = names
    return meta


class CityscapesDataset(SegmentationDataset):
    """A split of a Cityscapes-layout folder.

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: split folder name (``train``, ``val``, ``test`` or any other).
        transform: joint transform ``(image, label, rng) -> (image, label)`` or ``None``.
        transform_seed: seed of the augmentation stream.

    Raises:
        DataError: the root or split folder is missing, the split holds no image, or an image
            has no label file (the message names the path).
    """

    name = "cityscapes"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        transform: DatasetTransform | None = None,
        transform_seed: int = 0,
    ) -> None:
        super().__init__(transform=transform, transform_seed=transform_seed)
        self.root = Path(root).expanduser()
        self.split = split
        if not self.root.is_dir():
            raise DataFileError(f"Cityscapes root does not exist or is not a folder: {self.root}")
        image_dir = self.root / "leftImg8bit" / split
        if not image_dir.is_dir():
            raise DataFileError(f"Cityscapes split folder not found: {image_dir}")
        images = sorted(image_dir.glob(f"*/*{_IMAGE_SUFFIX}"))
        if not images:
            raise DataFileError(f"Cityscapes split is empty: no */*{_IMAGE_SUFFIX} in {image_dir}")
        self._images = images
        self._labels = [self._label_for(path) for path in images]
        meta = _read_meta(self.root)
        if meta is None:
            self.class_names = list(CITYSCAPES_CLASSES)
            self._stats: dict[str, dict[str, float]] = {}
        else:
            self.class_names = meta["class_names"]
            self._stats = meta.get("stats", {}).get(split, {})
        self.num_classes = len(self.class_names)
        logger.debug("cityscapes %s/%s: %d images", self.root, split, len(images))

    def _label_for(self, image_path: Path) -> tuple[Path, bool]:
        """The label file of an image and whether it holds trainIds (else labelIds)."""
        stem = image_path.name[: -len(_IMAGE_SUFFIX)]
        folder = self.root / "gtFine" / self.split / image_path.parent.name
        train_ids = folder / f"{stem}{_TRAIN_ID_SUFFIX}"
        if train_ids.is_file():
            return train_ids, True
        label_ids = folder / f"{stem}{_LABEL_ID_SUFFIX}"
        if label_ids.is_file():
            return label_ids, False
        raise DataFileError(
            f"missing label for image {image_path}: neither {train_ids.name} nor "
            f"{label_ids.name} in {folder}"
        )

    def __len__(self) -> int:
        return len(self._images)

    def image_id(self, index: int) -> str:
        """``<city>/<city>_<seq>_<frame>``, e.g. ``aachen/aachen_000000_000019``."""
        path = self._images[self._index(index)]
        return f"{path.parent.name}/{path.name[: -len(_IMAGE_SUFFIX)]}"

    def image_path(self, index: int) -> Path:
        """The image file of sample ``index``."""
        return self._images[self._index(index)]

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._index(index)
        label_path, is_train_ids = self._labels[index]
        lut = None if is_train_ids else label_id_to_train_id_lut()
        return load_pair(self._images[index], label_path, num_classes=self.num_classes, lut=lut)

    def stats(self, index: int) -> dict[str, float]:
        """Statistics from ``dynviz_dataset.json`` when written by dynviz, else ``{}``."""
        return {k: float(v) for k, v in self._stats.get(self.image_id(index), {}).items()}


def write_cityscapes_layout(
    dataset: SegmentationDataset,
    out_dir: str | Path,
    split: str,
    *,
    city: str = "synth",
) -> Path:
    """Write a dataset (raw images, no transform) in the Cityscapes layout.

    Writes ``leftImg8bit/<split>/<city>/<city>_000000_<i:06d>_leftImg8bit.png``, the matching
    ``gtFine/.../*_gtFine_labelTrainIds.png`` and, when the dataset has at most 19 classes,
    ``*_gtFine_labelIds.png`` (class ``k`` written as the Cityscapes id whose trainId is ``k``,
    ignore as 0 = unlabeled), so the official evaluation scripts accept the folder. The class
    names and per-image statistics go to ``dynviz_dataset.json``, merged with the other splits
    already there. Files of an earlier write of the same split and city are replaced.

    Args:
        dataset: any dataset of this package (typically :class:`SyntheticScenes`).
        out_dir: the root folder to write (created if needed).
        split: split name (``train``, ``val``, ...).
        city: the city folder and file-name prefix.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    root = Path(out_dir).expanduser()
    image_dir = root / "leftImg8bit" / split / city
    label_dir = root / "gtFine" / split / city
    for folder in (image_dir, label_dir):
        folder.mkdir(parents=True, exist_ok=True)
        # Replace an earlier write of this split (possibly longer); touch no other file.
        for stale in folder.glob(f"{city}_000000_*.png"):
            stale.unlink()
    write_label_ids = dataset.num_classes <= len(TRAIN_LABELS)
    to_label_id = train_id_to_label_id_lut()
    stats: dict[str, dict[str, float]] = {}
    source_ids: dict[str, str] = {}
    for index in range(len(dataset)):
        image, label = dataset.raw(index)
        stem = f"{city}_000000_{index:06d}"
        Image.fromarray(image).save(image_dir / f"{stem}{_IMAGE_SUFFIX}")
        Image.fromarray(label).save(label_dir / f"{stem}{_TRAIN_ID_SUFFIX}")
        if write_label_ids:
            Image.fromarray(to_label_id[label]).save(label_dir / f"{stem}{_LABEL_ID_SUFFIX}")
        stats[f"{city}/{stem}"] = dataset.stats(index)
        source_ids[f"{city}/{stem}"] = dataset.image_id(index)
    meta_path = root / META_FILE
    meta = _read_meta(root) or {}
    if meta and meta["class_names"] != dataset.class_names:
        raise DataFileError(
            f"{meta_path} holds other class names {meta['class_names']}; write to a new folder"
        )
    meta.update(
        {
            "format": "dynviz-cityscapes-layout",
            "version": 1,
            "name": dataset.name,
            "num_classes": dataset.num_classes,
            "class_names": list(dataset.class_names),
        }
    )
    meta.setdefault("sources", {})[split] = getattr(dataset, "spec", dataset.name)
    meta.setdefault("source_image_ids", {})[split] = source_ids
    meta.setdefault("stats", {})[split] = stats
    meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    logger.info("wrote %d %s images to %s", len(dataset), split, image_dir)
    return root
