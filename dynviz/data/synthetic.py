"""Procedural segmentation scenes whose images differ in object scale, and whose classes need
different computation at different scales.

Dynamic routing picks a path per image, and the paper's analysis relates the route to the scale of
the objects in the image. :class:`SyntheticScenes` makes that relation testable without
downloading anything: each image has a *scale regime*

- ``tiny``: 10-24 small objects, 0.3-3 % of the image each (log-uniform);
- ``huge``: 1-3 objects of 15-55 % of the image each (they overlap and run off the border);
- ``mixed``: one large object (12-40 %), sometimes a medium one, and 5-14 small ones;

and ``regime="per-image"`` (the default) draws the regime of each image from its own generator.
:class:`SceneOptions` makes a variant of the scenes (object counts and areas, the checker cell,
the dark member's brightness, and the cues below: ``large=radial`` shows a large object's class
by a bright centre or rim, ``small=hue`` a small one's by its side of the pair's hue;
``synthetic:...,tiny=3-8`` in a spec).

Scene content: class 0 is the background "stuff": one to three regions with smooth-noise,
stripe or gradient textures in low-saturation colours, plus clutter (small distractor shapes in
the background colour family, labelled background). Classes ``1..K-1`` are objects drawn as
ellipses, rotated rectangles and polygons. Classes come in pairs sharing a hue family, and what
tells the two members of a pair apart depends on the object's size, so that scale calls for
different routes:

- a *small* object (under ``LARGE_OBJECT_AREA`` of the image) shows its class by a **fine
  texture**: the first member is plain, the second carries a checkerboard of 1.5-2.5 pixel
  cells. Seeing it needs full-resolution features (the 1/4 scale);
- a *large* object is plain whatever its class and shows it by its **brightness**: the second
  member is drawn at ``DARK_MEMBER`` (half) the brightness of the first. A plain patch is thus
  the first member when the object is small and either member when it is large: which rule
  applies depends on the object's extent.

On most seeds the demo's budgeted network spends more on huge-object images than on tiny-object
ones: they open 1/8- and 1/16-scale paths that tiny-object images leave closed (by 1-19% in
mean cost over five seeds, ``docs/demo.md``; the report gives the run's own figure).

Per-object jitter of hue, saturation, brightness and texture cell, a weak global illumination
gradient and pixel noise complete the scene. Small objects are not separable by colour alone (a
nearest-class-colour rule gets about 65% of the object pixels of tiny-object scenes right with
the default 6 classes), large ones nearly are (about 99% on huge-object scenes).

Every image is generated on demand from ``numpy.random.default_rng([seed, crc32(split),
index])``: the same ``(seed, split, index)`` always gives the same bytes, whatever else was
generated before, and the global RNGs are never touched.

The module runs to about 530 lines: the scene grammar (regimes, object sizes, and the colour,
texture and outline cues each class carries) is one generator whose parts only mean something
together.
"""

from __future__ import annotations

import colorsys
import logging
import math
import zlib
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
from PIL import Image

from dynviz.data.base import DatasetTransform, SegmentationDataset
from dynviz.data.errors import DataError

__all__ = [
    "LARGE_OBJECT_AREA",
    "REGIMES",
    "REGIME_CODES",
    "Regime",
    "SceneOptions",
    "SyntheticSample",
    "SyntheticScenes",
    "synthetic_class_names",
]

logger = logging.getLogger(__name__)

Regime = Literal["tiny", "huge", "mixed", "per-image"]
REGIMES: tuple[str, ...] = ("tiny", "huge", "mixed", "per-image")
REGIME_CODES: dict[str, int] = {"tiny": 0, "huge": 1, "mixed": 2}
"""Value of the ``regime_code`` statistic for each concrete regime."""

SMALL_OBJECT_AREA = 0.01
"""Objects below this fraction of the image count as small (``small_fraction``)."""

LARGE_OBJECT_AREA = 0.04
"""Objects of at least this fraction of the image are plain and show their class by their
brightness; smaller ones by their fine texture."""

DARK_MEMBER = 0.5
"""Brightness of a large object of the second member of a class pair, relative to the first
(the default of ``SceneOptions.dark``)."""

LARGE_CUES = ("brightness", "radial")
"""What may show a large object's class (``SceneOptions.large``)."""

SMALL_CUES = ("texture", "hue")
"""What may show a small object's class (``SceneOptions.small``)."""

HUE_STEP = 0.1
"""With ``small=hue``: how far the light colour of a small object moves from its pair's hue."""

MAX_CLASSES = 255  # label values 0..254; 255 is ignore

SCENE_CACHE_BYTES = 64 << 20
"""Memory per dataset for scenes kept once made (image and label), so that a training reads
each scene of a later epoch without drawing it again; 4096 scenes of 64x64."""

_HUE_NAMES = (
    "red",
    "orange",
    "yellow",
    "lime",
    "green",
    "teal",
    "cyan",
    "azure",
    "blue",
    "violet",
    "magenta",
    "pink",
)
_FINE = ("plain", "checkered")  # fine textures of objects
_SHAPES = ("ellipse", "rectangle", "polygon")


@dataclass(frozen=True)
class _ClassStyle:
    """Typical appearance of one object class."""

    hue: float  # in [0, 1)
    saturation: float
    value: float
    texture: str  # fine texture of its small objects: plain or checkered
    dark: bool  # its large objects are drawn at SceneOptions.dark brightness


@dataclass(frozen=True)
class SyntheticSample:
    """One generated scene with everything known about it.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        label: ``(H, W)`` uint8 class map (0 = background).
        instances: ``(H, W)`` int32 map, 0 = background, ``k`` = the ``k``-th visible object.
        regime: the concrete regime, ``tiny``, ``huge`` or ``mixed``.
        stats: object-scale statistics (see :meth:`SyntheticScenes.stats`).
    """

    image: np.ndarray
    label: np.ndarray
    instances: np.ndarray
    regime: str
    stats: dict[str, float]


def _class_styles(num_classes: int) -> list[_ClassStyle]:
    """Fixed styles for classes ``1..K-1`` (independent of the seed, so seeds share classes).

    Object classes come in pairs that share a hue family; the first member of a pair is plain
    when small and bright when large, the second checkered when small and dark when large.
    """
    count = num_classes - 1
    groups = (count + 1) // 2
    styles = []
    for k in range(count):
        group, member = divmod(k, 2)
        styles.append(
            _ClassStyle(
                hue=(0.02 + group / groups) % 1.0,
                saturation=0.85 if group % 2 == 0 else 0.65,
                value=0.9 if group % 3 != 1 else 0.8,
                texture=_FINE[member],
                dark=member == 1,
            )
        )
    return styles


def synthetic_class_names(num_classes: int) -> list[str]:
    """Class names: ``background`` then ``<hue>_<texture>`` per object class.

    Args:
        num_classes: total number of classes, including background.

    Returns:
        ``num_classes`` unique names.
    """
    names = ["background"]
    for style in _class_styles(num_classes):
        hue_name = _HUE_NAMES[int(style.hue * len(_HUE_NAMES)) % len(_HUE_NAMES)]
        base = f"{hue_name}_{style.texture}"
        name, n = base, 2
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names.append(name)
    return names


def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(hue % 1.0, min(max(saturation, 0.0), 1.0), min(max(value, 0.0), 1.0))
    return np.asarray(rgb, dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Bilinearly upsampled uniform noise in [0, 1] with features about ``cell`` pixels wide."""
    height, width = shape
    grid = rng.random((height // cell + 2, width // cell + 2), dtype=np.float32)
    big = Image.fromarray(grid).resize(
        ((width // cell + 2) * cell, (height // cell + 2) * cell), Image.Resampling.BILINEAR
    )
    return np.asarray(big)[:height, :width]


def _texture(
    rng: np.random.Generator,
    kind: str,
    yy: np.ndarray,
    xx: np.ndarray,
    period: float,
    angle: float,
) -> np.ndarray:
    """A pattern in [0, 1] on the coordinate grids ``yy``, ``xx``."""
    phase = rng.uniform(0.0, 2.0 * math.pi)
    if kind == "striped":
        along = xx * math.cos(angle) + yy * math.sin(angle)
        return 0.5 + 0.5 * np.sin(2.0 * math.pi * along / period + phase)
    if kind == "checkered":
        cells = np.floor(xx / period + phase) + np.floor(yy / period + phase)
        return (cells % 2).astype(np.float32)
    if kind == "gradient":
        along = xx * math.cos(angle) + yy * math.sin(angle)
        span = max(float(along.max() - along.min()), 1.0)
        return (along - along.min()) / span
    # plain: a faint mottling only
    return np.full(yy.shape, 0.5, dtype=np.float32) + 0.1 * (rng.random(yy.shape) - 0.5)


def _shape_mask(
    rng: np.random.Generator, shape: str, area_px: float, image_shape: tuple[int, int]
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Rasterise one shape of about ``area_px`` pixels at a random centre inside the image.

    Returns:
        ``(window, mask)``: the bounding window (clipped to the image) and the boolean mask in
        it; ``None`` when the shape falls outside the image.
    """
    height, width = image_shape
    center_y, center_x = rng.uniform(0, height), rng.uniform(0, width)
    theta = rng.uniform(0.0, math.pi)
    aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    if shape == "ellipse":
        semi_a = math.sqrt(area_px / math.pi * aspect)
        semi_b = area_px / math.pi / semi_a
        reach = max(semi_a, semi_b)
    elif shape == "rectangle":
        semi_a = math.sqrt(area_px / 4.0 * aspect)
        semi_b = area_px / 4.0 / semi_a
        reach = math.hypot(semi_a, semi_b)
    else:  # star-convex polygon with straight edges
        # Jittered even spacing keeps every angular gap below pi, so the centre is inside and
        # the per-sector edge test below is exact.
        corners = int(rng.integers(5, 10))
        steps = np.arange(corners) + rng.uniform(-0.35, 0.35, corners)
        angles = steps * 2.0 * math.pi / corners + rng.uniform(0.0, math.pi)
        angles = np.sort(angles % (2.0 * math.pi))
        radii = rng.uniform(0.55, 1.0, corners)
        px, py = radii * np.cos(angles), radii * np.sin(angles)
        unit_area = 0.5 * abs(float(np.dot(px, np.roll(py, -1)) - np.dot(py, np.roll(px, -1))))
        radii = radii * math.sqrt(area_px / max(unit_area, 1e-6))
        reach = float(radii.max())
    top, bottom = max(0, int(center_y - reach)), min(height, int(center_y + reach) + 2)
    left, right = max(0, int(center_x - reach)), min(width, int(center_x + reach) + 2)
    if top >= bottom or left >= right:
        return None
    yy, xx = np.mgrid[top:bottom, left:right].astype(np.float32)
    dy, dx = yy + 0.5 - center_y, xx + 0.5 - center_x
    if shape == "polygon":
        phi = np.arctan2(dy, dx) % (2.0 * math.pi)
        vx, vy = radii * np.cos(angles), radii * np.sin(angles)
        start = (np.searchsorted(angles, phi) - 1) % corners
        end = (start + 1) % corners
        # Inside when on the left of the edge start -> end (vertices run counter-clockwise).
        cross = (vx[end] - vx[start]) * (dy - vy[start]) - (vy[end] - vy[start]) * (dx - vx[start])
        mask = cross >= 0
    else:
        cos_t, sin_t = math.cos(theta), math.sin(theta)
        u = dx * cos_t + dy * sin_t
        v = -dx * sin_t + dy * cos_t
        if shape == "ellipse":
            mask = (u / semi_a) ** 2 + (v / semi_b) ** 2 <= 1.0
        else:
            mask = (np.abs(u) <= semi_a) & (np.abs(v) <= semi_b)
    return (slice(top, bottom), slice(left, right)), mask


@dataclass(frozen=True)
class SceneOptions:
    """The parts of the scene grammar that a variant of the scenes changes (docs/demo.md).

    The defaults are the demo's scenes; the same seed gives the same bytes for every option left
    at its default. In a spec string: ``tiny=LO-HI``, ``huge=LO-HI``, ``huge_area=LO-HI``,
    ``checker=LO-HI``, ``dark=F``, ``large=radial`` and ``small=hue``.

    Attributes:
        tiny: how many small objects a tiny-regime scene has (inclusive range).
        huge: how many objects a huge-regime scene has (inclusive range).
        huge_area: the area of each object of a huge-regime scene, as a fraction of the image.
        checker: the width in pixels of the cells of a small checkered object (not with
            ``small=hue``).
        dark: brightness of a large object of a pair's second member, relative to the first
            (not with ``large=radial``).
        large: the cue of a large object's class: ``brightness`` (plain, the second member of a
            pair darker) or ``radial`` (its colour scaled by ``1 - 0.6 d`` for the first member
            and ``0.4 + 0.6 d`` for the second, d the distance from the centroid of its visible
            pixels over the largest such distance: a pixel halfway out looks the same in both,
            so the class needs the object's centre or rim in view).
        small: the cue of a small object's class: ``texture`` (plain or checkered) or ``hue``
            (plain; the light colour of its texture at the pair's hue -0.1 for the first member
            and +0.1 for the second, so its mean hue is about 0.07 from the pair's).
    """

    tiny: tuple[int, int] = (10, 24)
    huge: tuple[int, int] = (1, 3)
    huge_area: tuple[float, float] = (0.15, 0.55)
    checker: tuple[float, float] = (1.5, 2.5)
    dark: float = DARK_MEMBER
    large: str = "brightness"
    small: str = "texture"

    def __post_init__(self) -> None:
        limits = {
            "tiny": (1, 200),
            "huge": (1, 10),
            "huge_area": (LARGE_OBJECT_AREA, 1.0),
            "checker": (0.5, 16.0),
        }
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            counts = isinstance(low, int)
            try:
                value = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                value = ()
            if (
                len(value) != 2
                or not low <= value[0] <= value[1] <= high
                or (counts and not all(v.is_integer() for v in value))
            ):
                raise DataError(
                    f"scene option {name}={getattr(self, name)!r} must be a range LO-HI of "
                    f"{'whole numbers' if counts else 'numbers'} with "
                    f"{low:g} <= LO <= HI <= {high:g}"
                )
            object.__setattr__(self, name, tuple(int(v) for v in value) if counts else value)
        try:
            dark = float(self.dark)
        except (TypeError, ValueError):
            dark = math.nan
        if not 0.0 < dark <= 1.0:
            raise DataError(f"scene option dark={self.dark!r} must be a number in (0, 1]")
        object.__setattr__(self, "dark", dark)
        for name, choices in (("large", LARGE_CUES), ("small", SMALL_CUES)):
            if getattr(self, name) not in choices:
                raise DataError(
                    f"scene option {name}={getattr(self, name)!r} must be one of "
                    f"{', '.join(choices)}"
                )
        moot = (
            ("dark", "large=radial", self.large == "radial"),
            ("checker", "small=hue", self.small == "hue"),
        )
        for name, cue, applies in moot:
            if applies and getattr(self, name) != self.__dataclass_fields__[name].default:
                raise DataError(
                    f"scene option {name}={getattr(self, name)!r} has no effect with {cue}: "
                    "leave it out"
                )

    def spec_options(self) -> list[str]:
        """``key=value`` for each option that differs from its default, in field order."""
        out = []
        for item in fields(self):
            value = getattr(self, item.name)
            if value != item.default:
                if isinstance(value, str):
                    text = value
                elif isinstance(value, float):
                    text = f"{value:g}"
                else:
                    text = "{:g}-{:g}".format(*value)
                out.append(f"{item.name}={text}")
        return out


def _object_areas(rng: np.random.Generator, regime: str, options: SceneOptions) -> list[float]:
    """Target areas (fractions of the image) in drawing order for one regime."""

    def small(n: int) -> list[float]:
        return list(np.exp(rng.uniform(math.log(0.003), math.log(0.03), n)))

    if regime == "tiny":
        return small(int(rng.integers(options.tiny[0], options.tiny[1] + 1)))
    if regime == "huge":
        count = int(rng.integers(options.huge[0], options.huge[1] + 1))
        return list(rng.uniform(*options.huge_area, count))
    areas = [float(rng.uniform(0.12, 0.4))]
    if rng.random() < 0.5:
        areas.append(float(rng.uniform(0.04, 0.1)))
    return areas + small(int(rng.integers(5, 15)))


class SyntheticScenes(SegmentationDataset):
    """Deterministic procedural scenes with a per-image object-scale regime.

    Args:
        count: number of images.
        size: ``(H, W)`` of every image.
        num_classes: classes including background (2..255).
        seed: base seed (non-negative).
        regime: ``tiny``, ``huge``, ``mixed`` or ``per-image`` (each image draws one).
        options: a variant of the scenes (object counts and sizes, texture, brightness cue).
        split: split name; it changes the seed stream (train and val differ).
        transform: joint transform ``(image, label, rng) -> (image, label)`` or ``None``.
        transform_seed: seed of the augmentation stream.

    Raises:
        DataError: an option is out of range.
    """

    name = "synthetic"

    def __init__(
        self,
        count: int = 64,
        size: tuple[int, int] = (128, 128),
        num_classes: int = 6,
        seed: int = 0,
        regime: Regime = "per-image",
        options: SceneOptions = SceneOptions(),
        *,
        split: str = "train",
        transform: DatasetTransform | None = None,
        transform_seed: int = 0,
    ) -> None:
        super().__init__(transform=transform, transform_seed=transform_seed)
        height, width = (int(v) for v in size)
        if count < 1:
            raise DataError(f"synthetic count must be >= 1, got {count}")
        if min(height, width) < 16 or max(height, width) > 8192:
            raise DataError(f"synthetic size must be in 16..8192 per side, got {height}x{width}")
        if not 2 <= num_classes <= MAX_CLASSES:
            raise DataError(f"synthetic classes must be in 2..{MAX_CLASSES}, got {num_classes}")
        if seed < 0:
            raise DataError(f"synthetic seed must be >= 0, got {seed}")
        if regime not in REGIMES:
            raise DataError(f"synthetic regime must be one of {list(REGIMES)}, got {regime!r}")
        if not split:
            raise DataError("synthetic split must be a non-empty string")
        self.count = int(count)
        self.size = (height, width)
        self.num_classes = int(num_classes)
        self.seed = int(seed)
        self.regime = regime
        self.options = options
        self.split = split
        self.class_names = synthetic_class_names(self.num_classes)
        self._styles = _class_styles(self.num_classes)
        self._split_key = zlib.crc32(split.encode("utf-8"))
        self._stats_cache: dict[int, dict[str, float]] = {}
        self._scenes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._scene_limit = SCENE_CACHE_BYTES // (height * width * 4)  # RGB + label bytes

    @property
    def spec(self) -> str:
        """The canonical spec string that rebuilds this dataset with ``build_dataset``."""
        height, width = self.size
        variant = "".join(f",{option}" for option in self.options.spec_options())
        return (
            f"synthetic:count={self.count},size={height}x{width},classes={self.num_classes},"
            f"seed={self.seed},regime={self.regime}{variant}"
        )

    def __len__(self) -> int:
        return self.count

    def image_id(self, index: int) -> str:
        """``<split>_<index:06d>``, e.g. ``train_000003``."""
        return f"{self.split}_{self._index(index):06d}"

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._index(index)
        scene = self._scenes.get(index)
        if scene is None:
            sample = self.sample(index)
            scene = (sample.image, sample.label)
            if len(self._scenes) < self._scene_limit:
                self._scenes[index] = scene
        return scene[0].copy(), scene[1].copy()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_scenes"] = {}  # worker processes make their own
        return state

    def stats(self, index: int) -> dict[str, float]:
        """Object-scale statistics of image ``index``, all floats.

        Keys: ``object_count``, ``mean_object_area``, ``median_object_area``,
        ``max_object_area``, ``min_object_area`` (visible area as a fraction of the image),
        ``small_fraction`` (share of objects under 1 % of the image), ``foreground_fraction``
        (share of non-background pixels), ``classes_present`` (distinct object classes) and
        ``regime_code`` (0 tiny, 1 huge, 2 mixed).
        """
        index = self._index(index)
        if index not in self._stats_cache:
            self.sample(index)
        return dict(self._stats_cache[index])

    def sample(self, index: int) -> SyntheticSample:
        """Generate image ``index`` with its instance map, regime and statistics."""
        index = self._index(index)
        rng = np.random.default_rng([self.seed, self._split_key, index])
        regime = self.regime
        if regime == "per-image":
            regime = ("tiny", "huge", "mixed")[int(rng.integers(0, 3))]
        image = self._background(rng)
        label = np.zeros(self.size, dtype=np.uint8)
        instances = np.zeros(self.size, dtype=np.int32)
        self._clutter(rng, image)
        self._objects(rng, regime, image, label, instances)
        image = self._finish(rng, image)
        stats = _scale_stats(label, instances, regime)
        self._stats_cache[index] = stats
        return SyntheticSample(image, label, instances, regime, dict(stats))

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """One to three low-saturation textured regions split by random lines."""
        height, width = self.size
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        regions = np.zeros(self.size, dtype=np.int8)
        for _ in range(int(rng.integers(0, 3))):
            # A line through a random point of the middle of the image at a random angle.
            point_y, point_x = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
            angle = rng.uniform(0.0, 2.0 * math.pi)
            side = (xx - point_x) * math.cos(angle) + (yy - point_y) * math.sin(angle) > 0
            regions = regions + side.astype(np.int8)
        image = np.empty((height, width, 3), dtype=np.float32)
        for region in np.unique(regions):
            mask = regions == region
            base = _hsv(rng.random(), rng.uniform(0.05, 0.3), rng.uniform(0.35, 0.75))
            other = base * rng.uniform(0.6, 0.9) + rng.uniform(0.0, 0.1)
            kind = ("noise", "striped", "gradient")[int(rng.integers(0, 3))]
            if kind == "noise":
                pattern = _smooth_noise(rng, self.size, int(rng.integers(6, 20)))
            else:
                period = rng.uniform(8.0, 24.0)
                pattern = _texture(rng, kind, yy, xx, period, rng.uniform(0.0, math.pi))
            region_image = other + (base - other) * pattern[:, :, None]
            image[mask] = region_image[mask]
        return image

    def _clutter(self, rng: np.random.Generator, image: np.ndarray) -> None:
        """Small distractor shapes in the background colour family (label stays 0)."""
        area = float(self.size[0] * self.size[1])
        for _ in range(int(rng.integers(4, 16))):
            shape = _SHAPES[int(rng.integers(0, len(_SHAPES)))]
            drawn = _shape_mask(rng, shape, area * rng.uniform(0.0005, 0.006), self.size)
            if drawn is None:
                continue
            window, mask = drawn
            colour = _hsv(rng.random(), rng.uniform(0.05, 0.35), rng.uniform(0.25, 0.85))
            image[window][mask] = colour

    def _objects(
        self,
        rng: np.random.Generator,
        regime: str,
        image: np.ndarray,
        label: np.ndarray,
        instances: np.ndarray,
    ) -> None:
        """Draw the objects of ``regime`` in order (later ones occlude earlier ones)."""
        area = float(self.size[0] * self.size[1])
        for number, fraction in enumerate(_object_areas(rng, regime, self.options), start=1):
            cls = int(rng.integers(1, self.num_classes))
            style = self._styles[cls - 1]
            shape = _SHAPES[int(rng.integers(0, len(_SHAPES)))]
            drawn = _shape_mask(rng, shape, area * fraction, self.size)
            if drawn is None:
                continue
            window, mask = drawn
            light = _hsv(
                style.hue + rng.uniform(-0.04, 0.04),
                style.saturation + rng.uniform(-0.15, 0.1),
                style.value + rng.uniform(-0.15, 0.1),
            )
            dark = light * rng.uniform(0.4, 0.55)
            rows, cols = window
            yy, xx = np.mgrid[rows, cols].astype(np.float32)
            large = fraction >= LARGE_OBJECT_AREA
            # small: the class's own fine texture; large: plain, the pair told by brightness
            texture = "plain" if large else style.texture
            if not large and self.options.small == "hue":
                # plain, the light colour at the member's side of the pair's hue (dark stays)
                texture = "plain"
                shift = (HUE_STEP if style.dark else -HUE_STEP) + rng.uniform(-0.012, 0.012)
                light = _hsv(
                    style.hue + shift,
                    style.saturation + rng.uniform(-0.1, 0.1),
                    style.value + rng.uniform(-0.1, 0.1),
                )
            pattern = _texture(rng, texture, yy, xx, rng.uniform(*self.options.checker), 0.0)
            patch = dark + (light - dark) * pattern[:, :, None]
            if large and self.options.large == "radial":
                centre_y, centre_x = yy[mask].mean(), xx[mask].mean()
                distance = np.hypot(yy - centre_y, xx - centre_x)
                d = distance / max(float(distance[mask].max()), 1.0)
                profile = 0.4 + 0.6 * d if style.dark else 1.0 - 0.6 * d
                patch = light * profile[:, :, None]
            elif large and style.dark:
                patch *= self.options.dark
            image[window][mask] = patch[mask]
            label[window][mask] = cls
            instances[window][mask] = number

    def _finish(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        """Global illumination gradient and pixel noise, then quantise to uint8."""
        height, width = self.size
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        angle = rng.uniform(0.0, 2.0 * math.pi)
        ramp = (xx * math.cos(angle) + yy * math.sin(angle)) / max(height, width)
        image *= (1.0 + rng.uniform(0.02, 0.1) * (ramp - ramp.mean()))[:, :, None]
        image += rng.normal(0.0, rng.uniform(0.01, 0.03), image.shape).astype(np.float32)
        return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _scale_stats(label: np.ndarray, instances: np.ndarray, regime: str) -> dict[str, float]:
    """Statistics of the visible objects (areas as fractions of the image)."""
    total = float(label.size)
    counts = np.bincount(instances.ravel())[1:]
    areas = counts[counts > 0] / total
    present = np.unique(label[label != 0])
    if areas.size:
        summary = {
            "mean_object_area": float(areas.mean()),
            "median_object_area": float(np.median(areas)),
            "max_object_area": float(areas.max()),
            "min_object_area": float(areas.min()),
            "small_fraction": float((areas < SMALL_OBJECT_AREA).mean()),
        }
    else:
        summary = dict.fromkeys(
            (
                "mean_object_area",
                "median_object_area",
                "max_object_area",
                "min_object_area",
                "small_fraction",
            ),
            0.0,
        )
    return {
        "object_count": float(areas.size),
        **summary,
        "foreground_fraction": float(np.count_nonzero(label) / total),
        "classes_present": float(present.size),
        "regime_code": float(REGIME_CODES[regime]),
    }
