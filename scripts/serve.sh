#!/usr/bin/env bash
# Fresh machine -> running service: set up .venv, then `serve run` a config (default: the
# production one-GPU graph). Without a CUDA GPU it stops at once and names the CPU demo config.
set -euo pipefail
cd "$(dirname "$0")/.."
config="${1:-serve_config.yaml}"
if [ "$config" != "configs/serve_tiny.yaml" ] && ! nvidia-smi >/dev/null 2>&1; then
  echo "No CUDA GPU found: $config needs one (it keeps FLUX and TripoSR resident on a 24 GB card)." >&2
  echo "For a CPU demo with tiny random-weight models (not real assets) run:" >&2
  echo "  bash scripts/serve.sh configs/serve_tiny.yaml" >&2
  exit 2
fi
bash scripts/setup.sh
exec .venv/bin/serve run "$config"
