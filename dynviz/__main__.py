"""``python -m dynviz``: the ``dynviz`` command."""

from __future__ import annotations

import sys

from dynviz.cli import main

if __name__ == "__main__":
    sys.exit(main())
