#!/usr/bin/env bash
# An Nsight Compute profile (full set, clocks left alone) of COUNT prefill GEMM launches (default 5) after the
# first SKIP (default 4) of one `sweep-bench -ub UB` window of PRESET (default qwen3-30b-a3b -c 2048 -ub 2048),
# with the current switches: $OUT/ncu.log (the run), $OUT/ncu-details.txt (every section per launch) and
# $OUT/ncu-raw.txt (the metrics NOTES quotes: time, registers, tensor pipe, shared wavefronts and conflicts,
# stall reasons). The report itself (several MB) stays in /tmp.
#   OUT=$OUT bash benchmarks/gpu_ncu_gemm.sh            (~2 minutes on a warm H100)
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh > /dev/null
preset=${PRESET:-qwen3-30b-a3b}
ub=${UB:-2048}
synth_preset "$preset"
ncu --clock-control none --set full -k regex:gemm -s "${SKIP:-4}" -c "${COUNT:-5}" -f -o /tmp/gemm-prof \
  python3 -m sweepbench.cli sweep-bench --engine numba-cuda -fa on -m "/tmp/models/$preset.gguf" -c 2048 \
  -ub "$ub" -b "$ub" -n 4 > "$OUT/ncu.log" 2>&1
ncu -i /tmp/gemm-prof.ncu-rep --page details > "$OUT/ncu-details.txt" 2>&1
ncu -i /tmp/gemm-prof.ncu-rep --page raw 2>&1 | grep -E "^  [a-z]|gemm" | grep -E "gemm|launch__grid_size |\
launch__registers_per_thread |gpu__time_duration.sum |sm__pipe_tensor_op_hmma_cycles_active.avg.pct|\
l1tex__data_(bank_conflicts|pipe_lsu_wavefronts)_pipe_lsu_mem_shared_op|l1tex__data_pipe_lsu_wavefronts_mem_shared_op|\
dram__throughput.avg.pct_of_peak_sustained_elapsed |smsp__average_warps_issue_stalled_.*_per_issue_active.ratio " \
  > "$OUT/ncu-raw.txt"
grep -cE "gemm" "$OUT/ncu-raw.txt" | sed 's/^/launches profiled: /'
grep -E "gpu__time_duration.sum |launch__registers_per_thread " "$OUT/ncu-raw.txt"
