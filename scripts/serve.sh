#!/usr/bin/env bash
# Fresh machine -> running service: set up .venv from the locks (again only when pyproject.toml,
# requirements/ or setup.sh changed; no Node.js: the studio's files are vendored in web/vendor/),
# then `gen3d serve CONFIG` (default: the production one-GPU graph). Its pre-flight reads the
# devices and weights CONFIG needs and stops at once, with one message, on a machine that cannot
# run it (no CUDA GPU: it names configs/serve_tiny.yaml); then it precompiles FLUX on first use and
# starts `serve run` under the launcher, which drains requests in flight on Ctrl-C.
set -euo pipefail
config="${1:-serve_config.yaml}"
# A relative CONFIG is the caller's, so resolve it before moving to the checkout.
case "$config" in /*) ;; *) config="$PWD/$config" ;; esac
cd "$(dirname "$0")/.."
stamp=.venv/.gen3d-setup-done
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ] \
   || [ -n "$(find requirements -newer "$stamp" -print -quit)" ]; then
  bash scripts/setup.sh
  touch "$stamp"
fi
exec .venv/bin/gen3d serve "$config"
