"""Class colours of the data sets and the one rule that paints a class map: Cityscapes' own
colours (its label table, by train id), PASCAL VOC's colour map (bit-interleaved class index, also
used for synthetic and folder data), :func:`colorize` and :func:`overlay`. ``dynviz predict`` and
the explorer both colour with these, in the data set's palette (:func:`palette_for`)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = [
    "cityscapes_palette",
    "colorize",
    "legend_entries",
    "overlay",
    "palette_for",
    "palette_for_spec",
    "voc_palette",
]


@lru_cache(maxsize=1)
def voc_palette() -> np.ndarray:
    """``(256, 3)`` uint8: the PASCAL VOC colour map (class 255, VOC's void band, is white-ish
    ``(224, 224, 192)``)."""
    colors = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colors[index] = (r, g, b)
    colors.setflags(write=False)
    return colors


@lru_cache(maxsize=1)
def cityscapes_palette() -> np.ndarray:
    """``(256, 3)`` uint8: train id ``k`` (0..18) gets the colour of Cityscapes' label whose
    ``trainId`` is ``k`` (road purple ``(128, 64, 128)``, ...); other ids black."""
    from dynviz.data.cityscapes import TRAIN_LABELS

    colors = np.zeros((256, 3), dtype=np.uint8)
    for train_id, (_, _, color) in enumerate(TRAIN_LABELS):
        colors[train_id] = color
    colors.setflags(write=False)
    return colors


def palette_for(kind: str | None) -> np.ndarray:
    """The palette of a data-set kind: ``cityscapes`` -> :func:`cityscapes_palette`, anything
    else (``voc``, ``synthetic``, ``folder``, None) -> :func:`voc_palette`."""
    return cityscapes_palette() if kind == "cityscapes" else voc_palette()


def palette_for_spec(spec: str | None) -> np.ndarray:
    """The palette of a data-set spec (``cityscapes:...`` -> Cityscapes'), by its kind
    (:func:`palette_for`); VOC's when there is no spec or it does not parse."""
    # deferred: the data-set spec parser imports torch and every data set; palettes need numpy
    from dynviz.data.errors import DataError
    from dynviz.data.spec import parse_spec

    try:
        return palette_for(parse_spec(spec).kind if spec else None)
    except DataError:
        return palette_for(None)


def legend_entries(
    palette: np.ndarray, names: list[str], classes: np.ndarray
) -> list[tuple[str, tuple[int, int, int]]]:
    """``(name, (r, g, b))`` of each class present in the class map ``classes``, in class
    order; ignored (255) and out-of-range values are left out; a class past ``names`` is
    ``class <k>``."""
    shown = sorted(int(c) for c in np.unique(classes) if 0 <= int(c) < 255)
    entries = []
    for c in shown:
        r, g, b = (int(v) for v in palette[c])
        entries.append((names[c] if c < len(names) else f"class {c}", (r, g, b)))
    return entries


def colorize(
    classes: np.ndarray, *, ignore_index: int = 255, palette: np.ndarray | None = None
) -> np.ndarray:
    """An RGB picture of a class map (ignored pixels white).

    Args:
        classes: ``(H, W)`` integer class indices.
        ignore_index: the label drawn white.
        palette: ``(256, 3)`` uint8 colours (default: VOC's; the data set's from
            :func:`dynviz.data.palette.palette_for`, as ``dynviz predict`` uses).

    Returns:
        ``(H, W, 3)`` uint8.
    """
    classes = np.asarray(classes).astype(np.int64)
    colors = (voc_palette() if palette is None else np.asarray(palette, np.uint8)).copy()
    colors[ignore_index % 256] = (255, 255, 255)
    return colors[np.clip(classes, 0, 255)]


def overlay(
    image: np.ndarray,
    classes: np.ndarray,
    *,
    opacity: float = 0.5,
    ignore_index: int = 255,
    palette: np.ndarray | None = None,
) -> np.ndarray:
    """Blend the colours of a class map over an image (mmseg's ``show_result`` look).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        classes: ``(H, W)`` class indices of the same size.
        opacity: weight of the class colours, in [0, 1].
        ignore_index: pixels with this label are left as they are.
        palette: the class colours (:func:`colorize`).

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    if image.shape[:2] != np.shape(classes):
        raise ValueError(f"image {image.shape[:2]} and classes {np.shape(classes)} differ in size")
    opacity = float(min(max(opacity, 0.0), 1.0))
    colors = colorize(classes, ignore_index=ignore_index, palette=palette).astype(np.float32)
    blend = (1.0 - opacity) * image.astype(np.float32) + opacity * colors
    keep = np.asarray(classes) == ignore_index
    blend[keep] = image[keep]
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)
