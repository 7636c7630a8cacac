"""The text outputs of a run directory: ``config.yaml``, ``metrics.jsonl``, ``log.txt`` (the
log messages of the run, appended on resume) and TensorBoard events (with the ``tensorboard``
extra installed). Only rank 0 keeps one."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
import yaml

__all__ = ["CONFIG_FILE", "LOG_FILE", "METRICS_FILE", "RunLog", "require_tensorboard"]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "log.txt"
TENSORBOARD_HINT = "pip install 'dynviz[tensorboard]'"


def tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def require_tensorboard() -> None:
    """Raise a one-line error naming the extra when tensorboard is not installed."""
    if not tensorboard_available():
        from dynviz.errors import MissingExtraError

        raise MissingExtraError(
            f"--tensorboard needs tensorboard, which is not installed: {TENSORBOARD_HINT}"
        )


class RunLog:
    """Write ``doc`` as ``config.yaml`` and open ``metrics.jsonl`` for appending.

    On resume (``iteration > 0``) the metrics lines past ``iteration`` (written after the
    checkpoint being resumed) are dropped, and TensorBoard purges its events past it, so a
    resumed run's logs read as one run.

    Raises:
        OSError: the folder cannot be written (the message names it).
    """

    def __init__(
        self, run_dir: Path, doc: dict[str, Any], *, iteration: int, tensorboard: bool | None
    ) -> None:
        self.run_dir = run_dir
        self._doc = dict(doc)
        self._handler: logging.Handler | None = None
        self._level: int | None = None
        metrics_path = run_dir / METRICS_FILE
        try:
            (run_dir / CONFIG_FILE).write_text(
                yaml.safe_dump(doc, sort_keys=False), encoding="utf-8"
            )
            kept = []
            if iteration > 0 and metrics_path.is_file():
                for line in metrics_path.read_text(encoding="utf-8").splitlines():
                    if line.strip() and json.loads(line).get("iter", 0) <= iteration:
                        kept.append(line)
            metrics_path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
            self._metrics: Any = metrics_path.open("a", encoding="utf-8")
            self._open_text_log(run_dir / LOG_FILE)
        except OSError as err:
            raise OSError(err.errno, f"cannot write to {run_dir}: {err.strerror}") from err
        self._writer: Any = None
        if tensorboard is not False:
            if tensorboard_available():
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(run_dir), purge_step=iteration + 1)
            elif tensorboard:
                require_tensorboard()
            else:
                logger.info("no TensorBoard events (%s to have them)", TENSORBOARD_HINT)

    def _open_text_log(self, path: Path) -> None:
        """Copy the ``dynviz`` loggers' messages (INFO and above) to ``log.txt``."""
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        handler.setLevel(logging.INFO)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        package = logging.getLogger("dynviz")
        if package.getEffectiveLevel() > logging.INFO:
            self._level = package.level
            package.setLevel(logging.INFO)
        package.addHandler(handler)
        self._handler = handler

    def add_section(self, name: str, values: dict[str, Any]) -> None:
        """Rewrite ``config.yaml`` with one more section (e.g. what the checkpoint's network
        differs in from the network as trained).

        Raises:
            OSError: the file cannot be written (the message names it).
        """
        self._doc[name] = values
        path = self.run_dir / CONFIG_FILE
        try:
            path.write_text(yaml.safe_dump(self._doc, sort_keys=False), encoding="utf-8")
        except OSError as err:
            raise OSError(err.errno, f"cannot write {path}: {err.strerror}") from err

    def record(self, record: dict[str, Any]) -> None:
        """Append one JSON line (non-finite floats become null) and its numbers as TensorBoard
        scalars under ``val/``, ``train/`` or the record's kind."""
        clean = {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in record.items()
        }
        try:
            self._metrics.write(json.dumps(clean) + "\n")
            self._metrics.flush()
        except OSError as err:
            raise OSError(
                err.errno, f"cannot write {self.run_dir / METRICS_FILE}: {err.strerror}"
            ) from err
        if self._writer is not None:
            kind = record.get("kind")
            prefix = {"eval": "val", "train": "train"}.get(kind, kind)
            for key, value in record.items():
                if key not in ("iter", "kind") and isinstance(value, (int, float)):
                    self._writer.add_scalar(f"{prefix}/{key}", value, record["iter"])

    @property
    def has_events(self) -> bool:
        """Whether TensorBoard events are written."""
        return self._writer is not None

    def histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        """A TensorBoard histogram (nothing without tensorboard)."""
        if self._writer is not None:
            self._writer.add_histogram(tag, values, step)

    def close(self) -> None:
        self._metrics.close()
        if self._handler is not None:
            package = logging.getLogger("dynviz")
            package.removeHandler(self._handler)
            self._handler.close()
            self._handler = None
            if self._level is not None:
                package.setLevel(self._level)
                self._level = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
