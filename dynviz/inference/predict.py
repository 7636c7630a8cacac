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
:func:`~dynviz.model.checkpoint.atomic_write`, ``predictions.csv`` once every image is done
(renamed over the old one). Until then each image's rows go to the hidden journal
``DIR/.predictions.csv.partial``, flushed after every image, under a first line that
fingerprints the run: the weights, the routing space and every option that changes an output.
A run killed or stopped by a full or read-only disk leaves the previous ``predictions.csv`` as it
was and no torn file. A re-run with the same fingerprint keeps the images the journal lists
whose mask and overlay exist (:attr:`PredictResult.reused`; a torn last line's image is
redone) and segments the others; any other re-run starts afresh.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
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
JOURNAL_FILE = f".{CSV_FILE}.partial"
_JOURNAL_TAG = "# dynviz predict journal "
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
        images: images segmented (those reused from a killed run's journal included).
        forwards: forward passes (those reused included).
        failed: ``(path, reason)`` of every input skipped.
        real_gmacs: the real GMACs of every image (summed over its forward passes).
        reused: images a killed run with the same fingerprint had finished (not run again).
    """

    out_dir: Path
    images: int = 0
    forwards: int = 0
    reused: int = 0

    def add(self, rows: Sequence[dict[str, Any]], *, reused: bool = False) -> None:
        """Count one image from its CSV rows (one per forward pass)."""
        self.images += 1
        self.reused += int(reused)
        self.forwards += len(rows)
        self.real_gmacs.append(sum(float(row["real_gmacs"]) for row in rows))

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
    fingerprint = _fingerprint(
        model, palette=palette, aug=aug, window=window, stride=stride, route=route, opacity=opacity
    )
    done = _Journal.finished(out / JOURNAL_FILE, fingerprint)
    was_training = model.training
    model.eval()
    runner = inference_form(model)  # BN folded (a copy): fused kernels
    table = _Journal(out / JOURNAL_FILE, fingerprint)
    bar = Progress(total=len(files), desc="predict", show=progress)
    try:
        for file, name in zip(files, _unique_names(files), strict=True):
            mask_path = masks_dir / f"{name}.png"
            rows = done.get(str(file))
            if rows and _kept(rows, file, mask_path, overlays_dir / f"{name}.png"):
                table.write(rows)
                result.add(rows, reused=True)
                bar.update(1)
                continue
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
            _write_png(mask_path, classes)  # mode L
            _write_png(
                overlays_dir / f"{name}.png",
                overlay(image, classes, opacity=opacity, palette=palette),
            )
            rows = []
            for forward in forwards:
                real, expected = forward_costs(model, forward, tables, gates_ran=gates_ran)
                rows.append(
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
                    }
                )
            table.write(rows)  # the image's rows at once, flushed
            result.add(rows)
            bar.update(1)
        table.commit(out / CSV_FILE)
    finally:
        bar.close()
        table.close()
        model.train(was_training)
    if result.reused:
        logger.info(
            "%d of %d image(s) reused from the journal of a killed run in %s",
            result.reused,
            result.images,
            out,
        )
    return result


def _fingerprint(
    model: RoutingNetwork,
    *,
    palette: np.ndarray,
    aug: Augment | None,
    window: tuple[int, int] | None,
    stride: tuple[int, int] | None,
    route: Route | None,
    opacity: float,
) -> str:
    """SHA-256 of what decides a run's outputs: the weights and buffers, the routing space, the
    palette and the options (a journal is reused only by a run with the same)."""
    digest = hashlib.sha256()
    options = {
        "config": model.config.to_dict(),
        "aug": None if aug is None else [list(aug.scales), aug.flip],
        "window": window,
        "stride": stride,
        "route": None if route is None else sorted(map(list, route.paths)),
        "opacity": opacity,
        "columns": CSV_COLUMNS,
    }
    digest.update(json.dumps(options, sort_keys=True, default=str).encode("utf-8"))
    digest.update(np.ascontiguousarray(palette).tobytes())
    for key, tensor in model.state_dict().items():
        digest.update(key.encode("utf-8"))
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _kept(rows: list[dict[str, str]], image: Path, mask: Path, overlay_path: Path) -> bool:
    """Whether a journal's rows of ``image`` still stand: its mask (under the name this run
    gives it, no older than the image file) and its overlay exist."""
    try:
        fresh = mask.stat().st_mtime_ns >= image.stat().st_mtime_ns and overlay_path.is_file()
    except OSError:
        return False
    return fresh and all(Path(row["mask"]).name == mask.name for row in rows)


class _Journal:
    """The rows of a run in progress, ``DIR/.predictions.csv.partial``: a first line with the
    run's fingerprint, then the CSV, each image's rows written at once and flushed (a killed
    run loses at most the image being written). :meth:`commit` writes ``predictions.csv``
    atomically from it and removes it; every failed write names the file."""

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = path
        self.committed = False
        self.images = 0  # images whose rows were written
        try:
            self.handle = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
            self.handle.write(f"{_JOURNAL_TAG}{fingerprint}\n")
        except OSError as err:
            raise self._error(err) from err
        self.write([])  # the header

    @staticmethod
    def finished(path: Path, fingerprint: str) -> dict[str, list[dict[str, str]]]:
        """The rows per image of a killed run's journal with this ``fingerprint`` (empty for
        another run's, or none). A torn last line (no newline) takes its image's rows with it."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return {}
        first, _, body = text.partition("\n")
        if first != f"{_JOURNAL_TAG}{fingerprint}":
            return {}
        torn = not body.endswith("\n")
        rows: dict[str, list[dict[str, str]]] = {}
        last = None
        for row in csv.DictReader(io.StringIO(body)):
            if None in row or any(value is None for value in row.values()):
                torn = True  # a short or long row: only the last can be
                continue
            last = row["image"]
            rows.setdefault(last, []).append(row)
        if torn and last is not None:
            rows.pop(last, None)
        return rows

    def _error(self, err: OSError) -> OSError:
        return OSError(err.errno, f"cannot write {self.path}: {err.strerror}")

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Write one image's rows in one call and flush them ([]: the header)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
        if rows:
            writer.writerows(rows)
        else:
            writer.writeheader()
        try:
            self.handle.write(buffer.getvalue())
            self.handle.flush()
        except OSError as err:
            raise self._error(err) from err
        self.images += bool(rows)

    def commit(self, target: Path) -> None:
        """Write ``target`` (the CSV, without the fingerprint line) atomically, then remove the
        journal."""
        try:
            self.handle.close()
            text = self.path.read_text(encoding="utf-8").partition("\n")[2]
        except OSError as err:
            raise self._error(err) from err
        atomic_write(target, lambda handle: handle.write(text.encode("utf-8")))  # names it
        self.path.unlink(missing_ok=True)
        self.committed = True

    def close(self) -> None:
        """Close the journal. An uncommitted one that lists an image stays for the next run
        to resume from; one without (the first image failed) is removed."""
        try:
            self.handle.close()
        except OSError:  # a failed write was raised, naming the journal, already
            pass
        if not self.committed and not self.images:
            self.path.unlink(missing_ok=True)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """Write an image atomically (the error names ``path``)."""
    atomic_write(path, lambda handle: Image.fromarray(pixels).save(handle, format="PNG"))


def _remove_temporaries(out: Path) -> None:
    """Remove the temporary files a killed run left in ``out`` (half-written images, and the
    CSV temporaries of earlier versions; never read as output). The journal stays."""
    stale = [
        *out.glob(f".{CSV_FILE}.*.tmp"),
        *(out / "masks").glob(".*.png.*.tmp"),
        *(out / "overlays").glob(".*.png.*.tmp"),
    ]
    for file in stale:
        file.unlink(missing_ok=True)
    if stale:
        logger.info("removed %d temporary file(s) a killed run left in %s", len(stale), out)
