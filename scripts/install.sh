#!/usr/bin/env bash
# Install digitrec for development: a virtual environment in .venv with the package (editable), every
# extra (train, report, heic, parquet, ray, postgres: the `dev` extra pulls them in) and the test tools,
# plus Debian's Chromium for the browser tests. Safe to run again. Users need only `pip install .`.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"

# The browser tests drive Debian's Chromium through Playwright; never `playwright install` (it downloads).
if ! command -v chromium >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
echo "digitrec installed: $(.venv/bin/digitrec --version); chromium: $(chromium --version 2>/dev/null || echo missing)"
