#!/usr/bin/env bash
# One call on the GPU machine (device tool, kind nvidia-h200): the CUDA kernel tests for real, end-to-end logits
# against the reference engine and against ik_llama.cpp (CPU wheel), then the H200 benchmark. Logs and JSONL go
# to $OUT. Wheels the image lacks (gguf, ik-llama-cpp-python) travel in .whl/ (see benchmarks/NOTES.md).
#
#   benchmarks/gpu_check_and_sweep.sh check          # tests + verify vs ik + gpu_profile.py + gpu_attention_micro.py
#   benchmarks/gpu_check_and_sweep.sh sweep [ARGS]   # benchmarks/gpu_sweep.py ARGS (the full-size presets)
#   benchmarks/gpu_check_and_sweep.sh all            # both
#   benchmarks/gpu_check_and_sweep.sh ab             # the CUDA tests, then a decode-step switch (AB_SWITCH: pdl
#                                                    # or tails) off / on (gpu_profile.py, small presets, N_KV 0)
#   benchmarks/gpu_check_and_sweep.sh quick [ARGS]   # one 600 s call: the graph tests, one A/B round, then
#                                                    # sweep ARGS until the call's end
#   benchmarks/gpu_check_and_sweep.sh pdl            # decode-graph edge settings, GPU time per step, N_KV 0 and 12288
#   SWEEP_DEADLINE_S=S (sweep ends S s after the script starts), SWEEP_H200_ONLY=1 (sweep on an H200 or not at all),
#   SWEEP_RUNS_DIR=NAME (JSONL under /tmp/NAME, returned as $OUT/NAME.tgz; default gpu-runs)
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
shift || true
source benchmarks/device_env.sh
sb() { python3 -m sweepbench.cli "$@"; }
# the table compares with anchors.md (an H200): on another card the quick mode spends its call on the A/B instead
if [[ $mode == quick ]] && ! grep -q H200 "$OUT/gpu.txt"; then
  echo "not an H200: quick runs as ab (no sweep)" | tee "$OUT/mode.txt"; mode=ab
fi
if [[ ($mode == sweep || $mode == pdl) && -n ${SWEEP_H200_ONLY:-} ]] && ! grep -q H200 "$OUT/gpu.txt"; then
  echo "not an H200: no sweep" | tee "$OUT/mode.txt"; exit 0
fi

if [[ $mode == check || $mode == all ]]; then
  SWEEPBENCH_CUDA_TESTS=gpu timeout 420 python3 -m pytest -q -p no:cacheprovider -o addopts="" -rfE \
    tests/test_cuda_kernels.py tests/test_cuda_gemm.py tests/test_cuda_engine.py 2>&1 | tee "$OUT/tests.log" | tail -40
  m=/tmp/m; mkdir -p $m
  for spec in "qwen3moe F16" "bailingmoe2 F16" "qwen3moe Q4_K" "bailingmoe2 Q8_0"; do
    read -r arch qt <<< "$spec"
    sb synth tiny --arch "$arch" --expert-type "$qt" --dense-type "$qt" -o "$m/tiny-$arch-$qt.gguf" >/dev/null
    ger=""; [[ $arch == bailingmoe2 ]] && ger="-ger"
    echo "== verify numba-cuda $arch $qt $ger" | tee -a "$OUT/verify.log"
    timeout 120 python3 -m sweepbench.cli verify -m "$m/tiny-$arch-$qt.gguf" --engine numba-cuda --random 24 $ger \
      --no-noise 2>&1 | tee -a "$OUT/verify.log" | tail -6
  done
  # where a decode step and a prefill ubatch spend their GPU time (small preset: the full models' layer shapes)
  sb synth small --expert-type Q4_K -o $m/small-q4k.gguf >/dev/null
  timeout 200 python3 benchmarks/gpu_profile.py -m $m/small-q4k.gguf --ctx 4096 --ub 2048 --n-kv 2048 2>&1 \
    | tee "$OUT/profile.txt" | grep -v "^$" | head -80
  # the decode step in situ at depth, with each decode-attention split kernel (graph decode time per token)
  for v in warp tile; do
    timeout 200 python3 benchmarks/gpu_profile.py -m $m/small-q4k.gguf --ctx 16384 --ub 2048 --n-kv 14336 \
      --decode-only --att-split $v 2>&1 | tee -a "$OUT/profile-14336.txt" | grep "graph decode"
  done
  # the decode attention of one layer alone, f16 and q8_0 caches (qwen3 and Ling head layouts), split variants A/B
  for a in "--variants warp:4:4,warp:4:2,warp:4:1,warp:8:2,tile:8" "--kv q8_0 --variants warp:4:4,warp:4:2,tile:8" \
           "--heads 16 --variants warp:4:4,warp:4:2,tile:8"; do
    timeout 150 python3 benchmarks/gpu_attention_micro.py $a 2>&1 | grep -v Warn | tee -a "$OUT/attention_micro.txt"
  done
fi

# ab: the CUDA tests, then the switch under test (AB_SWITCH) profiled off ("base") and in each variant, on both small
# presets at N_KV 0 (graph decode ms per token), in rounds of alternating order; the verdict (ab_verdict.py) is
# what a following `sweep` call on the same machine uses.
#   AB_SWITCH=pdl (default)  SWEEPBENCH_CUDA_PDL: programmatic graph edges, variants order and exit
#   AB_SWITCH=tails          SWEEPBENCH_CUDA_TAILS: the decode tails (measured off on 2026-12-05), variant on
# quick: everything in one 600 s call, for a session with device time for one call only: the CUDA tests that touch
# the decode graphs, one round, then `sweep ARGS` (with the verdict) until 585 s
ab_switch=${AB_SWITCH:-pdl}
case $ab_switch in
  pdl) ab_env=SWEEPBENCH_CUDA_PDL; variants="order exit" ;;
  tails) ab_env=SWEEPBENCH_CUDA_TAILS; variants="on" ;;
  *) echo "AB_SWITCH=$ab_switch: choose pdl or tails" >&2; exit 2 ;;
esac
ab_flags() {  # the gpu_profile.py flags of one setting of the switch
  case $ab_switch:$1 in
    pdl:base) echo "--pdl off" ;;
    pdl:*) echo "--pdl $1" ;;
    tails:base) echo "--att-fuse-parts 0 --norm-tails off --route-tails off" ;;
    tails:on) echo "--att-fuse-parts 4 --norm-tails on --route-tails on" ;;
  esac
}
rounds=2; tests_k=(); tests_s=240
[[ $mode == quick ]] && rounds=1 && tests_s=150 \
  && tests_k=(-k "tail or merge or shallow or routes or next_norm or logits_match or moe_pipeline or programmatic")
if [[ $mode == ab || $mode == quick ]]; then
  SWEEPBENCH_CUDA_TESTS=gpu timeout $tests_s python3 -m pytest -q -p no:cacheprovider -o addopts="" -rfE \
    "${tests_k[@]}" tests/test_cuda_kernels.py tests/test_cuda_engine.py tests/test_grid_dep_wait.py \
    > "$OUT/tests.log" 2>&1
  tail -6 "$OUT/tests.log"
  m=/tmp/m; mkdir -p $m /tmp/ab
  sb synth small --expert-type Q4_K -o $m/q.gguf >/dev/null
  sb synth small --arch bailingmoe2 --expert-type Q4_K -o $m/l.gguf >/dev/null
  for round in $(seq $rounds); do
    (( round > 1 && SECONDS > 420 )) && break  # a second round only where it fits one 600 s device call
    for mm in q l; do
      order="base $variants"; (( round % 2 == 0 )) && order="$variants base"  # base neither always first nor last
      for cfg in $order; do
        f=/tmp/ab/prof-$mm-$cfg-$round.txt
        timeout 90 python3 benchmarks/gpu_profile.py -m $m/$mm.gguf --ctx 16384 --ub 512 --n-kv 0 --decode-only \
          --replays 300 $(ab_flags $cfg) > "$f" 2>&1
        echo "$mm $cfg $round: $(grep 'graph decode\|rror' "$f")" | tee -a "$OUT/ab.txt"
      done
    done
  done
  tar -czf "$OUT/ab_profiles.tgz" -C /tmp ab
  python3 benchmarks/ab_verdict.py "$OUT/tests.log" /tmp/ab | tee -a "$OUT/ab.txt" | tail -1 \
    | sed "s/^/$ab_env=/" > /tmp/ab-verdict
fi

# pdl: the decode graph's edge settings in one process (gpu_profile.py --pdl-ab: off, order, exit, order with the
# copies outside the graph, order with the GEMV prefetch; GPU time per step, replays back to back; small qwen3
# preset, 3 rounds) at N_KV 0 and 12288, and the fastest setting that wins every round against off at each depth
# (~2 min). Informative only: the defaults change in the code, by hand.
if [[ $mode == pdl ]]; then
  m=/tmp/m; mkdir -p $m
  sb synth small --expert-type Q4_K -o $m/q.gguf >/dev/null
  for nkv in 0 12288; do
    timeout 200 python3 benchmarks/gpu_profile.py -m $m/q.gguf --ctx 16384 --ub 512 --n-kv $nkv --pdl-ab 3 \
      > "$OUT/pdl_ab-$nkv.txt" 2>&1
    grep "^pdl\|rror" "$OUT/pdl_ab-$nkv.txt"
    python3 benchmarks/ab_verdict.py --pdl-ab "$OUT/pdl_ab-$nkv.txt" | tee -a "$OUT/pdl_ab-$nkv.txt" | tail -1 \
      | sed "s/^/fastest at N_KV $nkv: /"
  done
fi

if [[ $mode == sweep || $mode == all || $mode == quick ]]; then
  # after an `ab` call on this machine, its verdict (NAME=value) unless the caller set that switch
  if [[ -s /tmp/ab-verdict ]]; then
    v=$(cat /tmp/ab-verdict); name=${v%%=*}; [[ -z ${!name:-} ]] && export "$v"
  fi
  echo "SWEEPBENCH_CUDA_PDL=${SWEEPBENCH_CUDA_PDL:-default} SWEEPBENCH_CUDA_TAILS=${SWEEPBENCH_CUDA_TAILS:-default}" \
    | tee "$OUT/switches.txt"
  # JSONL per sweep in one archive ($OUT returns at most 8 files)
  # (rows are written as they are measured: a sweep cut by the quick mode's deadline keeps them)
  limit=$((${SWEEP_DEADLINE_S:-100000} - SECONDS)); [[ $mode == quick ]] && limit=$((585 - SECONDS))
  runs=${SWEEP_RUNS_DIR:-gpu-runs}  # under /tmp; another name keeps a second sweep's JSONL apart (an A/B)
  timeout $limit python3 benchmarks/gpu_sweep.py --runs-dir /tmp/$runs "$@" 2>&1 | tee "$OUT/$runs.log" \
    | grep -v "^\[" | tail -40
  tar -czf "$OUT/$runs.tgz" -C /tmp $runs
fi
