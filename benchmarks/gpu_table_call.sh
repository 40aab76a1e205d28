#!/usr/bin/env bash
# One device call for the issue-6 table (a call for an H200 here often gets an H100): the kernel tests that
# PRE_TESTS selects (a pytest -k expression over tests/test_cuda_kernels.py and tests/test_cuda_gemm.py, at most
# 120 s; none by default), the decode-graph and end-to-end logits tests on the GPU (their summary in the log;
# GRAPH_TESTS=0 skips them), then
# benchmarks/gpu_sweep.py with ARGS (e.g. --only qwen3-30b-a3b:2048:q8kv ...), stopped DEADLINE_S seconds after
# the start (default 400); JSONL straight into $OUT/gpu-runs-h200/, or $OUT/gpu-runs-h100/ on another card (the
# same table against the H200 anchors; ON_H100=stop skips it there). The rows are written as they are measured,
# under $OUT, so a call cut off by its time limit still returns every row it finished. The device returns at most
# 8 files from $OUT: the six groups' JSONL and gpu-sweep-meta.json, plus one log ($OUT/gpu-runs.log: the card,
# the tests' summary, the sweep), so the card's line and the test log stay under /tmp.
#   DEADLINE_S=560 [ON_H100=stop] [GRAPH_TESTS=0] [PRE_TESTS=EXPR] OUT=$OUT bash benchmarks/gpu_table_call.sh ARGS
# The A/Bs this script ran before (the short q8_0 decode parts, the hoisted q8_0 loads, the prefill variants) are
# in benchmarks/NOTES.md with their commands.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh > /dev/null
mv "$OUT/gpu.txt" /tmp/gpu.txt
log=$OUT/gpu-runs.log
tee "$log" < /tmp/gpu.txt
if [[ -n ${PRE_TESTS:-} ]]; then
  SWEEPBENCH_CUDA_TESTS=gpu timeout 120 python3 -m pytest -q -p no:cacheprovider -o addopts="" -rfE \
    tests/test_cuda_kernels.py tests/test_cuda_gemm.py -k "$PRE_TESTS" > /tmp/tests-pre.log 2>&1
  grep -E "^(FAILED|ERROR)|passed|failed" /tmp/tests-pre.log | tail -8 | tee -a "$log"
fi
if [[ ${GRAPH_TESTS:-1} != 0 ]]; then
  SWEEPBENCH_CUDA_TESTS=gpu timeout 240 python3 -m pytest -q -p no:cacheprovider -o addopts="" -rfE \
    tests/test_cuda_engine.py -k "short_parts or programmatic or logits_match" > /tmp/tests-graphs.log 2>&1
  grep -E "^(FAILED|ERROR)|passed|failed" /tmp/tests-graphs.log | tail -8 | tee -a "$log"
fi
card=h100
grep -q H200 /tmp/gpu.txt && card=h200
if [[ $card != h200 && ${ON_H100:-table} == stop ]]; then
  echo "not an H200 and ON_H100=stop: done" | tee -a "$log"
  exit 0
fi
timeout $((${DEADLINE_S:-400} - SECONDS)) python3 benchmarks/gpu_sweep.py --runs-dir "$OUT/gpu-runs-$card" "$@" 2>&1 \
  | tee -a "$log" | grep -v "^\[" | tail -40
