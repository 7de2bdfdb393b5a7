#!/usr/bin/env bash
# Fresh machine -> test results: set up .venv from the locks, the npm test packages and Chromium,
# then run the whole suite on CPU (tiny preset). GEN3D_IMAGE_TEST=1 adds the container image test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
exec .venv/bin/python -m pytest "$@"
