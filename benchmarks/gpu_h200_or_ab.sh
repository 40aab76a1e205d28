#!/usr/bin/env bash
# One device call that is useful on either card (a call for an H200 here often gets an H100): the decode-graph
# tests on the GPU, then
#   on an H200: benchmarks/gpu_sweep.py with ARGS (e.g. --only qwen3-30b-a3b:2048:q8kv ...), JSONL in
#               $OUT/gpu-runs.tgz, stopped DEADLINE_S seconds after the start (default 400);
#   elsewhere:  the prefill attention's variants (SWEEPBENCH_CUDA_FLASH): their GPU tests ($OUT/tests.log),
#               gpu_flash_micro.py (one layer; -ub 2048 at N_KV 0-14336, -ub 512 at 0 and 14336), then
#               qwen3-30b-a3b -ub 2048 -c 16384 -n 64 through the CLI with each variant, side by side;
#               $OUT/flashab.tgz, tables in $OUT/flashab.txt. H100_AB=0: none of it.
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
SWEEPBENCH_CUDA_TESTS=gpu timeout 100 python3 -m pytest -q -p no:cacheprovider -o addopts="" -rfE \
  tests/test_cuda_gemm.py -k flash > "$OUT/tests.log" 2>&1
tail -1 "$OUT/tests.log"
timeout 100 python3 benchmarks/gpu_flash_micro.py --depths 0,2048,8192,14336 2>&1 | grep -v Warn | tee "$OUT/micro.txt"
timeout 60 python3 benchmarks/gpu_flash_micro.py --ub 512 --depths 0,14336 2>&1 | grep -v Warn | tee -a "$OUT/micro.txt"
AB_DIR=flashab
synth_preset qwen3-30b-a3b
pp=(-m /tmp/models/qwen3-30b-a3b.gguf -c 16384 -ub 2048 -b 2048 -n 64)
for v in staged pipelined ex2; do ab_run "$v" SWEEPBENCH_CUDA_FLASH=$v -- "${pp[@]}"; done
