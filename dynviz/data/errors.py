"""The one exception type of the data layer.

Every problem with user-supplied data (a spec string, a folder, a file) raises
:class:`DataError`, whose message names the offending file, folder or spec value so that a user
can find and fix it without a traceback.
"""

from __future__ import annotations

import logging

from dynviz.errors import BadFileError, UserError

__all__ = ["DataError", "DataFileError"]

logger = logging.getLogger(__name__)


class DataError(UserError):
    """Bad input data: a malformed spec, a missing or unreadable file, an inconsistent pair.

    Subclasses :class:`ValueError`, so callers that already catch ``ValueError`` keep working.
    """


class DataFileError(DataError, BadFileError):
    """A data file or folder is missing, unreadable or malformed (an image, a mask, a list file,
    a data set's folder or its ``dataset.yaml``); the CLI exits 3 on it."""
