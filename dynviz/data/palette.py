"""Class colours of the data sets: Cityscapes' own (its label table, by train id) and PASCAL
VOC's colour map (bit-interleaved class index, also used for synthetic and folder data)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["cityscapes_palette", "palette_for", "voc_palette"]


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
