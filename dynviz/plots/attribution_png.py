"""Gate attribution as files: each path's map as a PNG overlay on the image, the colour scale,
and the per-path table (:func:`write_attribution`, what ``dynviz attribute`` writes).

The maps come from :func:`dynviz.model.attribution.attribute`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from dynviz.model.attribution import AttributionError, ImageAttribution

__all__ = ["COLORBAR", "attribution_overlay", "write_attribution", "write_colorbar"]


def attribution_overlay(
    image: np.ndarray,
    values: np.ndarray,
    *,
    opacity: float = 0.6,
    limit: float | None = None,
    cmap: str = "RdBu_r",
) -> np.ndarray:
    """An RGB uint8 overlay of a map (already at the image's size) on ``image``: a diverging
    colour scale centred at zero (red opens, blue closes), symmetric limits ``+-limit``
    (default ``max |values|``); the blend is stronger where ``|values|`` is larger."""
    import matplotlib

    values = np.asarray(values, dtype=np.float64)
    if values.shape != image.shape[:2]:
        raise ValueError(f"map {values.shape} and image {image.shape[:2]} differ in size")
    bound = float(np.abs(values).max()) if limit is None else float(limit)
    scaled = np.zeros_like(values) if bound == 0 else np.clip(values / bound, -1.0, 1.0)
    scaled = scaled.astype(np.float32)
    lut = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3].astype(np.float32)
    colours = lut[np.rint((scaled + 1.0) * 127.5).astype(np.uint8)] * 255.0  # 0 -> the middle
    weight = opacity * np.abs(scaled)[..., None]
    blend = (1.0 - weight) * image.astype(np.float32) + weight * colours
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def _png_name(layer: int, stride: int, direction: str) -> str:
    return f"layer{layer:02d}_s{stride:02d}_{direction}.png"


COLORBAR = "colorbar.png"
"""The colour scale of every overlay that :func:`write_attribution` writes."""


def write_colorbar(path: str | os.PathLike[str], *, cmap: str = "RdBu_r") -> Path:
    """The overlays' colour scale as a PNG: -1 to +1 of each map's own ``max |map|`` (its
    ``map_limit``), red pushing the gate's logit up (opening the path), blue down."""
    import matplotlib
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.0, 0.9), dpi=100, layout="constrained")  # no pyplot, no backend
    ax = figure.subplots()
    scale = matplotlib.cm.ScalarMappable(
        norm=matplotlib.colors.Normalize(-1.0, 1.0), cmap=matplotlib.colormaps[cmap]
    )
    bar = figure.colorbar(scale, cax=ax, orientation="horizontal", ticks=[-1, -0.5, 0, 0.5, 1])
    bar.set_label("map / map_limit: red opens the path, blue closes it")
    figure.savefig(path)
    return Path(path)


def write_attribution(
    attr: ImageAttribution,
    image: np.ndarray,
    out: str | os.PathLike[str],
    *,
    opacity: float = 0.6,
) -> Path:
    """Write one image's attribution into the folder ``out``:

    * ``attribution.parquet``: :meth:`ImageAttribution.frame` plus ``map`` (the path's map at
      the gate's resolution, row-major float32, ``map_height x map_width``) and ``png``;
    * ``maps/layerLL_sSS_DIR.png``: each map upsampled over the image as an overlay (diverging
      colours centred at zero, each map scaled to its own ``max |m|``);
    * ``region_down.png``, ``region_up.png`` and ``summary.csv``: the per-image summary;
    * ``colorbar.png``: the colour scale of the overlays (each map's limit is its
      ``map_limit``).

    Returns:
        The folder.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise AttributionError(f"{folder}: exists and is not a folder")
    (folder / "maps").mkdir(parents=True, exist_ok=True)
    if image.shape[:2] != attr.image_size:
        raise ValueError(f"image {image.shape[:2]} is not the attributed {attr.image_size}")
    frame = attr.frame()
    maps, pngs = [], []
    for row in frame.itertuples():
        node = attr.node(row.layer, row.scale_index)
        values = node.maps[node.index(row.direction)]
        maps.append(values.astype(np.float32).ravel())
        name = _png_name(row.layer, row.scale, row.direction)
        overlay = attribution_overlay(
            image, attr.upsampled(row.layer, row.scale_index, row.direction), opacity=opacity
        )
        Image.fromarray(overlay).save(folder / "maps" / name, compress_level=1)
        pngs.append(f"maps/{name}")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.append_column("map", pa.array(maps, type=pa.list_(pa.float32())))
    table = table.append_column("png", pa.array(pngs, type=pa.string()))
    pq.write_table(table, folder / "attribution.parquet")
    for direction, region in attr.region_maps().items():
        Image.fromarray(attribution_overlay(image, region, opacity=opacity)).save(
            folder / f"region_{direction}.png", compress_level=1
        )
    attr.summary().to_csv(folder / "summary.csv", index=False)
    write_colorbar(folder / COLORBAR)
    return folder
