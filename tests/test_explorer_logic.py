"""Library logic the explorer shows (apps/_state.py keeps only the Streamlit caching around it):
the data set's class colours and the legend of a class map."""

from __future__ import annotations

import numpy as np

from dynviz.data.palette import (
    cityscapes_palette,
    legend_entries,
    palette_for_spec,
    voc_palette,
)


def test_palette_for_spec_follows_the_data_set_kind():
    np.testing.assert_array_equal(palette_for_spec("cityscapes:/nowhere"), cityscapes_palette())
    assert tuple(palette_for_spec("cityscapes:/nowhere")[0]) == (128, 64, 128)  # road
    np.testing.assert_array_equal(palette_for_spec("synthetic:count=2"), voc_palette())
    np.testing.assert_array_equal(palette_for_spec(None), voc_palette())
    np.testing.assert_array_equal(palette_for_spec(""), voc_palette())
    np.testing.assert_array_equal(palette_for_spec("no-such-kind:x"), voc_palette())


def test_legend_lists_the_classes_present_in_order_with_their_colours():
    classes = np.array([[3, 0, 255], [3, 7, 0]])
    entries = legend_entries(voc_palette(), ["zero", "one", "two", "three"], classes)
    assert entries == [
        ("zero", (0, 0, 0)),
        ("three", (128, 128, 0)),  # VOC: bit-interleaved index 3
        ("class 7", (128, 128, 128)),  # past the names; 255 (ignored) left out
    ]
    assert legend_entries(voc_palette(), ["a"], np.full((2, 2), 255)) == []
