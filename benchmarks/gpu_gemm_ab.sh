#!/usr/bin/env bash
# The prefill GEMMs' variants side by side on one GPU (SWEEPBENCH_CUDA_GEMM): the GEMM tests and the end-to-end
# logits and graph tests on the GPU ($OUT/tests.log), then qwen3-30b-a3b through the CLI with each of VARIANTS in
# ROUNDS rounds, alternating which runs first (-c 4096 -ub 2048 -n 32, then -c 2048 -ub 512 -n 32: the GEMMs
# do not depend on N_KV); tables in $OUT/gemmab.txt, JSONL and logs in $OUT/gemmab.tgz. A variant is
# NAME[+rN][+x16]: SWEEPBENCH_CUDA_GEMM=NAME, +rN caps the GEMMs at N registers (SWEEPBENCH_CUDA_GEMM_REGS),
# +x16 gives them f16 activations (SWEEPBENCH_CUDA_GEMM_X=f16); e.g. late-swz+r128, late+x16.
#   VARIANTS="late late-swz" ROUNDS=2 OUT=$OUT bash benchmarks/gpu_gemm_ab.sh   (~500 s on an H100, tests included)
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
read -r -a variants <<< "${VARIANTS:-late late-swz}"
SWEEPBENCH_CUDA_TESTS=gpu timeout 200 python3 -m pytest -q -p no:cacheprovider -o addopts="" -rfE \
  tests/test_cuda_gemm.py tests/test_cuda_engine.py -k "not flash and (gemm or dequantizers or f16_activations \
or short_parts or programmatic or logits_match)" > "$OUT/tests.log" 2>&1
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests.log" | tail -8
AB_DIR=gemmab
synth_preset qwen3-30b-a3b
m=/tmp/models/qwen3-30b-a3b.gguf
for r in $(seq "${ROUNDS:-2}"); do
  order=("${variants[@]}")
  (( r % 2 == 0 )) && order=($(printf '%s\n' "${variants[@]}" | tac))
  for v in "${order[@]}"; do
    IFS=+ read -r -a parts <<< "$v"
    sw=(SWEEPBENCH_CUDA_GEMM="${parts[0]}" SWEEPBENCH_CUDA_GEMM_REGS=0 SWEEPBENCH_CUDA_GEMM_X=f32)
    for p in "${parts[@]:1}"; do
      case $p in
        r*) sw[1]=SWEEPBENCH_CUDA_GEMM_REGS=${p#r} ;;
        x16) sw[2]=SWEEPBENCH_CUDA_GEMM_X=f16 ;;
        *) echo "unknown variant part: $p" >&2; exit 2 ;;
      esac
    done
    ab_run "$v-2048-r$r" "${sw[@]}" -- -m $m -c 4096 -ub 2048 -b 2048 -n 32
    ab_run "$v-512-r$r" "${sw[@]}" -- -m $m -c 2048 -ub 512 -b 512 -n 32
  done
done
