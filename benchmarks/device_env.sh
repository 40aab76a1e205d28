# Sourced by the device scripts, from the repository root with $OUT set: the wheels the GPU image lacks (.whl/,
# see benchmarks/NOTES.md) on the Python path, the kernel cache, and the card's name and clocks in $OUT/gpu.txt.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 SWEEPBENCH_CACHE=/tmp/sweepbench-cache
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
