#!/usr/bin/env bash
# Issue 21's GPU protocol, one part per call (each within 9 minutes): bash scripts/gpu_card_limit.sh OUT [PART]
#   PART 1: precompile FLUX at every batch size, the graph with MPS off (sweep 1/8/16 x 32, timeline),
#           the full-size FLUX batch check if time is left.
#   PART 2: MPS on + batching (sweep, timeline, a fatal fault under load), then leftovers as time allows.
#   PART 3 (optional): MPS alone, FLUX check, attention backends, the 1/3-SM proxy, client priorities.
#   PART 4: MPS off then MPS on, both unbatched, back to back (the ratio); the proxy, priorities.
# Runs from the repository root with python3 = the CUDA torch interpreter (ray, diffusers, torchao
# importable). Results: OUT/results.json and OUT/summary.md (all parts so far). Whatever happens,
# it stops the Ray cluster and every gen3d MPS daemon on the way out.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?output folder}"; part="${2:-1}"
mkdir -p "$out"
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
cleanup() {
  python3 -m ray.scripts.scripts stop --force > /dev/null 2>&1
  for pipe in /tmp/gen3d-mps-*/pipe; do
    [ -d "$pipe" ] && echo quit | CUDA_MPS_PIPE_DIRECTORY="$pipe" timeout 30 nvidia-cuda-mps-control > /dev/null 2>&1
  done
  echo "[$(date +%T)] cleanup done (Ray stopped, MPS daemons quit)"
}
trap cleanup EXIT
cleanup
echo "[$(date +%T)] part $part -> $out"
timeout -s INT "${PART_TIMEOUT_S:-515}" python3 -m scripts.card_limit "$out" --part "$part" --budget-s "${BUDGET_S:-490}"
echo "[$(date +%T)] exit $?"
tail -n +1 "$out/summary.md" | head -120
