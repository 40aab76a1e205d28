#!/usr/bin/env bash
# One device call that is useful on either card (a call for an H200 here often gets an H100): the decode-graph
# tests on the GPU, then
#   on an H200: benchmarks/gpu_sweep.py with ARGS (e.g. --only qwen3-30b-a3b:2048:q8kv ...), JSONL in
#               $OUT/gpu-runs.tgz, stopped DEADLINE_S seconds after the start (default 400);
#   elsewhere:  the q8_0-cache decode A/B: gpu_attention_micro.py (one layer; 4 and 2 tiles per warp, loads
#               inline and hoisted), then qwen3-30b-a3b -ub 2048 -c 16384 with a q8_0 cache through the CLI, side
#               by side: the defaults (loads inline, 2 tiles below 4096 positions), SWEEPBENCH_CUDA_Q8_DECODE=hoist,
#               and hoist with SWEEPBENCH_CUDA_ATT_LOW=off; $OUT/q8ab.tgz, tables in $OUT/q8ab.txt.
#   DEADLINE_S=400 OUT=$OUT bash benchmarks/gpu_h200_or_ab.sh ARGS
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/sweepbench-gpu}
mkdir -p "$OUT"
source benchmarks/device_env.sh
SWEEPBENCH_CUDA_TESTS=gpu timeout 80 python3 -m pytest -q -p no:cacheprovider -o addopts="" -rfE \
  tests/test_cuda_engine.py -k "short_parts or programmatic" > "$OUT/tests-graphs.log" 2>&1
tail -2 "$OUT/tests-graphs.log"
if grep -q H200 "$OUT/gpu.txt"; then
  timeout $((${DEADLINE_S:-400} - SECONDS)) python3 benchmarks/gpu_sweep.py --runs-dir /tmp/gpu-runs "$@" 2>&1 \
    | tee "$OUT/gpu-runs.log" | grep -v "^\[" | tail -40
  tar -czf "$OUT/gpu-runs.tgz" -C /tmp gpu-runs
  exit 0
fi
timeout 90 python3 benchmarks/gpu_attention_micro.py --kv q8_0 --depths 1,256,512,2048,8192,14336 \
  --variants warp:4:4,warp:4:4:hoist,warp:4:2,warp:4:2:hoist 2>&1 | grep -v Warn | tee "$OUT/micro.txt"
m=/tmp/models runs=/tmp/q8ab
mkdir -p $m $runs
[[ -f $m/qwen3-30b-a3b.gguf ]] || python3 -m sweepbench.cli synth qwen3-30b-a3b --expert-type Q4_K --dense-type Q8_0 \
  -o $m/qwen3-30b-a3b.gguf >/dev/null
run() {  # NAME [VAR=VALUE ...]: one sweep-bench run with those switches
  local name=$1; shift
  env "$@" python3 -m sweepbench.cli sweep-bench --engine numba-cuda -fa on -m $m/qwen3-30b-a3b.gguf -c 16384 \
    -ub 2048 -b 2048 -ctk q8_0 -ctv q8_0 -o $runs/$name.jsonl > $runs/$name.log 2>&1
  echo "== $name ($*)" | tee -a "$OUT/q8ab.txt"
  grep "^|" $runs/$name.log | tee -a "$OUT/q8ab.txt"
  tar -czf "$OUT/q8ab.tgz" -C /tmp q8ab  # after each run: a call cut short still returns what ran
}
run defaults SWEEPBENCH_CUDA_Q8_DECODE=inline
run hoist SWEEPBENCH_CUDA_Q8_DECODE=hoist
run hoist-low-off SWEEPBENCH_CUDA_Q8_DECODE=hoist SWEEPBENCH_CUDA_ATT_LOW=off
