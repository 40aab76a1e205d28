# Sourced by the device scripts, from the repository root: the wheels the GPU image lacks (.whl/,
# see benchmarks/NOTES.md) on the Python path, the kernel cache, and the card's name and clocks in $OUT/gpu.txt;
# and two helpers of the A/B scripts (below). $OUT defaults to /tmp/sweepbench-gpu.
OUT=${OUT:-/tmp/sweepbench-gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 SWEEPBENCH_CACHE=/tmp/sweepbench-cache
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"

# synth_preset PRESET: /tmp/models/PRESET.gguf (Q4_K experts, Q8_0 dense) unless it is there already.
synth_preset() {
  mkdir -p /tmp/models
  [[ -f /tmp/models/$1.gguf ]] || python3 -m sweepbench.cli synth "$1" --expert-type Q4_K --dense-type Q8_0 \
    -o "/tmp/models/$1.gguf" >/dev/null
}

# ab_run NAME [VAR=VALUE ...] -- ARGS: one `sweepbench sweep-bench --engine numba-cuda -fa on ARGS` with those
# switches in its environment; JSONL and log in /tmp/$AB_DIR, its table appended to $OUT/$AB_DIR.txt, and
# /tmp/$AB_DIR packed into $OUT/$AB_DIR.tgz after every run (a call cut short still returns what ran).
ab_run() {
  local name=$1 envs=()
  shift
  while [[ $# -gt 0 && $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  mkdir -p "/tmp/$AB_DIR"
  env "${envs[@]}" python3 -m sweepbench.cli sweep-bench --engine numba-cuda -fa on -o "/tmp/$AB_DIR/$name.jsonl" \
    "$@" > "/tmp/$AB_DIR/$name.log" 2>&1
  echo "== $name (${envs[*]})" | tee -a "$OUT/$AB_DIR.txt"
  grep "^|" "/tmp/$AB_DIR/$name.log" | tee -a "$OUT/$AB_DIR.txt"
  tar -czf "$OUT/$AB_DIR.tgz" -C /tmp "$AB_DIR"
}
