#!/usr/bin/env bash
# One device call that is useful on either card (a call for an H200 here often gets an H100): the decode-graph
# tests on the GPU, then
#   on an H200: benchmarks/gpu_sweep.py with ARGS (e.g. --only qwen3-30b-a3b:2048:q8kv ...), JSONL in
#               $OUT/gpu-runs.tgz, stopped DEADLINE_S seconds after the start (default 400);
#   elsewhere:  the attention and engine tests on the GPU ($OUT/tests.log), then the q8_0-cache decode A/B:
#               gpu_attention_micro.py (one layer, hoisted loads, 4 and 2 tiles per warp from 4096 to 14336
#               cells), then qwen3-30b-a3b -ub 2048 -c 16384 with a q8_0 cache through the CLI, side by side: the
#               defaults (hoisted loads, 2 tiles below 8192 positions), SWEEPBENCH_CUDA_ATT_LOW=2:4096, and the
#               previous defaults (inline loads, 2:4096); $OUT/q8ab.tgz, tables in $OUT/q8ab.txt.
#   DEADLINE_S=400 [H100_AB=0: not the A/B] [GRAPH_TESTS=0: not the tests] OUT=$OUT bash benchmarks/gpu_h200_or_ab.sh ARGS
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/sweepbench-gpu}
mkdir -p "$OUT"
source benchmarks/device_env.sh
if [[ ${GRAPH_TESTS:-1} != 0 ]]; then
  SWEEPBENCH_CUDA_TESTS=gpu timeout 80 python3 -m pytest -q -p no:cacheprovider -o addopts="" -rfE \
    tests/test_cuda_engine.py -k "short_parts or programmatic" > "$OUT/tests-graphs.log" 2>&1
  tail -2 "$OUT/tests-graphs.log"
fi
if grep -q H200 "$OUT/gpu.txt"; then
  timeout $((${DEADLINE_S:-400} - SECONDS)) python3 benchmarks/gpu_sweep.py --runs-dir /tmp/gpu-runs "$@" 2>&1 \
    | tee "$OUT/gpu-runs.log" | grep -v "^\[" | tail -40
  tar -czf "$OUT/gpu-runs.tgz" -C /tmp gpu-runs
  exit 0
fi
[[ ${H100_AB:-1} == 0 ]] && { echo "not an H200 and H100_AB=0: done"; exit 0; }
for t in "tests/test_cuda_kernels.py -k attention" tests/test_cuda_engine.py; do
  # shellcheck disable=SC2086  # $t is a path and its -k filter
  SWEEPBENCH_CUDA_TESTS=gpu timeout 100 python3 -m pytest -q -p no:cacheprovider -o addopts="" -rfE $t \
    >> "$OUT/tests.log" 2>&1
  tail -1 "$OUT/tests.log"
done
timeout 90 python3 benchmarks/gpu_attention_micro.py --kv q8_0 --depths 4096,6144,8192,10240,12288,14336 \
  --variants warp:4:4:hoist,warp:4:2:hoist 2>&1 | grep -v Warn | tee "$OUT/micro.txt"
AB_DIR=q8ab
synth_preset qwen3-30b-a3b
q8=(-m /tmp/models/qwen3-30b-a3b.gguf -c 16384 -ub 2048 -b 2048 -ctk q8_0 -ctv q8_0)
ab_run defaults -- "${q8[@]}"
ab_run low-4096 SWEEPBENCH_CUDA_ATT_LOW=2:4096 -- "${q8[@]}"
ab_run previous SWEEPBENCH_CUDA_Q8_DECODE=inline SWEEPBENCH_CUDA_ATT_LOW=2:4096 -- "${q8[@]}"
