#!/usr/bin/env bash
# Install the Debian chromium that the browser tests (tests/test_browser.py) drive through
# playwright. Idempotent: does nothing when /usr/bin/chromium exists. Never runs
# `playwright install` (that downloads a browser build and fails offline).
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

if [ -x "$CHROMIUM" ]; then
    echo "chromium present: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "error: $CHROMIUM is missing and this is not root (no sudo): install chromium" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# The package lists may be empty on a fresh image: update once, then install.
if ! $SUDO apt-get install -y --no-install-recommends chromium; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends chromium
fi
# fonts make the screenshots legible; optional
$SUDO apt-get install -y --no-install-recommends fonts-dejavu-core >/dev/null 2>&1 || true

"$CHROMIUM" --version
