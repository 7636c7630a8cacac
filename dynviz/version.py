"""The version of dynviz, in a module of its own: ``dynviz --version``, checkpoints and records
read it without importing the package's torch modules."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
