"""Cityscapes benchmark files and the official evaluator.

:class:`CityscapesWriter` writes one prediction per image as the benchmark server expects: an
8-bit PNG of Cityscapes ``labelIds`` (train ids mapped back through Cityscapes' label
table) at the image's own size, named ``{city}_{seq}_{frame}_leftImg8bit.png`` after its
``leftImg8bit`` file (the server and ``evalPixelLevelSemanticLabeling`` look for
``{city}_{seq}_{frame}*.png``), all in one folder.

:func:`evaluate_cityscapes` scores such files with cityscapesscripts'
``evalPixelLevelSemanticLabeling.evaluateImgLists`` against the ``*_gtFine_labelIds.png`` files
of the split, so a score can be checked against the official code (class IoU over the 19
evaluated classes, averaged over the classes with a defined IoU, as dynviz's own mIoU).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dynviz.errors import UserError

__all__ = [
    "CityscapesExportError",
    "CityscapesWriter",
    "evaluate_cityscapes",
    "ground_truth_files",
]

logger = logging.getLogger(__name__)

_ID = re.compile(r"^(?:(?P<folder>[^/]+)/)?(?P<stem>[^/_]+_\d+_\d+)$")
_NUM_TRAIN_IDS = 19


class CityscapesExportError(UserError):
    """The data or network cannot give Cityscapes benchmark files; the message says why."""


class CityscapesWriter:
    """Write each prediction as a labelIds PNG named for the benchmark server.

    Args:
        out_dir: the folder (created).
        dataset: a Cityscapes-layout dataset (``image_id`` ``city/city_seq_frame`` and
            ``image_path``), with at most 19 classes.

    Raises:
        CityscapesExportError: not Cityscapes data, or more than 19 classes.
    """

    def __init__(self, out_dir: str | Path, dataset: Any) -> None:
        from dynviz.data.cityscapes import train_id_to_label_id_lut

        if getattr(dataset, "name", None) != "cityscapes" or not hasattr(dataset, "image_path"):
            raise CityscapesExportError(
                "--format cityscapes-test needs Cityscapes data (--data cityscapes:PATH), "
                f"not {getattr(dataset, 'name', type(dataset).__name__)}"
            )
        if dataset.num_classes > _NUM_TRAIN_IDS:
            raise CityscapesExportError(
                f"the data set has {dataset.num_classes} classes; Cityscapes labelIds cover "
                f"{_NUM_TRAIN_IDS} train ids"
            )
        self.out_dir = Path(out_dir)
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(err.errno, f"cannot create {self.out_dir}: {err.strerror}") from err
        self.dataset = dataset
        self.lut = train_id_to_label_id_lut()
        self.files: list[Path] = []
        self._index = {dataset.image_id(i): i for i in range(len(dataset))}

    @staticmethod
    def file_name(image_id: str) -> str:
        """``aachen/aachen_000000_000019`` -> ``aachen_000000_000019_leftImg8bit.png``."""
        match = _ID.match(image_id)
        if match is None:
            raise CityscapesExportError(
                f"image id {image_id!r} is not a Cityscapes name (city_sequence_frame)"
            )
        return f"{match['stem']}_leftImg8bit.png"

    def __call__(self, item: dict[str, Any], prediction: np.ndarray) -> Path:
        """Write ``prediction`` (``(H, W)`` train ids) of ``item`` at its image's own size."""
        image_id = str(item["image_id"])
        source = self.dataset.image_path(self._index[image_id])
        with Image.open(source) as img:
            width, height = img.size
        mask = Image.fromarray(self.lut[prediction.astype(np.uint8)])
        if mask.size != (width, height):
            mask = mask.resize((width, height), Image.NEAREST)
        path = self.out_dir / self.file_name(image_id)
        try:
            mask.save(path)
        except OSError as err:
            raise OSError(err.errno, f"cannot write {path}: {err.strerror}") from err
        self.files.append(path)
        return path


def ground_truth_files(dataset: Any, files: Sequence[Path]) -> list[Path]:
    """The ``*_gtFine_labelIds.png`` of each prediction file of a Cityscapes-layout split.

    Raises:
        CityscapesExportError: a ground-truth file is missing (named).
    """
    root, split = Path(dataset.root), dataset.split
    out = []
    for file in files:
        stem = file.name[: -len("_leftImg8bit.png")]
        city = stem.split("_")[0]
        truth = root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
        if not truth.is_file():
            raise CityscapesExportError(
                f"the cityscapes evaluator needs {truth} (labelIds ground truth)"
            )
        out.append(truth)
    return out


def evaluate_cityscapes(predictions: Sequence[Path], truths: Sequence[Path]) -> dict[str, Any]:
    """Score labelIds predictions with cityscapesscripts' ``evalPixelLevelSemanticLabeling``.

    Returns:
        ``{"miou": class IoU averaged over classes with a defined IoU, "per_class_iou":
        {name: IoU or None}, "category_miou": ...}`` (the official numbers).

    Raises:
        CityscapesExportError: the evaluator refused a file (its message).
    """
    from dynviz.errors import require

    official = require(
        "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
        extra="cityscapes",
        purpose="--evaluator cityscapes",
    )

    args = official.args
    args.evalInstLevelScore = False  # needs instanceIds files the synthetic layout lacks
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output):
            result = official.evaluateImgLists(
                [str(p) for p in predictions], [str(p) for p in truths], args
            )
    except SystemExit:  # printError() exits
        message = output.getvalue().strip().splitlines()
        raise CityscapesExportError(
            "the cityscapes evaluator failed: " + (message[-1] if message else "no message")
        ) from None

    def clean(value: float) -> float | None:
        return None if value is None or not math.isfinite(value) else float(value)

    classes = result["classScores"]
    return {
        "miou": clean(official.getScoreAverage(classes, args)),
        "per_class_iou": {name: clean(v) for name, v in classes.items()},
        "category_miou": clean(official.getScoreAverage(result["categoryScores"], args)),
        "images": len(predictions),
    }
