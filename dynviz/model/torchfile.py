"""Reading a torch file safely, with a one-line refusal that names what the file is.

``torch.load`` fails on a file that is not a torch checkpoint in many ways (a ``KeyError`` on a
text file, ``EOFError`` on an empty one, a zip error, a long "Weights only load failed" text with
terminal colour codes) and, on a plain pickle, first prints two ``UserWarning`` lines about its
pickle protocol. :func:`load_torch_file` looks at the file before loading it and turns every such
failure into one :class:`TorchFileError` line: an empty file, a text file, a zip archive that is
not a torch archive, a plain Python pickle (not written by ``torch.save``), a torch checkpoint
whose pickle needs code to load (``needs_code`` names the first class or function it imports),
or unrecognised binary data.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from dynviz.errors import BadFileError

__all__ = ["TorchFileError", "describe_file", "load_torch_file"]

# torch.save's legacy (non-zip) format opens with a pickled magic number (protocol 2, LONG1)
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
_ZIP_MAGIC = b"PK\x03\x04"
_GLOBAL = re.compile(r"GLOBAL ([\w.]+ ?[\w.]*) was not an allowed global")
_SNIFF_BYTES = 8192


class TorchFileError(BadFileError):
    """A file cannot be loaded as a torch checkpoint; the one-line message names the file and
    what it is. ``needs_code`` is set (the first global it imports) when the file is a torch
    checkpoint that only an unrestricted unpickler could load."""

    def __init__(self, message: str, *, needs_code: str | None = None) -> None:
        super().__init__(message)
        self.needs_code = needs_code


def _first_global(data: bytes) -> str | None:
    """The first ``module.name`` a pickle imports (GLOBAL, or STACK_GLOBAL after two strings)."""
    strings: list[str] = []
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                return str(arg).replace(" ", ".")
            if opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                return f"{strings[-2]}.{strings[-1]}"
            if isinstance(arg, str):
                strings.append(arg)
    except (ValueError, pickle.UnpicklingError, IndexError, EOFError):
        pass  # a damaged or truncated pickle: what was read so far is all there is
    return None


def _text_line(head: bytes) -> str | None:
    """The first non-empty line of a text file (None when ``head`` is not text)."""
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        if len(head) < _SNIFF_BYTES:
            return None
        try:  # a multi-byte character cut at the end of the sniffed bytes
            text = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return None
    if any(ord(c) < 32 and c not in "\t\r\n\f" for c in text):
        return None
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line[:40] + ("..." if len(line) > 40 else "")


def describe_file(path: str | os.PathLike[str]) -> str:
    """What a file that is not a loadable torch checkpoint is, in a few words (for messages).

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if not head:
        return "an empty file, not a torch checkpoint"
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return "a damaged zip archive, not a torch checkpoint"
        if any(name.endswith("/data.pkl") for name in names):
            return "a damaged torch checkpoint (a zip archive torch cannot read)"
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        return f"a zip archive that is not a torch checkpoint (it holds {shown or 'nothing'})"
    if head.startswith(b"\x80") and not head.startswith(_LEGACY_MAGIC):
        data = path.read_bytes()
        needs = _first_global(data)
        if needs:
            return f"a plain Python pickle that needs code to load ({needs}), not a torch file"
        return "a plain Python pickle, not a torch checkpoint"
    line = _text_line(head)
    if line is not None:
        return f"a text file, not a torch checkpoint (it starts {line!r})"
    return "not a torch checkpoint (unrecognised binary data)"


def _is_torch_file(head: bytes, path: Path) -> bool:
    if head.startswith(_LEGACY_MAGIC):
        return True
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith("/data.pkl") for name in archive.namelist())
        except zipfile.BadZipFile:
            return False
    return False


def load_torch_file(path: str | os.PathLike[str], *, weights_only: bool = True) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=...)`` with a one-line refusal.

    Args:
        path: the file.
        weights_only: load with torch's restricted unpickler (the default). False RUNS ANY
            CODE THE FILE CARRIES.

    Raises:
        TorchFileError: the file is unreadable or not a loadable torch checkpoint; the message
            starts with the path and says what the file is. ``needs_code`` is set when only
            ``weights_only=False`` could load it.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as err:
        raise TorchFileError(f"{path}: cannot read ({err.strerror or err})") from None
    if not _is_torch_file(head, path):
        raise TorchFileError(f"{path}: {describe_file(path)}")
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol notes: the refusal says it
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.")
            return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as err:
        match = _GLOBAL.search(str(err))
        if match is not None:
            needs = match[1].replace(" ", ".")
            raise TorchFileError(
                f"{path}: a torch checkpoint whose pickle needs code to load ({needs})",
                needs_code=needs,
            ) from None
        raise TorchFileError(f"{path}: a damaged torch checkpoint (an invalid pickle)") from None
    except ImportError as err:  # weights_only=False: the code it needs is not installed
        raise TorchFileError(
            f"{path}: a torch checkpoint whose pickle needs code that is not installed ({err})"
        ) from None
    except OSError as err:
        raise TorchFileError(f"{path}: cannot read ({err.strerror or err})") from None
    except Exception as err:  # a damaged archive fails in many ways; weights_only runs no code
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise TorchFileError(f"{path}: a damaged torch checkpoint ({first[:120]})") from None
