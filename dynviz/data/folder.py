"""Any folder of images and masks (``folder:PATH``): ADE20K-like layouts and a user's own data.

Layouts::

    PATH/images/<stem>.<jpg|png|...>     PATH/masks/<stem>.png          one set for every split
    PATH/images/<split>/<stem>.jpg       PATH/masks/<split>/<stem>.png  a set per split
    PATH/<list>.txt                      lines "IMAGE MASK" (relative to the list's folder)

Masks are single-channel index images (``L`` or palette ``P``, read as indices) matched to the
images by file stem. The class count and the ignored mask value come from ``PATH/dataset.yaml``
(or, for a list file, the ``dataset.yaml`` beside it), or from spec options
``folder:PATH,classes=K,ignore=I`` which win over the file::

    num_classes: 150            # required (here or as classes=K)
    ignore_index: 255           # the mask value that is not a class (mapped to 255)
    reduce_zero_label: false    # true: 0 is ignored and 1..K become 0..K-1 (ADE20K's masks)
    class_names: [wall, ...]    # optional, default "0".."K-1"
    images: images              # optional folder names
    masks: masks
    splits: {train: training, val: validation}   # optional: subfolder or list file per split

Without split folders (or ``splits``) the folder is one set that every split name reads. Images
are EXIF-transposed (as a photo viewer shows them) before the size check against their mask.

Every problem raises :class:`~dynviz.data.errors.DataError` naming the file: an image without
its mask, a mask whose size differs from its image, mask values outside ``[0, K)`` and not the
ignore value, an unreadable file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from dynviz.data.base import DatasetTransform, SegmentationDataset, read_image, read_label
from dynviz.data.errors import DataFileError
from dynviz.data.transforms import IGNORE_INDEX
from dynviz.errors import yaml_problem

__all__ = [
    "DATASET_FILE",
    "IMAGE_SUFFIXES",
    "FolderDataset",
    "write_folder_layout",
]

logger = logging.getLogger(__name__)

DATASET_FILE = "dataset.yaml"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
_SETTINGS = (
    "num_classes",
    "ignore_index",
    "reduce_zero_label",
    "class_names",
    "images",
    "masks",
    "splits",
)


def _read_settings(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise DataFileError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
    except yaml.YAMLError as err:
        raise DataFileError(f"{path}: not valid YAML ({yaml_problem(err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataFileError(f"{path}: expected a YAML mapping (num_classes: K, ...)")
    unknown = sorted(set(data) - set(_SETTINGS))
    if unknown:
        raise DataFileError(f"{path}: unknown key {unknown[0]!r}; known: {', '.join(_SETTINGS)}")
    return data


def _int_setting(value: Any, key: str, where: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise DataFileError(f"{where}: {key} {value!r} must be an integer >= {low}")
    if high is not None and value > high:
        raise DataFileError(f"{where}: {key} {value!r} must be <= {high}")
    return int(value)


def _pair_by_stem(image_dir: Path, mask_dir: Path) -> list[tuple[Path, Path]]:
    """Each image of ``image_dir`` with the mask of the same stem in ``mask_dir`` (a
    ``.png`` mask wins over another of the same stem); masks without an image are ignored
    with a warning."""
    images = _images_in(image_dir)
    stems: dict[str, Path] = {}
    for image in images:
        if image.stem in stems:
            raise DataFileError(
                f"two images with the stem {image.stem!r}: {stems[image.stem]}, {image}"
            )
        stems[image.stem] = image
    masks: dict[str, Path] = {}
    for mask in _images_in(mask_dir):
        if mask.stem not in masks or mask.suffix.lower() == ".png":
            masks[mask.stem] = mask
    missing = [image for image in images if image.stem not in masks]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DataFileError(
            f"{len(missing)} image(s) without a mask in {mask_dir}: {shown}{more} "
            f"(expected {mask_dir / (missing[0].stem + '.png')})"
        )
    orphans = sorted(set(masks) - set(stems))
    if orphans:
        logger.warning(
            "%s: %d mask(s) without an image, ignored (e.g. %s)",
            mask_dir,
            len(orphans),
            masks[orphans[0]],
        )
    return [(image, masks[image.stem]) for image in images]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class FolderDataset(SegmentationDataset):
    """A split of an image and mask folder, or of a list file (see the module docstring).

    Args:
        path: the folder (or a list file of ``IMAGE MASK`` lines).
        split: the split name (a subfolder or a ``splits`` entry; any name for a flat folder).
        num_classes: the class count (over ``dataset.yaml``).
        ignore_index: the mask value to ignore (over ``dataset.yaml``; default 255).
        transform: joint transform ``(image, label, rng) -> (image, label)`` or ``None``.
        transform_seed: seed of the augmentation stream.

    Raises:
        DataError: no such folder, no class count, no image, an image without its mask (all
            named).
    """

    name = "folder"

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        *,
        num_classes: int | None = None,
        ignore_index: int | None = None,
        transform: DatasetTransform | None = None,
        transform_seed: int = 0,
    ) -> None:
        super().__init__(transform=transform, transform_seed=transform_seed)
        path = Path(path).expanduser()
        if not path.exists():
            raise DataFileError(f"dataset folder does not exist: {path}")
        self.path = path
        self.split = split
        root = path.parent if path.is_file() else path
        settings_file = root / DATASET_FILE
        settings = _read_settings(settings_file)
        where = str(settings_file) if settings else str(path)
        count = num_classes if num_classes is not None else settings.get("num_classes")
        if count is None:
            raise DataFileError(
                f"{path}: the class count is unknown; write {settings_file} with "
                f"'num_classes: K' or use the spec folder:{path},classes=K"
            )
        self.num_classes = _int_setting(count, "num_classes", where, 1, 255)
        ignore = ignore_index if ignore_index is not None else settings.get("ignore_index", 255)
        self.raw_ignore = _int_setting(ignore, "ignore_index", where, 0, 255)
        self.reduce_zero_label = bool(settings.get("reduce_zero_label", False))
        names = settings.get("class_names")
        if names is None:
            self.class_names = [str(k) for k in range(self.num_classes)]
        else:
            if not isinstance(names, list) or len(names) != self.num_classes:
                raise DataFileError(
                    f"{where}: class_names must list {self.num_classes} names "
                    f"(got {len(names) if isinstance(names, list) else names!r})"
                )
            self.class_names = [str(n) for n in names]
        self._lut = self._label_lut()
        if path.is_file():
            pairs = self._read_list(path)
        else:
            pairs = self._scan(path, settings, split)
        if not pairs:
            raise DataFileError(f"{path}: no images (split {split!r})")
        self._pairs = pairs
        logger.debug("folder %s/%s: %d images", path, split, len(pairs))

    # ------------------------------------------------------------------------------ setup
    def _label_lut(self) -> np.ndarray:
        """Raw mask value -> class (255 = ignored, 254 marks a value outside the range)."""
        lut = np.full(256, 254, dtype=np.uint8)
        if self.reduce_zero_label:
            lut[1 : self.num_classes + 1] = np.arange(self.num_classes, dtype=np.uint8)
            lut[0] = IGNORE_INDEX
        else:
            lut[: self.num_classes] = np.arange(self.num_classes, dtype=np.uint8)
        lut[self.raw_ignore] = IGNORE_INDEX
        lut[IGNORE_INDEX] = IGNORE_INDEX  # 255 stays ignored whatever the setting
        self._valid = lut != 254
        return lut

    def _scan(self, root: Path, settings: dict[str, Any], split: str) -> list[tuple[Path, Path]]:
        image_dir = root / str(settings.get("images", "images"))
        mask_dir = root / str(settings.get("masks", "masks"))
        if not image_dir.is_dir():
            raise DataFileError(
                f"{root}: no {image_dir.name}/ folder (expected {image_dir.name}/ and "
                f"{mask_dir.name}/ with matching file stems, or a list file)"
            )
        splits = settings.get("splits")
        if splits is not None:
            if not isinstance(splits, dict):
                raise DataFileError(
                    f"{root / DATASET_FILE}: splits must map split names to folders"
                )
            if split not in splits:
                raise DataFileError(
                    f"{root / DATASET_FILE}: no split {split!r}; splits: {', '.join(splits)}"
                )
            entry = root / str(splits[split])
            if entry.is_file():
                return self._read_list(entry)
            image_dir, mask_dir = image_dir / str(splits[split]), mask_dir / str(splits[split])
        elif (image_dir / split).is_dir():
            image_dir, mask_dir = image_dir / split, mask_dir / split
        elif any(p.is_dir() for p in image_dir.iterdir()):
            found = sorted(p.name for p in image_dir.iterdir() if p.is_dir())
            raise DataFileError(f"{image_dir}: no split folder {split!r}; there are {found}")
        else:
            logger.info("%s has no split folders: split %r reads all of it", root, split)
        if not image_dir.is_dir():
            raise DataFileError(f"image folder not found: {image_dir}")
        if not mask_dir.is_dir():
            raise DataFileError(
                f"mask folder not found: {mask_dir} (for the images in {image_dir})"
            )
        return _pair_by_stem(image_dir, mask_dir)

    def _read_list(self, list_file: Path) -> list[tuple[Path, Path]]:
        try:
            lines = list_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise DataFileError(f"cannot read list file {list_file}: {err}") from None
        pairs = []
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.split()
            if len(parts) != 2:
                raise DataFileError(
                    f"{list_file}:{number}: expected 'IMAGE MASK' (two paths), got {text!r}"
                )
            image, mask = (list_file.parent / p for p in parts)
            if not image.is_file():
                raise DataFileError(f"{list_file}:{number}: image not found: {image}")
            if not mask.is_file():
                raise DataFileError(f"{list_file}:{number}: mask not found: {mask} (for {image})")
            pairs.append((image, mask))
        return pairs

    # ----------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self._pairs)

    def image_id(self, index: int) -> str:
        """The image's stem."""
        return self._pairs[self._index(index)][0].stem

    def image_path(self, index: int) -> Path:
        return self._pairs[self._index(index)][0]

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self._pairs[self._index(index)]
        image = read_image(image_path, exif_transpose=True)
        mask = read_label(mask_path)
        if mask.shape != image.shape[:2]:
            raise DataFileError(
                f"mask {mask_path} has size {mask.shape[1]}x{mask.shape[0]} (WxH) but image "
                f"{image_path} has {image.shape[1]}x{image.shape[0]}"
            )
        bad = ~self._valid[mask]
        if bad.any():
            values = np.unique(mask[bad]).tolist()[:10]
            first = (
                f"[1, {self.num_classes}]" if self.reduce_zero_label else f"[0, {self.num_classes})"
            )
            raise DataFileError(
                f"mask {mask_path} has values {values} outside {first} and not the ignore "
                f"value {self.raw_ignore}"
            )
        return image, self._lut[mask]


def write_folder_layout(dataset: SegmentationDataset, out_dir: str | Path, split: str) -> Path:
    """Write a dataset (raw images, no transform) as ``images/<split>/<id>.png`` and
    ``masks/<split>/<id>.png`` plus ``dataset.yaml`` (class count and names, ignore 255), so
    that ``folder:OUT_DIR`` reads it back.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    root = Path(out_dir).expanduser()
    image_dir, mask_dir = root / "images" / split, root / "masks" / split
    settings_file = root / DATASET_FILE
    settings = _read_settings(settings_file)
    if settings and list(settings.get("class_names", [])) != list(dataset.class_names):
        raise DataFileError(f"{settings_file} holds other class names; write to a new folder")
    for folder in (image_dir, mask_dir):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.png"):
            stale.unlink()
    for index in range(len(dataset)):
        image, label = dataset.raw(index)
        stem = dataset.image_id(index).replace("/", "_")
        Image.fromarray(image).save(image_dir / f"{stem}.png")
        Image.fromarray(label).save(mask_dir / f"{stem}.png")
    settings_file.write_text(
        yaml.safe_dump(
            {
                "num_classes": int(dataset.num_classes),
                "ignore_index": IGNORE_INDEX,
                "class_names": list(dataset.class_names),
            },
            sort_keys=False,
        ),
        encoding="utf-8",
    )
    logger.info("wrote %d %s images to %s", len(dataset), split, image_dir)
    return root
