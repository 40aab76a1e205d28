#!/usr/bin/env bash
# One device call on any card: why TG with a q8_0 cache falls behind f16 in the first 512 positions (H100 sweep of
# 2026-12-06: qwen3-30b-a3b -ub 2048 S_TG at N_KV 0 256.6 t/s over positions 0-31, 228.6 over 0-511; f16 251.8),
# and whether fewer tiles per warp and part (SWEEPBENCH_CUDA_ATT_TPW) win it back:
#   1. gpu_attention_micro.py, one layer's decode attention, q8_0 then f16 caches, warp:4:TPW for TPW 4, 2, 1, at
#      depths from 1 to 14336 (a part of 4 warps x TPW x 16 cells: a block steps through up to TPW tiles);
#   2. the CLI, qwen3-30b-a3b -ub 2048 -n 512 with a q8_0 cache (rows N_KV 0 and 2048), for TPW 4, 1, 2 and
#      again 4, then f16 for TPW 4 and 1. JSONL per run in $OUT/q8ab.tgz, the tables in $OUT/q8ab.txt.
#   OUT=$OUT bash benchmarks/gpu_q8_decode_ab.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
v=warp:4:4,warp:4:2,warp:4:1
for kv in q8_0 f16; do
  timeout 90 python3 benchmarks/gpu_attention_micro.py --kv $kv --depths 1,64,128,256,512,2048,14336 --variants $v \
    2>&1 | grep -v Warn | tee -a "$OUT/micro.txt"
done
AB_DIR=q8ab
synth_preset qwen3-30b-a3b
q8=(-m /tmp/models/qwen3-30b-a3b.gguf -c 4096 -ub 2048 -b 2048 -n 512)
ab_run q8-tpw4 SWEEPBENCH_CUDA_ATT_TPW=4 -- "${q8[@]}" -ctk q8_0 -ctv q8_0
ab_run q8-tpw1 SWEEPBENCH_CUDA_ATT_TPW=1 -- "${q8[@]}" -ctk q8_0 -ctv q8_0
ab_run q8-tpw2 SWEEPBENCH_CUDA_ATT_TPW=2 -- "${q8[@]}" -ctk q8_0 -ctv q8_0
ab_run q8-tpw4-r2 SWEEPBENCH_CUDA_ATT_TPW=4 -- "${q8[@]}" -ctk q8_0 -ctv q8_0
ab_run f16-tpw4 SWEEPBENCH_CUDA_ATT_TPW=4 -- "${q8[@]}"
ab_run f16-tpw1 SWEEPBENCH_CUDA_ATT_TPW=1 -- "${q8[@]}"
