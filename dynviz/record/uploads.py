"""Images from outside a data set (the Streamlit explorer's uploads): checking, decoding, and
running a model on one image.

An upload is untrusted bytes. :func:`read_upload` decodes it in memory with PIL (nothing is
written to disk) and raises :class:`UploadError` with a message fit to show the user when the
bytes are

* empty, or more than ``max_bytes`` long;
* not an image in one of :data:`ALLOWED_FORMATS` (PIL plugins that run external programs, such as
  EPS through Ghostscript, are never tried);
* an image with more than ``max_pixels`` pixels (checked from the header, before decoding, so a
  decompression bomb is refused without being decoded);
* truncated or corrupt (decoding fails).

Decoded images are RGB ``uint8`` ``(H, W, 3)`` arrays, turned upright from their EXIF
orientation (``PIL.ImageOps.exif_transpose``) and converted the way
:func:`dynviz.data.read_image` converts files: grayscale, palette and CMYK images become RGB, an
alpha channel is dropped, 16-bit grayscale keeps the top 8 bits of its used range. Animated
images give their first frame.

:func:`route_image` runs a network once on one image through the recorder's in-memory frames
(:func:`dynviz.record.record_batch`), so an upload's route and costs come out in the records'
schema, counted exactly as for a data set;
:func:`predict` gives the class map and :func:`overlay` blends it over the image for display.
:func:`recorded_view` gathers what the explorer shows of a recorded image (:class:`ImageView`).
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from dynviz.data.base import image_size_problem, to_rgb
from dynviz.data.palette import colorize, overlay  # the one colouring rule, re-exported
from dynviz.errors import BadFileError

__all__ = [
    "ALLOWED_FORMATS",
    "MAX_BYTES",
    "MAX_PIXELS",
    "ImageRoute",
    "ImageView",
    "UploadError",
    "UploadedImage",
    "colorize",
    "fit_size",
    "overlay",
    "predict",
    "read_upload",
    "recorded_view",
    "route_image",
]

logger = logging.getLogger(__name__)

MAX_BYTES = 20 * 1024 * 1024
"""Default upper bound on an upload's size in bytes (20 MiB)."""

MAX_PIXELS = 4096 * 4096
"""Default upper bound on an upload's width x height (16.8 megapixels)."""

ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
"""PIL format names that are tried, in this order."""


class UploadError(BadFileError):
    """An upload cannot be used as an image; the message says why, for the user."""


@dataclass(frozen=True)
class UploadedImage:
    """A decoded upload.

    Attributes:
        name: the file name the user gave.
        image: ``(H, W, 3)`` uint8 RGB pixels.
        format: the PIL format name (``PNG``, ``JPEG``, ...).
        num_bytes: the upload's size in bytes.
    """

    name: str
    image: np.ndarray
    format: str
    num_bytes: int

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


def _human_bytes(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return f"{count} bytes"  # pragma: no cover


def read_upload(
    data: bytes,
    *,
    name: str = "upload",
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> UploadedImage:
    """Check and decode uploaded image bytes.

    Args:
        data: the file's bytes.
        name: the file name, for messages.
        max_bytes: refuse uploads longer than this.
        max_pixels: refuse images whose width x height exceeds this.

    Returns:
        The decoded :class:`UploadedImage`.

    Raises:
        UploadError: empty, too large, not an image, too many pixels, or truncated/corrupt.
    """
    size = len(data)
    if size == 0:
        raise UploadError(f"{name}: the file is empty")
    if size > max_bytes:
        raise UploadError(
            f"{name}: the file is too large ({_human_bytes(size)}; the limit is "
            f"{_human_bytes(max_bytes)})"
        )
    formats = ", ".join(f.lower() for f in ALLOWED_FORMATS)
    with warnings.catch_warnings():
        # PIL warns (DecompressionBombWarning) between its limit and twice it; we check ourselves
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
        except Image.DecompressionBombError:
            raise UploadError(
                f"{name}: the image has too many pixels (the limit is {max_pixels:,})"
            ) from None
        except Exception:  # UnidentifiedImageError, or a plugin choking on its header
            raise UploadError(
                f"{name}: not an image, or not a format dynviz reads ({formats})"
            ) from None
        try:
            width, height = img.size
            if width <= 0 or height <= 0:
                raise UploadError(f"{name}: the image has no pixels ({width}x{height})")
            small = image_size_problem(name, height, width)  # checked before decoding
            if small:
                raise UploadError(small)
            if width * height > max_pixels:
                raise UploadError(
                    f"{name}: the image is too large ({width}x{height} = {width * height:,} "
                    f"pixels; the limit is {max_pixels:,})"
                )
            try:
                img.seek(0)  # first frame of animations
                img.load()  # truncated and corrupt files fail here
                pixels = to_rgb(ImageOps.exif_transpose(img))  # upright, as viewers show it
            except UploadError:
                raise
            except Exception as err:  # OSError, SyntaxError, EOFError, zlib.error, ...
                reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
                detail = f" ({reason})" if reason else ""
                raise UploadError(
                    f"{name}: the {img.format or 'image'} file is truncated or corrupt and "
                    f"cannot be decoded{detail}"
                ) from None
            fmt = str(img.format or "")
        finally:
            img.close()
    logger.debug("decoded upload %s: %s %dx%d", name, fmt, width, height)
    return UploadedImage(name=name, image=pixels, format=fmt, num_bytes=size)


# ------------------------------------------------------------------------- running a model
@dataclass(frozen=True)
class ImageRoute:
    """The route one image took, in the records' schema.

    Attributes:
        image: the ``(H, W, 3)`` uint8 RGB input the network saw (resized if it was too large).
        prediction: ``(H, W)`` uint8 class map.
        gates: the image's gate rows (``dynviz.record.GATE_COLUMNS``).
        real_gmacs: executed GMACs.
        expected_gmacs: expected GMACs (Eq. 7-8).
    """

    image: np.ndarray
    prediction: np.ndarray
    gates: Any  # pandas.DataFrame
    real_gmacs: float
    expected_gmacs: float


def fit_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """``(height, width)`` scaled down (aspect kept) so that the longer side is at most
    ``max_side``; unchanged when it already fits or ``max_side`` is None."""
    longest = max(height, width)
    if max_side is None or longest <= max_side:
        return height, width
    scale = max_side / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resized(image: np.ndarray, max_side: int | None) -> np.ndarray:
    from dynviz.data import Resize

    height, width = image.shape[:2]
    size = fit_size(height, width, max_side)
    if size == (height, width):
        return image
    label = np.zeros((height, width), dtype=np.uint8)
    return Resize(size)(image, label)[0]


def predict(model: Any, image: np.ndarray, *, route: Any = None) -> np.ndarray:
    """The class map of one RGB image.

    Args:
        model: a :class:`dynviz.model.RoutingNetwork` (run in eval mode, closed paths skipped).
        image: ``(H, W, 3)`` uint8 RGB.
        route: force this :class:`dynviz.model.Route` instead of the gates.

    Returns:
        ``(H, W)`` uint8 class indices.
    """
    import torch

    from dynviz.data import normalize

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model(normalize(image).unsqueeze(0), route=route)  # logits (1, K, H, W)
            return out.logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
    finally:
        model.train(was_training)


def route_image(
    model: Any,
    image: np.ndarray,
    *,
    image_id: str = "upload",
    route: Any = None,
    max_side: int | None = 1024,
) -> ImageRoute:
    """Run ``model`` on one image and return its route, costs and prediction.

    One forward pass through :func:`dynviz.record.record_batch`, so the gate rows and GMACs are
    exactly what recording a data set gives, and the prediction is that pass's (nothing is
    written to disk).

    Args:
        model: a :class:`dynviz.model.RoutingNetwork`.
        image: ``(H, W, 3)`` uint8 RGB.
        image_id: the id of the image in the returned rows.
        route: force this :class:`dynviz.model.Route` instead of the gates.
        max_side: scale the image down first so that its longer side is at most this.

    Returns:
        An :class:`ImageRoute`.
    """
    from dynviz.data import normalize
    from dynviz.record import record_batch

    image = _resized(np.ascontiguousarray(image, dtype=np.uint8), max_side)
    batch = record_batch(model, normalize(image).unsqueeze(0), image_ids=[image_id], route=route)
    row = batch.images.iloc[0]
    return ImageRoute(
        image=image,
        prediction=batch.prediction[0],
        gates=batch.gates,
        real_gmacs=float(row["real_gmacs"]),
        expected_gmacs=float(row["expected_gmacs"]),
    )


@dataclass
class ImageView:
    """Everything the explorer shows of one image: pixels, route and costs.

    Attributes:
        image_id: the image's id in the records (or the upload's name).
        image: ``(H, W, 3)`` uint8 RGB as the network saw it, when available.
        label: ``(H, W)`` uint8 ground truth, when known.
        prediction: ``(H, W)`` uint8 class map, when a model ran.
        gates: the image's gate rows (``dynviz.record.GATE_COLUMNS``).
        real_gmacs, expected_gmacs: the image's costs.
        miou: the image's mIoU (None when unknown).
        stats: the image's scale statistics (``stat_`` prefix dropped).
        note: what to tell the user (a missing checkpoint, image or data set), or "".
    """

    image_id: str
    image: np.ndarray | None
    label: np.ndarray | None
    prediction: np.ndarray | None
    gates: Any  # pandas.DataFrame
    real_gmacs: float
    expected_gmacs: float
    miou: float | None = None
    stats: dict[str, float] = field(default_factory=dict)
    note: str = ""


def recorded_view(
    records: Any,
    image_id: str,
    *,
    dataset: Any = None,
    index: int | None = None,
    model: Any = None,
    route: Any = None,
) -> ImageView:
    """A recorded image as the records hold it: its gate rows, costs, mIoU and statistics;
    with ``dataset`` and ``index`` also its image and label (resized to the size it was recorded
    at), and with ``model`` the model's prediction (forcing ``route`` when given).

    Args:
        records: :class:`dynviz.record.Records` holding ``image_id``.
        image_id: the image.
        dataset: the records' data set (``dynviz.data.build_dataset(meta["data"], ...)``).
        index: the image's index in ``dataset``.
        model: a :class:`dynviz.model.RoutingNetwork` to predict with.
        route: a :class:`dynviz.model.Route` to force, as when the records were made.

    Raises:
        KeyError: ``image_id`` is not in the records.
    """
    import pandas as pd

    rows = records.gates[records.gates["image_id"] == image_id]
    found = records.images[records.images["image_id"] == image_id]
    if found.empty:
        raise KeyError(f"{image_id!r} is not in the records")
    row = found.iloc[0]
    stats = {
        k.removeprefix("stat_"): float(v)
        for k, v in row.items()
        if str(k).startswith("stat_") and pd.notna(v)
    }
    view = ImageView(
        image_id,
        None,
        None,
        None,
        rows,
        float(row["real_gmacs"]),
        float(row["expected_gmacs"]),
        None if pd.isna(row["miou"]) else float(row["miou"]),
        stats,
    )
    if dataset is None or index is None:
        return view
    from dynviz.data import Resize

    image, label = dataset.raw(index)
    size = (int(row["height"]), int(row["width"]))
    if image.shape[:2] != size:  # recorded with `dynviz record --size`
        image, label = Resize(size)(image, label)
    view.image, view.label = image, label
    if model is not None:
        view.prediction = predict(model, image, route=route)
    return view


# ------------------------------------------------------------------------------- display
