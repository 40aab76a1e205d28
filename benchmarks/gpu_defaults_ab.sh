#!/usr/bin/env bash
# One device call on any card: side-by-side A/Bs of two numba-cuda defaults through
# the CLI (full-size presets, Q4_K experts, Q8_0 dense), JSONL per run in $OUT/ab.tgz, a summary in $OUT/ab.txt:
#   1. ling-mini-2.0 -ub 2048 -c 4096: SWEEPBENCH_CUDA_PDL_DEEP=128 against 512 (S_TG at N_KV 0 covers positions
#      0-511), two rounds (the second after 2.), the order alternating;
#   2. qwen3-30b-a3b -ub 2048 -ctk/-ctv q8_0 -c 16384 -n 32: SWEEPBENCH_CUDA_Q8_PREFILL=f16 against stage (S_PP
#      at every depth);
#   then the decode-graph tests, and the second Ling round.
#   OUT=$OUT bash benchmarks/gpu_defaults_ab.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
m=/tmp/models AB_DIR=ab
synth_preset ling-mini-2.0
synth_preset qwen3-30b-a3b
ling=(-m $m/ling-mini-2.0.gguf -c 4096 -ub 2048 -b 2048)
ab_run ling-deep128-r1 SWEEPBENCH_CUDA_PDL_DEEP=128 -- "${ling[@]}"
ab_run ling-deep512-r1 SWEEPBENCH_CUDA_PDL_DEEP=512 -- "${ling[@]}"
q8=(-m $m/qwen3-30b-a3b.gguf -c 16384 -ub 2048 -b 2048 -n 32 -ctk q8_0 -ctv q8_0)
ab_run q8-f16 SWEEPBENCH_CUDA_Q8_PREFILL=f16 -- "${q8[@]}"
ab_run q8-stage SWEEPBENCH_CUDA_Q8_PREFILL=stage -- "${q8[@]}"
SWEEPBENCH_CUDA_TESTS=gpu timeout 70 python3 -m pytest -q -p no:cacheprovider -o addopts="" -rfE \
  tests/test_cuda_engine.py -k "shallow or programmatic or logits_match" > "$OUT/tests-graphs.log" 2>&1
tail -2 "$OUT/tests-graphs.log"
ab_run ling-deep512-r2 SWEEPBENCH_CUDA_PDL_DEEP=512 -- "${ling[@]}"
ab_run ling-deep128-r2 SWEEPBENCH_CUDA_PDL_DEEP=128 -- "${ling[@]}"
