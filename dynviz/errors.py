"""The base of every error caused by the user's input (a bad config, data set, checkpoint,
records folder or upload). The CLI prints their message and exits 2; they are ``ValueError``s,
so callers that catch ``ValueError`` keep working."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input from the user; the message names the file, key or value."""
