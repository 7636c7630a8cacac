"""The base of every error caused by the user's input (a bad config, data set, checkpoint,
records folder or upload), and the error of an optional part that is not installed. The CLI
prints their message and exits 2; they are ``ValueError``s, so callers that catch ``ValueError``
keep working."""

from __future__ import annotations

import importlib
import re
from types import ModuleType

__all__ = ["MissingExtraError", "UserError", "error_message", "require"]


class UserError(ValueError):
    """Bad input from the user; the message names the file, key or value."""


_WORKER = re.compile(r"^Caught (\w+) in DataLoader worker process \d+\.")


def error_message(err: BaseException) -> str:
    """The message of an error as one line for the user.

    An error raised in a DataLoader worker reaches the main process as the same type with the
    worker's whole traceback as its message ("Caught DataError in DataLoader worker process 0.
    Original Traceback ..."); its last ``Type: message`` line is what the user needs (it names
    the file and the reason)."""
    text = str(err)
    match = _WORKER.match(text)
    if match is not None:
        name = match[1]
        lines = text.rstrip().splitlines()
        for index in range(len(lines) - 1, 0, -1):
            head, sep, rest = lines[index].partition(": ")
            if sep and (head == name or head.endswith("." + name)):
                return " ".join([rest.strip(), *(line.strip() for line in lines[index + 1 :])])
    return text


class MissingExtraError(UserError, ImportError):
    """An optional part of dynviz is used without its extra; the message names the extra."""


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` of an optional part, or raise :class:`MissingExtraError` with a one-line
    message: ``<purpose> needs <package>: pip install 'dynviz[<extra>]'``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise MissingExtraError(
            f"{purpose} needs {package}, which is not installed: pip install 'dynviz[{extra}]'"
        ) from None
