"""One warp-split decode attention (and the KV stores before it) in numba-cuda's simulator, with and without
``tests/sim_speedups.py``: what the CUDA tests in CI pay per kernel call.

    python benchmarks/sim_speed.py [--rounds 2] [--switch-interval S]

Each variant runs in a fresh process (the simulator is chosen at import). ``--switch-interval`` sets
``sys.setswitchinterval`` in the child: shorter intervals interleave the simulated threads more finely, which is
how the shared-array race of the original simulator shows (a checksum that differs from the others).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
sys.path.insert(0, {tests!r})
if {switch!r}:
    sys.setswitchinterval({switch!r})
import numpy as np
import sweepbench  # numpy shim before numba
from numba import cuda
if {fast!r}:
    import sim_speedups
    sim_speedups.apply()
from cuda_kernels.memory import Act
from cuda_kernels.ops_table import CudaOps
from cuda_kernels.weights import DeviceKV

ops = CudaOps(max_tokens=8, n_ctx=96)  # the test's simulator settings (tests/test_cuda_kernels.py)
ops.att_nw, ops.att_combine_nw, ops.gemv_nw = 1, 2, 1
ops.att_split, ops.att_ws_nw, ops.att_tpw, ops.att_fuse_parts = "warp", 2, 1, 2
act = lambda x: Act(ops.pool, cuda.to_device(np.ascontiguousarray(x, np.float32).reshape(-1)), *x.shape)
rng = np.random.default_rng(11)
d, h, hkv = 96, 3, 1
kv = DeviceKV(1, 96, hkv * d, "f16", "q8_0")
k, v = (rng.standard_normal((96, hkv * d)).astype(np.float32) for _ in range(2))
t0 = time.perf_counter()
for p0 in (0, 8):
    ops.begin(np.zeros(8, np.int64), p0)
    ops.kv_store(kv, 0, act(k[p0:p0 + 8]), act(v[p0:p0 + 8]), p0)
t1 = time.perf_counter()
ops.begin(np.zeros(1, np.int64), 9)
out = ops.to_host(ops.attention(act(rng.standard_normal((1, h * d))), kv, 0, 9, h, hkv, d))
t2 = time.perf_counter()
print(json.dumps({{"store_s": t1 - t0, "attention_s": t2 - t1, "checksum": float(np.abs(out).sum())}}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--switch-interval", type=float, default=0.0)
    args = p.parse_args()
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    print("| simulator | round | 2 KV stores of 8 rows, s | attention, s | checksum |\n|---|---:|---:|---:|---:|")
    for r in range(args.rounds):
        for fast in (False, True):
            code = CHILD.format(tests=str(ROOT / "tests"), switch=args.switch_interval, fast=fast)
            proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"sim_speed: the child failed: {proc.stderr.strip().splitlines()[-1]}")
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"| {'sim_speedups' if fast else 'numba-cuda as shipped'} | {r + 1} | {got['store_s']:.2f} | "
                  f"{got['attention_s']:.2f} | {got['checksum']:.6g} |")


if __name__ == "__main__":
    main()
