"""Files that ship with dynviz beside its modules: the model zoo (``models/``) and the explorer
(``apps/``).

The repository keeps both folders at its top level; the wheel carries them inside the package
(``dynviz/models``, ``dynviz/apps``, see ``pyproject.toml``), where :func:`shipped` finds them
with :mod:`importlib.resources`. An editable install (``pip install -e``) runs the package from the
project folder, which pip records (PEP 610, ``direct_url.json``): there they are that folder's
``models/`` and ``apps/``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import metadata, resources
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = ["shipped"]

DISTRIBUTION = "dynviz"


@cache
def shipped(name: str) -> Path:
    """The folder ``name`` (``"models"`` or ``"apps"``) of this installation.

    Raises:
        FileNotFoundError: the installation has no such folder (the message says where it
            looked).
    """
    packaged = resources.files("dynviz") / name
    if packaged.is_dir():
        return Path(str(packaged))
    project = _editable_project()
    if project is not None and (project / name).is_dir():
        return project / name
    raise FileNotFoundError(
        f"this dynviz installation has no {name}/ (not in {packaged}"
        + (f" nor in the editable project {project}" if project is not None else "")
        + "): reinstall dynviz"
    )


def _editable_project() -> Path | None:
    """The project folder of the editable install of dynviz that is running, else None (stale
    metadata of other installs, such as a leftover ``dynviz.egg-info``, is skipped)."""
    package = Path(__file__).resolve().parents[1]  # dynviz/, above dynviz/support/
    for dist in metadata.distributions(name=DISTRIBUTION):
        try:
            data = json.loads(dist.read_text("direct_url.json") or "{}")
        except json.JSONDecodeError:
            continue
        url = urlparse(str(data.get("url", "")))
        if not data.get("dir_info", {}).get("editable") or url.scheme != "file":
            continue
        project = Path(unquote(url.path))
        if (project / "dynviz").resolve() == package:
            return project
    return None
