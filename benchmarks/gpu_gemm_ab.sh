#!/usr/bin/env bash
# The prefill kernels' variants side by side on one GPU: the GEMM and flash tests and the end-to-end logits and
# graph tests on the GPU ($OUT/tests.log), then `sweep-bench -n 32` through the CLI for each of SHAPES (default
# qwen3-30b-a3b -c 4096 -ub 2048 and -c 2048 -ub 512: the GEMMs do not depend on N_KV) with each of VARIANTS, in
# ROUNDS rounds, alternating which runs first; tables in $OUT/gemmab.txt, JSONL and logs in $OUT/gemmab.tgz.
# A shape is PRESET:CTX:UB. A variant is NAME[+rN][+x16][+fsS]: SWEEPBENCH_CUDA_GEMM=NAME, +rN caps the GEMMs at
# N registers (SWEEPBENCH_CUDA_GEMM_REGS), +x16 gives them f16 activations (SWEEPBENCH_CUDA_GEMM_X=f16), +fsS
# splits the prefill attention's KV range (SWEEPBENCH_CUDA_FLASH_SPLIT=S: auto, 2, 3 or 4); e.g. late-swz+r128,
# late+x16, late+fsauto.
#   VARIANTS="late late-swz" ROUNDS=2 OUT=$OUT bash benchmarks/gpu_gemm_ab.sh   (~500 s on an H100, tests included)
#   SHAPES=ling-mini-2.0:8192:512 VARIANTS="late late+fsauto" ROUNDS=2 OUT=$OUT bash benchmarks/gpu_gemm_ab.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
read -r -a variants <<< "${VARIANTS:-late late-swz}"
SWEEPBENCH_CUDA_TESTS=gpu timeout 330 python3 -m pytest -q -p no:cacheprovider -o addopts="" -rfE \
  tests/test_cuda_gemm.py tests/test_cuda_engine.py -k "gemm or dequantizers or f16_activations or split \
or short_parts or programmatic or logits_match" > "$OUT/tests.log" 2>&1
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests.log" | tail -8
AB_DIR=gemmab
read -r -a shapes <<< "${SHAPES:-qwen3-30b-a3b:4096:2048 qwen3-30b-a3b:2048:512}"
for r in $(seq "${ROUNDS:-2}"); do
  order=("${variants[@]}")
  (( r % 2 == 0 )) && order=($(printf '%s\n' "${variants[@]}" | tac))
  for v in "${order[@]}"; do
    IFS=+ read -r -a parts <<< "$v"
    sw=(SWEEPBENCH_CUDA_GEMM="${parts[0]}" SWEEPBENCH_CUDA_GEMM_REGS=0 SWEEPBENCH_CUDA_GEMM_X=f32
        SWEEPBENCH_CUDA_FLASH_SPLIT=off)
    for p in "${parts[@]:1}"; do
      case $p in
        r*) sw[1]=SWEEPBENCH_CUDA_GEMM_REGS=${p#r} ;;
        x16) sw[2]=SWEEPBENCH_CUDA_GEMM_X=f16 ;;
        fs*) sw[3]=SWEEPBENCH_CUDA_FLASH_SPLIT=${p#fs} ;;
        *) echo "unknown variant part: $p" >&2; exit 2 ;;
      esac
    done
    for shape in "${shapes[@]}"; do
      IFS=: read -r preset ctx ub <<< "$shape"
      synth_preset "$preset"
      ab_run "$v-$preset-$ub-r$r" "${sw[@]}" -- -m "/tmp/models/$preset.gguf" -c "$ctx" -ub "$ub" -b "$ub" -n 32
    done
  done
done
