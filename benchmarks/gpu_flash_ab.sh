#!/usr/bin/env bash
# The prefill attention's variants side by side on one GPU (SWEEPBENCH_CUDA_FLASH): their GPU tests
# ($OUT/tests.log), gpu_flash_micro.py (one layer; -ub 2048 at N_KV 0-14336, -ub 512 at 0 and 14336), then
# qwen3-30b-a3b -ub 2048 -c 16384 -n 64 through the CLI with each of VARIANTS; $OUT/flashab.tgz, tables in
# $OUT/flashab.txt.
#   VARIANTS="ex2 ex2-wide-trans" OUT=$OUT bash benchmarks/gpu_flash_ab.sh   (~250 s on an H100)
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
read -r -a variants <<< "${VARIANTS:-ex2 ex2-wide-trans}"
list=$(IFS=,; echo "${variants[*]}")
SWEEPBENCH_CUDA_TESTS=gpu timeout 120 python3 -m pytest -q -p no:cacheprovider -o addopts="" -rfE \
  tests/test_cuda_gemm.py -k flash > "$OUT/tests.log" 2>&1
tail -1 "$OUT/tests.log"
timeout 100 python3 benchmarks/gpu_flash_micro.py --variants "$list" 2>&1 | grep -v Warn | tee "$OUT/micro.txt"
timeout 60 python3 benchmarks/gpu_flash_micro.py --variants "$list" --ub 512 --depths 0,14336 2>&1 | grep -v Warn \
  | tee -a "$OUT/micro.txt"
AB_DIR=flashab
synth_preset qwen3-30b-a3b
pp=(-m /tmp/models/qwen3-30b-a3b.gguf -c 16384 -ub 2048 -b 2048 -n 64)
for v in "${variants[@]}"; do ab_run "$v" SWEEPBENCH_CUDA_FLASH="$v" -- "${pp[@]}"; done
