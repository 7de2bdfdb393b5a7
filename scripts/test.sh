#!/usr/bin/env bash
# Fresh machine -> test results: set up .venv, then run the whole suite on CPU (tiny preset).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
