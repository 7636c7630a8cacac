"""The base of every error caused by the user's input (a bad config, data set, checkpoint,
records folder or upload), and the error of an optional part that is not installed. They are
``ValueError``s, so callers that catch ``ValueError`` keep working.

The CLI prints their message as one line and exits with one status per kind of failure:
:data:`EXIT_USAGE` (2) for usage and bad values (argparse's own status for a bad option),
:data:`EXIT_BAD_FILE` (3) for a file or folder that is missing, unreadable or not what it should
be (:class:`BadFileError`), 1 for anything else (a failed write, a runtime failure)."""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Iterable
from types import ModuleType

__all__ = [
    "EXIT_BAD_FILE",
    "EXIT_USAGE",
    "BadFileError",
    "MissingExtraError",
    "UserError",
    "error_message",
    "require",
    "suggest",
    "yaml_problem",
]

EXIT_USAGE = 2
"""Exit status of a usage error or a bad value (a preset, an option, a setting)."""

EXIT_BAD_FILE = 3
"""Exit status of a file or folder that is missing, unreadable or not what it should be."""


class UserError(ValueError):
    """Bad input from the user; the message names the file, key or value."""


class BadFileError(UserError):
    """A file or folder the user named is missing, unreadable or not what it should be (an
    image, a data set, a checkpoint, a records folder); the message names it."""


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


def suggest(name: str, known: Iterable[str]) -> str:
    """What an error message adds after an unknown ``name``: ``" (did you mean a, b?)"`` for the
    close matches among ``known``, else ``"; known: ..."``, every name sorted."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return f" (did you mean {', '.join(close)}?)"
    return f"; known: {', '.join(known)}"


def yaml_problem(err: Exception) -> str:
    """A YAML parse error as one line: ``line 5, column 4: could not find expected ':' (while
    scanning a simple key)``. PyYAML's own message spans several lines with the text quoted;
    this reads its marks instead (any other error: its first line)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None)
    if mark is None or not problem:
        lines = str(err).strip().splitlines()
        return lines[0] if lines else type(err).__name__
    context = getattr(err, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    return f"{where}: {problem}" + (f" ({context})" if context else "")
