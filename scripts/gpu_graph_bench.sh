#!/usr/bin/env bash
# On a GPU machine: serve the full-size random-weight graph (configs/serve_random.yaml), run
# scripts/bench.py against it and record GPU memory per stage process and in total.
# Usage: bash scripts/gpu_graph_bench.sh OUT_DIR [N] [FORMAT] [SERVE_CONFIG]   (ray[serve] importable)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?output folder}"; n="${2:-40}"; fmt="${3:-glb}"; config="${4:-configs/serve_random.yaml}"
mkdir -p "$out"
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
serve_bin="$(python3 -c 'import shutil,sys; print(shutil.which("serve") or "")')"
if [ -n "$serve_bin" ]; then serve_cmd=("$serve_bin" run); else serve_cmd=(python3 -m ray.serve.scripts run); fi
setsid "${serve_cmd[@]}" "$config" > "$out/serve.log" 2>&1 &
serve_pid=$!
ready=0
for _ in $(seq 1 120); do
  if curl -sf http://127.0.0.1:8093/health > /dev/null; then ready=1; break; fi
  sleep 5
done
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv > "$out/gpu_apps_idle.csv"
if [ "$ready" = 1 ]; then
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$out/gpu_used_mib.txt" &
  smi_pid=$!
  python3 scripts/bench.py --url http://127.0.0.1:8093 -n "$n" --format "$fmt" --concurrency 8 \
    --sweep "${SWEEP:-1,2,4,8,16}" --warmup 4 --out "$out"
  nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv > "$out/gpu_apps_after.csv"
  kill "$smi_pid"
  ps -eo pid,args | grep -E "ServeReplica" | grep -v grep > "$out/replicas.txt"
  echo "peak GPU memory used (MiB, whole card): $(sort -n "$out/gpu_used_mib.txt" | tail -1)"
else
  echo "service did not become ready"; tail -50 "$out/serve.log"
fi
kill -INT -- "-$serve_pid" 2>/dev/null; sleep 10; kill -KILL -- "-$serve_pid" 2>/dev/null
grep -hE "gen3d|Error|error" "$out/serve.log" | tail -20
