#!/usr/bin/env bash
# The working tree against an older commit on one GPU, side by side: `sweep-bench -n 32 --engine numba-cuda` for
# each of SHAPES (PRESET:CTX:UB; default qwen3-30b-a3b -ub 512 and 2048, ling-mini-2.0 -ub 512, all -c 2048)
# through both trees, ROUNDS rounds (default 1), which tree runs first alternating by shape and round; tables
# in $OUT/baseab.txt, JSONL and logs in $OUT/baseab.tgz. The base tree travels as .whl/base.tgz (an ignored path
# the device call carries with the wheels), made here with
#   git archive --format=tar.gz -o .whl/base.tgz COMMIT sweepbench cuda_kernels plots
# and runs from its own folder, so Python imports its packages, not the working tree's. TESTS (a pytest -k
# expression) runs those GPU tests first (tests/test_cuda_gemm.py and tests/test_cuda_engine.py) into
# $OUT/tests.log, with a limit of TESTS_S seconds (default 240).
#   TESTS="float32" OUT=$OUT bash benchmarks/gpu_base_ab.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
rm -rf /tmp/base && mkdir -p /tmp/base && tar -xzf .whl/base.tgz -C /tmp/base || exit 1
if [[ -n ${TESTS:-} ]]; then
  SWEEPBENCH_CUDA_TESTS=gpu timeout "${TESTS_S:-240}" python3 -m pytest -q -p no:cacheprovider -o addopts="" -rfE \
    tests/test_cuda_gemm.py tests/test_cuda_engine.py -k "$TESTS" > "$OUT/tests.log" 2>&1
  grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests.log" | tail -8
fi
AB_DIR=baseab
root=$PWD
read -r -a shapes <<< "${SHAPES:-qwen3-30b-a3b:2048:512 qwen3-30b-a3b:2048:2048 ling-mini-2.0:2048:512}"
i=0
for r in $(seq "${ROUNDS:-1}"); do
  for shape in "${shapes[@]}"; do
    IFS=: read -r preset ctx ub <<< "$shape"
    synth_preset "$preset"
    sync  # a model just written is flushed before anything is timed
    order=(head base)
    (( i++ % 2 == 1 )) && order=(base head)
    for v in "${order[@]}"; do
      dir=$root pp=$PYTHONPATH
      [[ $v == base ]] && dir=/tmp/base pp=${PYTHONPATH/$root//tmp/base}
      (cd "$dir" && ab_run "$v-$preset-$ub-r$r" PYTHONPATH="$pp" -- -m "/tmp/models/$preset.gguf" -c "$ctx" \
        -ub "$ub" -b "$ub" -n 32)
    done
  done
done
