#!/usr/bin/env bash
# Fresh machine -> test results: set up .venv, the web assets and Chromium, then run the whole
# suite on CPU (tiny preset).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --browser
exec .venv/bin/python -m pytest "$@"
