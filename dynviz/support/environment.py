"""What a run ran on: the git commit of the dynviz source (when it is a git checkout), Python,
the platform and the versions of dynviz and its dependencies, for a run folder's
``config.yaml``."""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["environment", "git_commit", "package_versions"]

_EXTRA = ("torch", "numpy", "tensorboard", "streamlit", "onnx", "onnxruntime")


def git_commit(folder: str | Path | None = None) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the git work tree holding ``folder`` (default:
    the dynviz package), or None when it is not one or git is unavailable."""
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    if not re.fullmatch(r"[0-9a-f]{40,64}", sha):
        return None
    return {"commit": sha, "dirty": bool(status.strip())}


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Installed versions of dynviz, its declared dependencies and a few optional ones."""
    names = ["dynviz"]
    try:
        for requirement in metadata.requires("dynviz") or []:
            if "extra ==" in requirement:
                continue
            match = re.match(r"[A-Za-z0-9_.\-]+", requirement)
            if match:
                names.append(match[0])
    except metadata.PackageNotFoundError:
        pass
    versions: dict[str, str] = {}
    for name in dict.fromkeys([*names, *_EXTRA]):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def environment() -> dict[str, Any]:
    """``{"git": git_commit(), "python", "platform", "packages"}``."""
    return {
        "git": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
    }
