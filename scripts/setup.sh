#!/usr/bin/env bash
# Create .venv and install pinned requirements + the tubetune package (editable).
# Idempotent: a stamp holding the requirements' hash skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.tubetune-setup"
want="$(cat requirements.txt requirements-scale.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  .venv/bin/python -m pip install --quiet -r requirements-scale.txt  # Ray: label_runner ray
  .venv/bin/python -m pip install --quiet --no-deps -e .
  echo "$want" > "$stamp"
fi
# Headless Chromium for the web page's browser test (Debian's package; Playwright drives it).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: no /usr/bin/chromium (run apt-get install chromium as root): page test skips" >&2
  fi
fi
