"""Dataset spec strings: parsing and building.

Grammar::

    spec      := "synthetic" [":" [options]]
               | "cityscapes:" PATH
               | "voc:" PATH
               | "folder:" PATH ["," folder-option]*     (classes=K, ignore=I)
    options   := option ("," option)*
    option    := key "=" value
    key       := "count" | "size" | "classes" | "seed" | "regime"
               | "tiny" | "huge" | "huge_area" | "checker" | "dark" | "large" | "small"

The kind is case-insensitive; whitespace around keys and values is ignored; a key may appear once.
Values: ``count``, ``classes`` and ``seed`` are integers; ``size`` is ``HxW`` or ``N`` (square);
``regime`` is ``tiny``, ``huge``, ``mixed`` or ``per-image``. Defaults:
``synthetic:count=64,size=128x128,classes=6,seed=0,regime=per-image``. The last seven keys make
a variant of the scenes (:class:`dynviz.data.synthetic.SceneOptions`): ``tiny`` and ``huge`` are
ranges of object counts (``LO-HI`` or ``N``), ``huge_area`` and ``checker`` ranges of numbers,
``dark`` a number, ``large`` (``brightness`` or ``radial``) and ``small`` (``texture`` or
``hue``) the cue of a large and of a small object's class; a spec names them only where they
differ from the demo's scenes.
``PATH`` is everything after the first colon (so it may itself contain colons) and ``~`` is
expanded.

Examples: ``synthetic``, ``synthetic:count=200,size=64x96,regime=tiny``,
``synthetic:count=96,size=64x64,tiny=3-8,checker=2.4-4``,
``cityscapes:/data/cityscapes``, ``voc:~/data/VOCdevkit``, ``folder:~/data/ade,classes=150``
(:mod:`dynviz.data.folder`; the trailing ``,classes=K`` / ``,ignore=I`` options override the
folder's ``dataset.yaml``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dynviz.data.base import DatasetTransform, SegmentationDataset
from dynviz.data.cityscapes import CityscapesDataset
from dynviz.data.errors import DataError, DataFileError
from dynviz.data.folder import FolderDataset
from dynviz.data.synthetic import REGIMES, SceneOptions, SyntheticScenes
from dynviz.data.voc import VOCDataset

__all__ = ["DATASET_KINDS", "SYNTHETIC_DEFAULTS", "DatasetSpec", "build_dataset", "parse_spec"]

logger = logging.getLogger(__name__)

DATASET_KINDS = ("synthetic", "cityscapes", "voc", "folder")
FOLDER_OPTIONS = ("classes", "ignore")

SYNTHETIC_DEFAULTS: dict[str, Any] = {
    "count": 64,
    "size": (128, 128),
    "classes": 6,
    "seed": 0,
    "regime": "per-image",
}
SCENE_KEYS = tuple(item.name for item in fields(SceneOptions))  # a variant of the scenes


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec.

    Attributes:
        kind: ``synthetic``, ``cityscapes``, ``voc`` or ``folder``.
        path: the data folder (``None`` for synthetic).
        options: synthetic options, defaults filled in (a scene option only where given); the
            given ``classes`` / ``ignore`` of a folder; empty for the other kinds.
    """

    kind: str
    path: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def scenes(self) -> SceneOptions:
        """The variant of the scenes a synthetic spec names (the defaults where it names none)."""
        return _scene_options(self.options)

    def __str__(self) -> str:
        if self.kind == "folder":
            return f"folder:{self.path}" + "".join(f",{k}={v}" for k, v in self.options.items())
        if self.kind != "synthetic":
            return f"{self.kind}:{self.path}"
        opts = {k: v for k, v in self.options.items() if k in SYNTHETIC_DEFAULTS}
        opts["size"] = "{}x{}".format(*opts["size"])
        return "synthetic:" + ",".join(
            [f"{k}={v}" for k, v in opts.items()] + self.scenes.spec_options()
        )


def _int_option(key: str, value: str, spec: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise DataError(f"option {key}={value!r} in spec {spec!r} is not an integer") from None
    if number < minimum:
        raise DataError(f"option {key}={value!r} in spec {spec!r} must be >= {minimum}")
    return number


def _size_option(value: str, spec: str) -> tuple[int, int]:
    parts = [p.strip() for p in value.lower().split("x")]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise DataError(f"option size={value!r} in spec {spec!r}: expected HxW, e.g. 128x128")
    return int(parts[0]), int(parts[1])


def _scene_options(options: dict[str, Any]) -> SceneOptions:
    return SceneOptions(**{k: v for k, v in options.items() if k in SCENE_KEYS})


def _range_option(key: str, value: str, spec: str) -> tuple[float, float]:
    low, sep, high = value.partition("-")
    try:
        return (float(low), float(high if sep else low))
    except ValueError:
        raise DataError(
            f"option {key}={value!r} in spec {spec!r}: expected a range LO-HI or one number"
        ) from None


def _number_option(key: str, value: str, spec: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DataError(f"option {key}={value!r} in spec {spec!r}: expected one number") from None


def _parse_options(text: str, spec: str) -> dict[str, Any]:
    options = dict(SYNTHETIC_DEFAULTS)
    known = (*SYNTHETIC_DEFAULTS, *SCENE_KEYS)
    seen: set[str] = set()
    for part in text.split(","):
        if not part.strip():
            raise DataError(f"empty option in spec {spec!r} (stray comma?)")
        key, sep, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not value:
            raise DataError(f"option {part.strip()!r} in spec {spec!r} is not key=value")
        if key not in known:
            raise DataError(f"unknown option {key!r} in spec {spec!r}; known: {', '.join(known)}")
        if key in seen:
            raise DataError(f"option {key!r} given twice in spec {spec!r}")
        seen.add(key)
        if key == "size":
            options[key] = _size_option(value, spec)
        elif key == "regime":
            if value not in REGIMES:
                raise DataError(
                    f"option regime={value!r} in spec {spec!r}; expected one of "
                    f"{', '.join(REGIMES)}"
                )
            options[key] = value
        elif key == "dark":
            options[key] = _number_option(key, value, spec)
        elif key in ("large", "small"):
            options[key] = value.lower()  # SceneOptions names the choices
        elif key in SCENE_KEYS:
            options[key] = _range_option(key, value, spec)
        else:
            options[key] = _int_option(key, value, spec, 0 if key == "seed" else 1)
    try:
        _scene_options(options)
    except DataError as error:
        raise DataError(f"{error} (in spec {spec!r})") from None
    return options


def parse_spec(spec: str) -> DatasetSpec:
    """Parse a dataset spec string (see the module docstring for the grammar).

    Args:
        spec: e.g. ``synthetic:count=200,size=128x128`` or ``cityscapes:/data/cityscapes``.

    Returns:
        The parsed :class:`DatasetSpec`; paths are not checked here.

    Raises:
        DataError: unknown kind, unknown or malformed option, or a missing path.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"empty dataset spec {spec!r}; expected one of {', '.join(DATASET_KINDS)}")
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in DATASET_KINDS:
        raise DataError(
            f"unknown dataset kind {kind!r} in spec {spec!r}; expected one of "
            f"{', '.join(DATASET_KINDS)} (e.g. synthetic, cityscapes:PATH, voc:PATH, "
            "folder:PATH)"
        )
    if kind == "synthetic":
        options = _parse_options(rest, spec) if rest.strip() else dict(SYNTHETIC_DEFAULTS)
        return DatasetSpec(kind, None, options)
    if not sep or not rest.strip():
        raise DataError(f"spec {spec!r} needs a path: {kind}:PATH")
    if kind == "folder":
        path, options = _folder_options(rest.strip(), spec)
        return DatasetSpec(kind, Path(path).expanduser(), options)
    return DatasetSpec(kind, Path(rest.strip()).expanduser())


def _folder_options(text: str, spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``PATH,classes=K,ignore=I`` into the path and its trailing options."""
    options: dict[str, Any] = {}
    path = text
    while True:
        head, comma, tail = path.rpartition(",")
        key, sep, value = tail.partition("=")
        key = key.strip().lower()
        if not comma or not sep or key not in FOLDER_OPTIONS:
            if comma and sep and key and "/" not in key:
                raise DataError(
                    f"unknown option {key!r} in spec {spec!r}; known: {', '.join(FOLDER_OPTIONS)}"
                )
            break
        if key in options:
            raise DataError(f"option {key!r} given twice in spec {spec!r}")
        options[key] = _int_option(key, value.strip(), spec, 1 if key == "classes" else 0)
        path = head
    if not path.strip():
        raise DataError(f"spec {spec!r} needs a path: folder:PATH")
    return path.strip(), dict(reversed(list(options.items())))


def build_dataset(
    spec: str | DatasetSpec,
    *,
    split: str = "train",
    transform: DatasetTransform | None = None,
    transform_seed: int = 0,
) -> SegmentationDataset:
    """Build the dataset a spec names.

    Args:
        spec: a spec string or a parsed :class:`DatasetSpec`.
        split: split name; for synthetic data it selects the seed stream (train and val differ).
        transform: joint transform ``(image, label, rng) -> (image, label)`` applied before
            normalisation, or ``None``.
        transform_seed: seed of the augmentation stream (see ``SegmentationDataset``).

    Returns:
        A :class:`SegmentationDataset`.

    Raises:
        DataError: bad spec, missing path, empty split, missing labels (naming the culprit).
    """
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if not split:
        raise DataError("split must be a non-empty string")
    common: dict[str, Any] = {"transform": transform, "transform_seed": transform_seed}
    if parsed.kind == "synthetic":
        opts = parsed.options
        return SyntheticScenes(
            count=opts["count"],
            size=opts["size"],
            num_classes=opts["classes"],
            seed=opts["seed"],
            regime=opts["regime"],
            options=parsed.scenes,
            split=split,
            **common,
        )
    if parsed.path is None:
        raise DataError(f"spec {parsed.kind!r} needs a path")
    if not parsed.path.exists():
        raise DataFileError(f"dataset path does not exist: {parsed.path}")
    if parsed.kind == "cityscapes":
        return CityscapesDataset(parsed.path, split, **common)
    if parsed.kind == "folder":
        return FolderDataset(
            parsed.path,
            split,
            num_classes=parsed.options.get("classes"),
            ignore_index=parsed.options.get("ignore"),
            **common,
        )
    return VOCDataset(parsed.path, split, **common)
