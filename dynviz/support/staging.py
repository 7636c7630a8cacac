"""A folder of outputs written whole or not at all: files go to a hidden staging folder inside
it and are renamed into place once every one of them is written (``dynviz analyze`` writes its
reports this way, so a killed or failed run leaves the folder as it was)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["staged_folder"]

PREFIX = ".report-"
SUFFIX = ".tmp"


@contextmanager
def staged_folder(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a staging folder inside ``out``; on leaving the block, rename each file written
    there into ``out``. A staging folder left by a killed run is removed first; on an error
    nothing of this run reaches ``out``.

    Raises:
        OSError: ``out`` cannot be written (read-only, full); the message names it, and the
            folder holds what it held before.
    """
    out = Path(out)
    staging = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(f"{PREFIX}*{SUFFIX}"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=PREFIX, suffix=SUFFIX, dir=out))
        yield staging
        for file in sorted(staging.iterdir()):
            os.replace(file, out / file.name)
    except OSError as err:
        problem = err.strerror or err
        raise OSError(err.errno, f"cannot write the report into {out}: {problem}") from err
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
