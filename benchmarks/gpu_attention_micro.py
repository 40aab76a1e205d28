"""Flash-decoding attention alone on the GPU: the split and combine kernels of one layer timed as CUDA-graph nodes
at several cache depths, on a random f16 (or q8_0) cache, with the bytes they must read and the bandwidth that
implies. Isolates the attention of a decode step from the rest of the model (and is small enough for ncu).

    python benchmarks/gpu_attention_micro.py [--heads 32 --kv-heads 4 --ctx 16384 --kv f16]
"""
from __future__ import annotations

import argparse
import math

import numpy as np

import sweepbench  # noqa: F401  (numpy shim before numba)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--ctx", type=int, default=16384)
    p.add_argument("--kv", default="f16", choices=["f16", "q8_0"])
    p.add_argument("--depths", default="1,2048,8192,14336")
    p.add_argument("--nwd", type=int, default=0, help="warps per split block (default: the engine's)")
    p.add_argument("--once", action="store_true", help="one eager launch per depth (for ncu), no timing")
    args = p.parse_args()
    from numba import cuda

    from gpu_profile import in_graph_us  # this directory is on sys.path when run as a script
    from cuda_kernels import attention as att
    from cuda_kernels.flash import BKV
    from cuda_kernels.ops_table import CudaOps
    from cuda_kernels.weights import DeviceKV

    h, hkv, d, n_ctx = args.heads, args.kv_heads, args.dim, args.ctx
    rng = np.random.default_rng(0)
    ops = CudaOps(max_tokens=1, n_ctx=n_ctx)
    ops.att_nw = args.nwd or min(ops.att_nw, args.dim // 16)
    kv = DeviceKV(1, n_ctx, hkv * d, args.kv, args.kv)
    for a in (kv.kq[0], kv.vq[0]):  # f16 pairs / int8 quads of moderate values
        words = rng.integers(0, 1 << 32, a.size, dtype=np.uint64).astype(np.uint32)
        if args.kv == "f16":
            words &= np.uint32(0x3BFF3BFF)  # |x| < 1, no inf / nan
        a.copy_to_device(words)
    for a in (kv.kd[0], kv.vd[0]):
        if a.size > 1:
            a.copy_to_device(np.full(a.size, 0.01, np.float32))
    q = cuda.to_device(rng.standard_normal(h * d).astype(np.float32))
    n_parts = (n_ctx + BKV - 1) // BKV
    split = att.split_kernel(d, args.kv == "q8_0", args.kv == "q8_0", ops.att_nw)
    combine = att.combine_kernel(d, BKV, ops.att_combine_nw)
    part_o = cuda.device_array(h * n_parts * d, np.float32)
    part_ml = cuda.device_array(h * n_parts * 2, np.float32)
    out = cuda.device_array(h * d, np.float32)
    xq, xa = cuda.device_array(h * d // 4, np.uint32), cuda.device_array(h * d // 16, np.float32)
    scale = np.float32(1 / math.sqrt(d))
    cell_bytes = hkv * d * (2 if args.kv == "f16" else 1.0625) * 2
    print(f"\n{h}/{hkv} heads of {d}, {args.kv} cache, split block {ops.att_nw} warps")
    print("| N_KV | split us | combine us | K+V MB | split GB/s | blocks |")
    print("|---:|---:|---:|---:|---:|---:|")
    for depth in [int(x) for x in args.depths.split(",")]:
        ops.io[0:1].copy_to_device(np.array([depth - 1], np.int32))
        grid = (n_parts, hkv, 1)  # as captured: sized for n_ctx, blocks past the position return at once
        sargs = (q, kv.kq[0], kv.kd[0], kv.vq[0], kv.vd[0], ops.posv, part_o, part_ml, h, hkv, n_parts, scale, 0)
        cargs = (part_o, part_ml, ops.posv, out, xq, xa, h, n_parts, 0, True)
        if args.once:
            split[grid, 32 * ops.att_nw, ops.stream](*sargs)
            combine[(h, d // 32, 1), 32 * ops.att_combine_nw, ops.stream](*cargs)
            ops.stream.synchronize()
            continue
        us_s = in_graph_us(ops, split, grid, 32 * ops.att_nw, sargs)
        us_c = in_graph_us(ops, combine, (h, d // 32, 1), 32 * ops.att_combine_nw, cargs)
        mb = depth * cell_bytes / 1e6
        used = (depth + BKV - 1) // BKV * hkv
        print(f"| {depth} | {us_s:.1f} | {us_c:.1f} | {mb:.1f} | {mb * 1e3 / us_s:.0f} | {used} |")


if __name__ == "__main__":
    main()
