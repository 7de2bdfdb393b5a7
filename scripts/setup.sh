#!/usr/bin/env bash
# Create .venv and install gen3d from the hashed locks (requirements/*.lock, written by
# scripts/lock.sh). Idempotent; used by serve.sh and test.sh. Serving needs no Node.js: the
# studio's npm files are vendored in web/vendor/. `--tests` adds the test tools, the pinned npm
# test packages (npm ci: the glTF validator, and the packages the vendored files are checked
# against) and Debian's chromium for the browser tests when it is missing; with
# GEN3D_IMAGE_TEST=1 also podman and mmdebstrap for the container image test.
# torch: the CUDA build from PyPI where nvidia-smi finds a GPU, else the CPU build, from pip's
# configured sources or else PyTorch's CPU index; GEN3D_TORCH=cuda|cpu chooses.
set -euo pipefail
cd "$(dirname "$0")/.."
tests=0
if [ "${1:-}" = "--tests" ]; then tests=1; fi
if [ "$tests" = 1 ] && ! command -v npm > /dev/null; then
  echo "npm not found: the tests need Node.js 18+ with npm (Debian: apt-get install nodejs npm)." >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
pip=(.venv/bin/python -m pip install -q --require-hashes --no-deps)
torch="${GEN3D_TORCH:-$(nvidia-smi -L > /dev/null 2>&1 && echo cuda || echo cpu)}"
# Asked first without PyTorch's index: where pip's sources hold the CPU build (CI), an unreachable
# extra index would cost retries for every package.
if ! "${pip[@]}" -r "requirements/torch-$torch.lock" 2> /dev/null; then
  if [ "$torch" != cpu ]; then "${pip[@]}" -r "requirements/torch-$torch.lock"; fi
  echo "torch's CPU build is not among pip's sources: asking PyTorch's CPU index" >&2
  "${pip[@]}" --extra-index-url https://download.pytorch.org/whl/cpu -r requirements/torch-cpu.lock
fi
if [ "$tests" = 1 ]; then lock=test extra="[test]"; else lock=runtime extra=""; fi
"${pip[@]}" -r "requirements/$lock.lock"
# Everything is installed by now, setuptools from the lock included: this links the checkout
# (tests/test_lock.py keeps the locks complete).
.venv/bin/python -m pip install -q --no-build-isolation -e ".$extra"
if [ "$tests" = 0 ]; then exit 0; fi
# Exact versions from package-lock.json; no install scripts (one is a telemetry ping).
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" > /dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" > /dev/null; }
  else
    echo "Tests that need $* will be skipped: install them (sudo apt-get install $*)." >&2
  fi
}
if [ ! -x /usr/bin/chromium ]; then apt_install chromium; fi
# The redis job store's tests (and their chaos tests) start Debian's redis-server themselves.
if [ ! -x /usr/bin/redis-server ]; then apt_install redis-server; fi
if [ "${GEN3D_IMAGE_TEST:-0}" = 1 ] && ! command -v podman mmdebstrap > /dev/null; then apt_install podman mmdebstrap; fi
