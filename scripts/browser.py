"""Debian's chromium under playwright, for the browser tests (``tests/test_browser*.py``) and
``scripts/explorer_start.py``: the one place that says which browser they drive and how.

Never ``playwright install``: ``bash scripts/install-browser.sh`` installs Debian's chromium,
and ``$CHROMIUM`` names another binary.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def chromium() -> Iterator[object]:
    """A launched playwright browser on :data:`CHROMIUM`, closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
