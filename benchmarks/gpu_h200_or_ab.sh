#!/usr/bin/env bash
# One device call that is useful on either card (a call for an H200 here often gets an H100): the decode-graph
# tests on the GPU, then
#   on an H200: benchmarks/gpu_sweep.py with ARGS (e.g. --only qwen3-30b-a3b:2048:q8kv ...), JSONL in
#               $OUT/gpu-runs.tgz, stopped DEADLINE_S seconds after the start (default 400);
#   elsewhere:  qwen3-30b-a3b -ub 2048 -c 16384 with a q8_0 cache, side by side: the default (short decode
#               parts below 4096 positions, ops.low_cells) against SWEEPBENCH_CUDA_ATT_LOW=off; $OUT/q8low.tgz.
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
m=/tmp/models runs=/tmp/q8low
mkdir -p $m $runs
[[ -f $m/qwen3-30b-a3b.gguf ]] || python3 -m sweepbench.cli synth qwen3-30b-a3b --expert-type Q4_K --dense-type Q8_0 \
  -o $m/qwen3-30b-a3b.gguf >/dev/null
for low in default off; do
  [[ $low == off ]] && export SWEEPBENCH_CUDA_ATT_LOW=off
  python3 -m sweepbench.cli sweep-bench \
    --engine numba-cuda -fa on -m $m/qwen3-30b-a3b.gguf -c 16384 -ub 2048 -b 2048 -ctk q8_0 -ctv q8_0 \
    -o $runs/q8-low-$low.jsonl > $runs/q8-low-$low.log 2>&1
  echo "== ATT_LOW $low" | tee -a "$OUT/q8low.txt"
  grep "^|" $runs/q8-low-$low.log | tee -a "$OUT/q8low.txt"
  tar -czf "$OUT/q8low.tgz" -C /tmp q8low
done
