"""Segment image files: class-id masks, colour overlays and every image's route and GMACs.

``dynviz predict RUN|CHECKPOINT IMAGES... --out DIR`` (:func:`predict_files`) writes::

    DIR/masks/<stem>.png       the class ids (8-bit, one channel), at the image's size
    DIR/overlays/<stem>.png    the class colours blended over the image (the data set's palette)
    DIR/predictions.csv        one row per forward pass: image, mask, size, aug_scale, aug_flip,
                               window, input size, real and expected GMACs, active paths, route

Without augmentation or windows a forward pass is an image. Images are read upright
(``PIL.ImageOps.exif_transpose``: a photo tagged Orientation=6 is segmented as it is shown).
Folders among the inputs give their image files (recursively, sorted). A file that cannot be
read is skipped and listed (:attr:`PredictResult.failed`); the others are still written.

Every file is written whole or not at all: a mask or overlay by
:func:`~dynviz.model.checkpoint.atomic_write`, ``predictions.csv`` into a hidden temporary file
renamed over the old one once every image is done. A run killed or stopped by a full or
read-only disk leaves the previous ``predictions.csv`` as it was and no torn file; a re-run
removes the temporary files a killed one left and writes everything again.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dynviz.data import check_image_size, normalize, read_image
from dynviz.data.folder import IMAGE_SUFFIXES
from dynviz.data.palette import overlay
from dynviz.inference.folding import inference_form
from dynviz.inference.tta import Augment, TableCache, forward_costs, infer
from dynviz.model import RoutingNetwork
from dynviz.model.checkpoint import atomic_write
from dynviz.model.route import Route
from dynviz.support.progress import Progress
from dynviz.units import GIGA

__all__ = [
    "CSV_COLUMNS",
    "PredictResult",
    "collect_images",
    "predict_files",
    "route_string",
]

logger = logging.getLogger(__name__)

CSV_FILE = "predictions.csv"
CSV_COLUMNS = (
    "image",
    "mask",
    "height",
    "width",
    "aug_scale",
    "aug_flip",
    "window",
    "input_height",
    "input_width",
    "real_gmacs",
    "expected_gmacs",
    "active_paths",
    "route",
)


@dataclass
class PredictResult:
    """What :func:`predict_files` did.

    Attributes:
        out_dir: the output folder.
        images: images segmented.
        forwards: forward passes run.
        failed: ``(path, reason)`` of every input skipped.
        real_gmacs: the real GMACs of every image (summed over its forward passes).
    """

    out_dir: Path
    images: int = 0
    forwards: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    real_gmacs: list[float] = field(default_factory=list)


def collect_images(
    inputs: Sequence[str | os.PathLike[str]],
) -> tuple[list[Path], list[tuple[str, str]]]:
    """The image files of ``inputs`` (files as given, folders searched recursively for
    :data:`~dynviz.data.folder.IMAGE_SUFFIXES`), and ``(input, reason)`` for those missing."""
    files: list[Path] = []
    missing: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                missing.append((str(path), "folder holds no image file"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            missing.append((str(path), "no such file or folder"))
    return files, missing


def route_string(config: Any, active: torch.Tensor) -> str:
    """Active paths as ``layer:stride:direction`` items joined by spaces (``1:4:keep ...``).

    Args:
        config: the routing space.
        active: ``(L + 1, S, 3)`` bool.
    """
    names = ("keep", "up", "down")
    items = [
        f"{int(layer)}:{config.stride(int(scale))}:{names[int(d)]}"
        for layer, scale, d in torch.nonzero(active).tolist()
    ]
    return " ".join(items)


def _unique_names(files: Sequence[Path]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for file in files:
        stem = file.stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def predict_files(
    model: RoutingNetwork,
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    palette: np.ndarray,
    aug: Augment | None = None,
    window: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    route: Route | None = None,
    device: torch.device | str | None = None,
    opacity: float = 0.5,
    progress: bool | None = False,
) -> PredictResult:
    """Segment image files into ``out_dir`` (see the module docstring).

    Args:
        model: the network (run in eval mode, closed paths skipped).
        inputs: image files and folders.
        out_dir: the output folder (created).
        palette: ``(256, 3)`` uint8 class colours (:mod:`dynviz.data.palette`).
        aug: test-time augmentation (:mod:`dynviz.inference.tta`).
        window: slide windows of this size over larger images.
        stride: the windows' stride (default: two thirds of the window).
        route: force this route instead of the gates.
        device: where to run (default: where the model's parameters are).
        opacity: weight of the colours in the overlays.
        progress: ``True`` a tqdm bar, ``None`` a bar on a terminal and else a log line every
            half minute (:class:`dynviz.support.progress.Progress`), ``False`` nothing.

    Returns:
        The :class:`PredictResult`; unreadable inputs are in ``failed``, not raised.

    Raises:
        OSError: ``out_dir`` cannot be written (the message names it).
    """
    from dynviz.data import DataError

    out = Path(out_dir)
    masks_dir, overlays_dir = out / "masks", out / "overlays"
    try:
        masks_dir.mkdir(parents=True, exist_ok=True)
        overlays_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(err.errno, f"cannot create {out}: {err.strerror}") from err
    _remove_temporaries(out)
    files, failed = collect_images(inputs)
    result = PredictResult(out_dir=out, failed=list(failed))
    device = torch.device(device) if device is not None else next(model.parameters()).device
    tables = TableCache(model)
    gates_ran = bool(model.is_dynamic and route is None)
    was_training = model.training
    model.eval()
    runner = inference_form(model)  # BN folded (a copy): fused kernels
    table = _CsvTable(out / CSV_FILE)
    bar = Progress(total=len(files), desc="predict", show=progress)
    try:
        for file, name in zip(files, _unique_names(files), strict=True):
            try:
                image = read_image(file, exif_transpose=True)  # (H, W, 3) uint8 RGB, upright
                check_image_size(image, file)
            except DataError as err:
                logger.warning("skipped %s", err)
                result.failed.append((str(file), str(err)))
                bar.update(1)
                continue
            height, width = image.shape[:2]
            with torch.inference_mode():
                x = normalize(image).unsqueeze(0).to(device)  # (1, 3, H, W)
                probs, forwards = infer(
                    runner, x, aug=aug, window=window, stride=stride, route=route
                )
                classes = probs.argmax(1)[0].to(torch.uint8).cpu().numpy()  # (H, W)
            mask_path = masks_dir / f"{name}.png"
            _write_png(mask_path, classes)  # mode L
            _write_png(
                overlays_dir / f"{name}.png",
                overlay(image, classes, opacity=opacity, palette=palette),
            )
            total = 0.0
            for forward in forwards:
                real, expected = forward_costs(model, forward, tables, gates_ran=gates_ran)
                total += float(real[0]) / GIGA
                table.write(
                    {
                        "image": str(file),
                        "mask": str(mask_path.relative_to(out)),
                        "height": height,
                        "width": width,
                        "aug_scale": forward.scale,
                        "aug_flip": forward.flip,
                        "window": ",".join(str(v) for v in forward.box),
                        "input_height": forward.size[0],
                        "input_width": forward.size[1],
                        "real_gmacs": f"{float(real[0]) / GIGA:.6g}",
                        "expected_gmacs": f"{float(expected[0]) / GIGA:.6g}",
                        "active_paths": int(forward.active[0].sum()),
                        "route": route_string(model.config, forward.active[0]),
                    },
                )
            result.images += 1
            result.forwards += len(forwards)
            result.real_gmacs.append(total)
            bar.update(1)
        table.commit()
    finally:
        bar.close()
        table.close()
        model.train(was_training)
    return result


class _CsvTable:
    """``predictions.csv`` written into a hidden temporary file beside it and renamed over it
    by :meth:`commit`; :meth:`close` without a commit removes the temporary file (the old
    CSV stays). Every failed write names the CSV."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            self.handle = os.fdopen(fd, "w", newline="", encoding="utf-8")
        except OSError as err:
            raise self._error(err) from err
        self.committed = False
        self.writer = csv.DictWriter(self.handle, fieldnames=CSV_COLUMNS)
        self.write(None)

    def _error(self, err: OSError) -> OSError:
        return OSError(err.errno, f"cannot write {self.path}: {err.strerror}")

    def write(self, row: dict[str, Any] | None) -> None:
        """Write a row (None: the header)."""
        try:
            if row is None:
                self.writer.writeheader()
            else:
                self.writer.writerow(row)
        except OSError as err:
            raise self._error(err) from err

    def commit(self) -> None:
        """Flush, fsync and rename the temporary file over the CSV."""
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            os.chmod(self.tmp, 0o644)  # mkstemp creates 0600
            os.replace(self.tmp, self.path)
        except OSError as err:
            raise self._error(err) from err
        self.committed = True

    def close(self) -> None:
        try:
            self.handle.close()
        except OSError:  # a failed write was raised, naming the CSV, already
            pass
        if not self.committed:
            Path(self.tmp).unlink(missing_ok=True)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """Write an image atomically (the error names ``path``)."""
    atomic_write(path, lambda handle: Image.fromarray(pixels).save(handle, format="PNG"))


def _remove_temporaries(out: Path) -> None:
    """Remove the temporary files a killed run left in ``out`` (never read as output)."""
    stale = [
        *out.glob(f".{CSV_FILE}.*.tmp"),
        *(out / "masks").glob(".*.png.*.tmp"),
        *(out / "overlays").glob(".*.png.*.tmp"),
    ]
    for file in stale:
        file.unlink(missing_ok=True)
    if stale:
        logger.info("removed %d temporary file(s) a killed run left in %s", len(stale), out)
