#!/usr/bin/env bash
# On a GPU machine: serve the full-size random-weight graph (configs/serve_random.yaml), run
# scripts/bench.py against it and record GPU memory per stage process and in total.
# Usage: bash scripts/gpu_graph_bench.sh OUT_DIR [N] [FORMAT] [SERVE_CONFIG]   (ray[serve] importable)
# Env: SWEEP (concurrency levels, default 1,2,4,8,16), READY_TIMEOUT_S (start-up wait, default 480),
#      BENCH_TIMEOUT_S (per variant, default 240), VARIANTS ("label=JSON;label=JSON": request
#      fields per benchmarked variant, each into OUT_DIR/label; default one variant "default={}").
#      The script always stops the Ray cluster it started, so a leftover proxy cannot keep port
#      8093 and answer the next run's requests.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?output folder}"; n="${2:-40}"; fmt="${3:-glb}"; config="${4:-configs/serve_random.yaml}"
mkdir -p "$out"
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

stop_ray() { python3 -m ray.scripts.scripts stop --force > /dev/null 2>&1; }
stop_ray
serve_bin="$(python3 -c 'import shutil,sys; print(shutil.which("serve") or "")')"
if [ -n "$serve_bin" ]; then serve_cmd=("$serve_bin" run); else serve_cmd=(python3 -m ray.serve.scripts run); fi
setsid "${serve_cmd[@]}" "$config" > "$out/serve.log" 2>&1 &
serve_pid=$!
cleanup() {
  kill -INT -- "-$serve_pid" 2>/dev/null; sleep 5; kill -KILL -- "-$serve_pid" 2>/dev/null
  stop_ray
  grep -hE "gen3d|Error|error" "$out/serve.log" | tail -20
}
trap cleanup EXIT

ready=0
deadline=$((SECONDS + ${READY_TIMEOUT_S:-480}))
while [ "$SECONDS" -lt "$deadline" ]; do
  if curl -sf http://127.0.0.1:8093/health > /dev/null; then ready=1; break; fi
  if ! kill -0 "$serve_pid" 2>/dev/null; then echo "serve run exited"; break; fi
  # A replica that fails its constructor is retried by Serve forever: stop waiting at the first failure.
  if grep -qE "OutOfMemoryError|DEPLOY_FAILED|failed with exception|failed to initialize" "$out/serve.log"; then echo "a replica failed to start"; break; fi
  sleep 5
done
echo "start-up: ${SECONDS} s until ready=$ready"
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv > "$out/gpu_apps_idle.csv"
if [ "$ready" = 1 ]; then
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$out/gpu_used_mib.txt" &
  smi_pid=$!
  IFS=';' read -ra variants <<< "${VARIANTS:-default={\}}"
  for variant in "${variants[@]}"; do
    label="${variant%%=*}"; body="${variant#*=}"
    echo "== variant $label: $body"
    timeout "${BENCH_TIMEOUT_S:-240}" python3 scripts/bench.py --url http://127.0.0.1:8093 -n "$n" --format "$fmt" \
      --body "$body" --concurrency 8 --sweep "${SWEEP:-1,2,4,8,16}" --warmup 4 --out "$out/$label" | tail -12
  done
  nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv > "$out/gpu_apps_after.csv"
  kill "$smi_pid"
  echo "peak GPU memory used (MiB, whole card): $(sort -n "$out/gpu_used_mib.txt" | tail -1)"
  cat "$out/gpu_apps_idle.csv" "$out/gpu_apps_after.csv"
else
  tail -50 "$out/serve.log"
fi
