#!/usr/bin/env bash
# Fresh machine -> running service: set up .venv (again only when pyproject.toml or setup.sh
# changed), then `gen3d serve CONFIG` (default: the production one-GPU graph). Its pre-flight reads
# the devices and weights CONFIG needs and stops at once, with one message, on a machine that
# cannot run it (no CUDA GPU: it names configs/serve_tiny.yaml); otherwise it starts `serve run`.
set -euo pipefail
config="${1:-serve_config.yaml}"
# A relative CONFIG is the caller's, so resolve it before moving to the checkout.
case "$config" in /*) ;; *) config="$PWD/$config" ;; esac
cd "$(dirname "$0")/.."
stamp=.venv/.gen3d-setup-done
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  bash scripts/setup.sh
  touch "$stamp"
fi
exec .venv/bin/gen3d serve "$config"
