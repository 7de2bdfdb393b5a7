#!/usr/bin/env bash
# Create .venv, install gen3d with its test tools, and the pinned web assets (npm ci: model-viewer,
# spark, three, swagger-ui-dist; the glTF validator for the tests). Idempotent; used by serve.sh and
# test.sh. `--browser` also installs Debian's chromium for the browser tests when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm > /dev/null; then
  echo "npm not found: install Node.js 18+ with npm (Debian: apt-get install nodejs npm)." >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: a bare `torch` requirement could pull a newer multi-GB build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
# Exact versions from package-lock.json; no install scripts (one is a telemetry ping).
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
if [ "${1:-}" = "--browser" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null; }
  else
    echo "Browser tests will be skipped: install Debian's chromium (sudo apt-get install chromium)." >&2
  fi
fi
