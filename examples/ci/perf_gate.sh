#!/usr/bin/env bash
# CI performance gate: a short sweep on the built-in synthetic model, compared with the committed baseline.
#
#   examples/ci/perf_gate.sh [OUT_DIR]             sweep, compare, plot; exits with `sweepbench compare`'s code
#   examples/ci/perf_gate.sh --refresh [OUT_DIR]   sweep and write a new baseline (commit it afterwards)
#
# Exit codes (from `sweepbench compare`): 0 no regression, 1 regression, 2 usage error / no baseline,
# 3 not comparable (other model, engine, CPU/GPU or PP/TG than the baseline; PERF_FORCE=1 compares anyway).
# Environment: PERF_BASELINE (default examples/ci/baseline.jsonl), PERF_FORCE=1, GITHUB_STEP_SUMMARY (set by Actions).
set -euo pipefail

# The sweep and the gate, in one place. A baseline is only comparable with a sweep made with the same SWEEP_ARGS:
# change them and refresh the baseline in the same commit. -r 6: six repetitions per row, the fewest with which
# the Mann-Whitney test can call a difference significant (see sweepbench/compare.py).
SWEEP_ARGS=(-c 256 -ub 64 -r 6)
GATE_ARGS=(--tol-pp 5% --tol-tg 3% --fail-on curve)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
baseline="${PERF_BASELINE:-$here/baseline.jsonl}"
refresh=0
if [[ "${1:-}" == "--refresh" ]]; then
  refresh=1
  shift
fi
out="${1:-perf-out}"
mkdir -p "$out"
candidate="$out/candidate.jsonl"

sweepbench sweep-bench "${SWEEP_ARGS[@]}" -o "$candidate"

if (( refresh )); then
  cp "$candidate" "$baseline"
  echo "perf_gate: wrote the new baseline $baseline; commit it" >&2
  exit 0
fi
if [[ ! -f "$baseline" ]]; then
  echo "perf_gate: no baseline at $baseline; record one with '$0 --refresh' (see examples/ci/README.md)" >&2
  exit 2
fi

if [[ "${PERF_FORCE:-0}" == 1 ]]; then
  GATE_ARGS+=(--force)
fi
summary="${GITHUB_STEP_SUMMARY:-$out/summary.md}"
status=0
sweepbench compare "$baseline" "$candidate" "${GATE_ARGS[@]}" --summary "$summary" || status=$?
# The plots are for the humans reading the artifact; they never decide the job.
sweepbench plot "$baseline" "$candidate" --label baseline --label candidate --baseline baseline -o "$out" \
  --table >> "$summary" || echo "perf_gate: plotting failed (the verdict above stands)" >&2
exit "$status"
