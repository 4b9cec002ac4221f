#!/usr/bin/env bash
# Create .venv and install the pinned requirements + the tubetune package (editable).
#   scripts/setup.sh        what the pipeline needs (make pipeline)
#   scripts/setup.sh dev    + tests, lint, Ray and headless Chromium (make test)
# Idempotent: a stamp per mode holding the requirements' hash skips the install when
# nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
case "$mode" in
  run) files=(requirements.txt) ;;
  dev) files=(requirements.txt requirements-dev.txt requirements-scale.txt) ;;
  *) echo "usage: scripts/setup.sh [dev]" >&2; exit 2 ;;
esac
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.tubetune-setup-$mode"
want="$(cat "${files[@]}" pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # No byte-compiling of every installed module (~40 s here): Python compiles and caches what
  # it imports (the Makefile unexports PYTHONDONTWRITEBYTECODE so that it can).
  .venv/bin/python -m pip install --quiet --no-compile "${files[@]/#/-r}"
  .venv/bin/python -m pip install --quiet --no-deps -e .
  echo "$want" > "$stamp"
fi
[ "$mode" = dev ] || exit 0
# Vega, Vega-Lite and vega-embed at the versions DVC's plot pages load from a CDN, so the
# browser test can render `dvc plots show` offline (from the npm registry).
vega=.venv/share/vega
if [ ! -f "$vega/vega-embed.min.js" ] && command -v npm >/dev/null 2>&1; then
  mkdir -p "$vega"
  tmp="$(mktemp -d)"
  for spec in vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2; do
    pkg="${spec%@*}"
    (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
    tar -xzf "$tmp/$pkg-${spec#*@}.tgz" -C "$tmp" "package/build/$pkg.min.js"
    mv "$tmp/package/build/$pkg.min.js" "$vega/"
  done
  rm -rf "$tmp"
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
