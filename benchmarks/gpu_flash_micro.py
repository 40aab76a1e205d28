"""The prefill (flash) attention alone on the GPU: its tile movers (SWEEPBENCH_CUDA_FLASH) timed on one layer's
ubatch at several cache depths, on a random f16 cache (a q8_0 cache takes the same kernel after its f16 copy),
with the attention FLOPs and the TFLOP/s they imply. Isolates what bounds S_PP at depth.

    python benchmarks/gpu_flash_micro.py [--heads 32 --kv-heads 4 --ub 2048 --depths 0,2048,8192,14336]
        [--variants ex2,ex2-wide-trans] [--layers 4] [--once]
    ncu --clock-control none --set full -k regex:kernel -c 1 python benchmarks/gpu_flash_micro.py --once --depths 14336

FLOPs count the causal work only (row t at position p sees p + 1 cells: 4 D FLOPs per cell and head, S = Q K^T
and O = P V); the kernel also spends mma work on the masked half of each diagonal tile. Each timed graph holds 8
launches that cycle over ``--layers`` layers' caches; the first variant's output is the one the others are
compared with (the movers stage the same bits). The staged and pipelined kernels of the earlier A/Bs in
benchmarks/NOTES.md are retired (``git show 0d6003f:cuda_kernels/flash.py`` has them), and so are ex2-wide,
ex2-wide-ldsm and ex2-wide-ldsm-lean (``git show 9866145:cuda_kernels/flash.py``); their figures stay there.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

import sweepbench  # noqa: F401  (numpy shim before numba)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--ub", type=int, default=2048, help="query rows of the ubatch")
    p.add_argument("--depths", default="0,2048,8192,14336", help="N_KV before the ubatch")
    p.add_argument("--variants", default="ex2,ex2-wide-trans")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--once", action="store_true", help="one eager launch per depth and variant, untimed (for ncu)")
    args = p.parse_args()
    from numba import cuda

    from cuda_kernels import flash
    from cuda_kernels.graph import launches_us

    variants = args.variants.split(",")
    bad = [v for v in variants if v not in flash.VARIANTS]
    if bad:
        p.error(f"--variants: {bad} not among {flash.VARIANTS}")
    h, hkv, d, t, nl = args.heads, args.kv_heads, args.dim, args.ub, args.layers
    depths = [int(x) for x in args.depths.split(",")]
    n_ctx = max(depths) + t
    rng = np.random.default_rng(0)
    caches = []
    for _ in range(nl):
        kv = []
        for _side in range(2):  # f16 pairs of moderate values
            words = rng.integers(0, 1 << 32, n_ctx * hkv * d // 2, dtype=np.uint64).astype(np.uint32)
            kv.append(cuda.to_device(words & np.uint32(0x3BFF3BFF)))  # |x| < 1, no inf / nan
        caches.append(kv)
    none = cuda.device_array(1, np.float32)  # the q8_0 scales the f16 kernel never reads
    q = cuda.to_device(rng.standard_normal(t * h * d).astype(np.float32))
    out = cuda.device_array(t * h * d, np.float32)
    posv = cuda.device_array(1, np.int32)
    stream = cuda.stream()
    scale = np.float32(1 / math.sqrt(d))
    grid = ((t + flash.BQ - 1) // flash.BQ, h)

    def launches(variant: str):
        k = flash.prefill_kernel(d, False, False, variant)
        return [(k, grid, flash.THREADS, (q, caches[i % nl][0], none, caches[i % nl][1], none, posv, out, t, h, hkv,
                                          scale)) for i in range(8)]

    plans = {v: launches(v) for v in variants}
    t_end = time.time() + (0.0 if args.once else 1.0)  # clocks up
    while time.time() < t_end:
        launches_us(stream, plans[variants[0]], reps=1)
    print(f"\n{h}/{hkv} heads of {d}, ubatch {t}, f16 cache, {nl} layers' caches cycled")
    print("| variant | N_KV | us per layer | attention TFLOP/s | vs first |")
    print("|---|---:|---:|---:|---:|")
    for depth in depths:
        posv.copy_to_device(np.array([depth], np.int32))
        flops = 4.0 * d * h * (t * depth + t * (t + 1) / 2)
        outs = {}
        for v in variants:
            k, gr, b, a = plans[v][0]
            k[gr, b, stream](*a)
            stream.synchronize()
            outs[v] = out.copy_to_host()
        first = outs[variants[0]]
        for v in variants if not args.once else ():
            us = launches_us(stream, plans[v], reps=4)
            diff = float(np.max(np.abs(outs[v] - first)) / (np.max(np.abs(first)) + 1e-30))
            same = "same bits" if np.array_equal(outs[v], first) else f"{diff:.1e}"
            print(f"| {v} | {depth} | {us:.0f} | {flops / us / 1e6:.1f} | {same} |", flush=True)


if __name__ == "__main__":
    main()
