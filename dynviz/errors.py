"""The base of every error caused by the user's input (a bad config, data set, checkpoint,
records folder or upload), and the error of an optional part that is not installed. The CLI
prints their message and exits 2; they are ``ValueError``s, so callers that catch ``ValueError``
keep working."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "UserError", "require"]


class UserError(ValueError):
    """Bad input from the user; the message names the file, key or value."""


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
