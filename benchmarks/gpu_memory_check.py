"""The numba-cuda engine's activation pool, measured on a dry run (no GPU), against the fit check's estimate.

The engine runs as in ``gpu_compile_check.py`` (device arrays are NumPy arrays, launches are recorded, not run):
load, warm-up (every expert, one full ubatch, the decode steps), another ubatch and a decode step deeper in the
cache. Its pool plus the q8_0 cache's f16 copy is compared with ``footprint.scratch_bytes`` less the CUDA
context. Exit 1 if an estimate is below what the pool took (the fit check would pass a sweep that then runs out)
or more than 1.5x above it plus half a MiB (it would refuse sweeps that fit).

    python benchmarks/gpu_memory_check.py [--model PATH ...] [--ub N ...]
"""
from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import weakref
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_compile_check as dry  # noqa: E402  (its import drops the simulator and sets the sm_90 kernel variants)

HIGH, SLACK = 1.5, 2**19  # above: at most 1.5x the pool plus half a MiB (a one-token step's pool is ~0.5 MiB)


LIVE = [0]  # bytes of the dry run's device arrays still referenced


def _count_live() -> None:
    """Every device array the dry run makes adds its bytes to LIVE until it is dropped."""
    from numba import cuda

    def track(make):
        def wrapper(*args, **kwargs):
            a = make(*args, **kwargs)
            n = a.nbytes
            LIVE[0] += n
            weakref.finalize(a, _drop, n)
            return a
        return wrapper

    cuda.device_array, cuda.to_device = track(cuda.device_array), track(cuda.to_device)


def _drop(n: int) -> None:
    LIVE[0] -= n


def measure(path: Path, ub: int, kv: str, grouped: bool) -> tuple[int, int, int, int]:
    """(bytes the pool and the f16 copy took, their estimate, all device bytes live at the end, the estimate of
    those less the CUDA context)."""
    from cuda_kernels.footprint import CONTEXT_BYTES, FIXED_BYTES, scratch_bytes
    from sweepbench.engines import numba_cuda
    from sweepbench.engines.base import EngineOptions

    numba_cuda.gpu_present = lambda: True
    gc.collect()
    live0 = LIVE[0]
    eng = numba_cuda.NumbaCudaEngine()
    eng.use_graphs = False
    n_ctx = 2 * ub + 8
    opts = EngineOptions(n_ctx=n_ctx, n_ubatch=ub, type_k=kv, type_v=kv, grouped_routing=grouped)
    total_est = eng.estimate_memory(str(path), opts).vram_used_bytes - CONTEXT_BYTES
    eng.load(str(path), opts)
    eng.warmup()
    eng.prefill(np.arange(ub) % 200, 0)
    eng.prefill(np.arange(ub) % 200, ub)
    eng.decode(5, 2 * ub)
    gc.collect()
    used = eng.ops.pool.n_bytes + sum(b.nbytes for b in eng.ops._f16_kv.values())
    pool_est = scratch_bytes(eng.config, ub, n_ctx, kv, kv) - CONTEXT_BYTES - FIXED_BYTES
    result = used, pool_est, LIVE[0] - live0, total_est
    eng.close()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[], help="a GGUF to measure (default: two tiny synthetic "
                                                                  "models, one per architecture)")
    ap.add_argument("--ub", action="append", type=int, default=[], help="ubatch sizes (default 1, 7, 64, 256)")
    args = ap.parse_args()
    dry._dry_patches()
    dry._patch_arrays()
    _count_live()
    cases = [(Path(m), "f16", False) for m in args.model]
    if not cases:
        from sweepbench.synth import write_synthetic_model

        tmp = Path(tempfile.mkdtemp())
        for arch, qt, kv, grouped in (("qwen3moe", "Q8_0", "f16", False), ("bailingmoe2", "Q4_K", "q8_0", True)):
            path = tmp / f"{arch}.gguf"
            write_synthetic_model(path, "tiny", arch, qt, qt, seed=0, threads=2)
            cases.append((path, kv, grouped))
    bad = 0
    for path, kv, grouped in cases:
        for ub in args.ub or [1, 7, 64, 256]:
            used, est, live, live_est = measure(path, ub, kv, grouped)
            for what, have, guess in (("pool", used, est), ("device", live, live_est)):
                ok = have <= guess <= HIGH * have + SLACK
                bad += not ok
                print(f"{'ok  ' if ok else 'FAIL'} {path.name} ub {ub} kv {kv}: {what} {have / 2**20:.2f} MiB, "
                      f"estimate {guess / 2**20:.2f} MiB ({guess / have:.2f}x, {guess - have:+d} bytes)")
    print(f"{bad} estimates outside 1.00-{HIGH:.2f}x of the pool (+{SLACK / 2**20:g} MiB)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
