#!/usr/bin/env bash
# CI performance gate: a short sweep on the built-in synthetic model, compared with the committed baseline.
#
#   examples/ci/perf_gate.sh [OUT_DIR]             sweep, compare, plot; exits with `sweepbench compare`'s code
#   examples/ci/perf_gate.sh --refresh [OUT_DIR]   sweep and write a new baseline (commit it afterwards)
#
# Exit codes: those of `sweepbench compare` (0 no regression, 1 regression, 2 usage error / no baseline yet,
# 3 not comparable: other model, engine, CPU/GPU or PP/TG than the baseline; PERF_FORCE=1 compares anyway),
# and 4 when the sweep itself failed (so that a crash never reads as a regression).
# Environment: PERF_BASELINE (default examples/ci/baseline.jsonl), PERF_FORCE=1, PERF_MODEL (a GGUF file instead of
# the built-in model, for trying the script quickly; its runs are not comparable with the committed baseline),
# GITHUB_STEP_SUMMARY (set by Actions).
set -euo pipefail

# The sweep and the gate, in one place; the flags are sweep-bench's (issue 3). A baseline is only comparable with a
# sweep made with the same SWEEP_ARGS: change them and refresh the baseline in the same commit.
# --engine is pinned so that a new default engine never changes what the gate measures: when numba-cpu lands,
# switch to it here and refresh the baseline. -r 6: six repetitions at every row, the fewest with which the
# Mann-Whitney test can call a row significantly different (see sweepbench/compare.py).
SWEEP_ARGS=(--engine reference -c 256 -ub 64 -n 16 -r 6)
GATE_ARGS=(--tol-pp 5% --tol-tg 3% --fail-on curve)
EXIT_SWEEP_FAILED=4

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
model_args=()
if [[ -n "${PERF_MODEL:-}" ]]; then
  model_args=(-m "$PERF_MODEL")
fi

# stdout: the markdown table (kept in the artifact); -o: the JSONL that compare reads.
if ! sweepbench sweep-bench ${model_args[@]+"${model_args[@]}"} "${SWEEP_ARGS[@]}" --output-format md -o "$candidate" \
    > "$out/candidate.md"; then
  cat "$out/candidate.md"
  echo "perf_gate: the sweep failed; nothing compared" >&2
  exit "$EXIT_SWEEP_FAILED"
fi
cat "$out/candidate.md"

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
summary="$out/summary.md"  # kept in the artifact; appended to the job summary on GitHub
: > "$summary"
status=0
sweepbench compare "$baseline" "$candidate" "${GATE_ARGS[@]}" --summary "$summary" || status=$?
# The plots are for the humans reading the artifact; they never decide the job.
printf '\n#### S_PP and S_TG at the first, middle and last N_KV\n\n' >> "$summary"
sweepbench plot "$baseline" "$candidate" --label baseline --label candidate --baseline baseline -o "$out" \
  --table >> "$summary" || echo "perf_gate: plotting failed (the verdict above stands)" >&2
if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then
  cat "$summary" >> "$GITHUB_STEP_SUMMARY"
fi
exit "$status"
