"""Flash-decoding attention alone on the GPU: split kernel variants and the combine of one layer timed as CUDA-graph
nodes at several cache depths, on random f16 (or q8_0) caches, with the bytes they must read and the bandwidth
that implies. Isolates the attention of a decode step from the rest of the model (and is small enough for ncu).

    python benchmarks/gpu_attention_micro.py [--heads 32 --kv-heads 4 --ctx 16384 --kv f16]
        [--variants warp:4:4,tile:8] [--layers 8]

A variant is ``tile:NW`` (the 64-cell staged-P kernel, NW warps) or ``warp:NW:TPW[:hoist]`` (independent warps,
TPW 16-cell tiles each; ``hoist``: a q8_0 cache's cells of a tile all fetched before any is widened). Each timed graph holds 32 launches that cycle over ``--layers`` layers' caches, so with
enough layers every launch reads its cache from DRAM as in a real decode step (``--layers 1``: L2-warm). The GPU
runs a second of work before the first measurement so that its clocks have ramped up.
"""
from __future__ import annotations

import argparse
import math
import re
import time

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
    p.add_argument("--variants", default="warp:4:4,tile:8")
    p.add_argument("--layers", type=int, default=8, help="caches the launches cycle over (1: L2-warm)")
    p.add_argument("--once", action="store_true", help="one eager launch per depth and variant (for ncu)")
    args = p.parse_args()
    for v in args.variants.split(","):
        if not re.fullmatch(r"tile(:\d+)?|warp(:\d+:\d+(:hoist)?)?", v):
            p.error(f"--variants: {v!r} is neither tile[:NW] nor warp[:NW:TPW[:hoist]]")
    from numba import cuda

    from cuda_kernels import attention as att
    from cuda_kernels.flash import BKV
    from cuda_kernels.graph import launches_us
    from cuda_kernels.ops_table import CudaOps
    from cuda_kernels.weights import DeviceKV

    h, hkv, d, n_ctx, nl = args.heads, args.kv_heads, args.dim, args.ctx, args.layers
    q8 = args.kv == "q8_0"
    rng = np.random.default_rng(0)
    ops = CudaOps(max_tokens=1, n_ctx=n_ctx)
    kv = DeviceKV(nl, n_ctx, hkv * d, args.kv, args.kv)
    for il in range(nl):
        for a in (kv.kq[il], kv.vq[il]):  # f16 pairs / int8 quads of moderate values
            words = rng.integers(0, 1 << 32, a.size, dtype=np.uint64).astype(np.uint32)
            if not q8:
                words &= np.uint32(0x3BFF3BFF)  # |x| < 1, no inf / nan
            a.copy_to_device(words)
        for a in (kv.kd[il], kv.vd[il]):
            if a.size > 1:
                a.copy_to_device(np.full(a.size, 0.01, np.float32))
    q = cuda.to_device(rng.standard_normal(h * d).astype(np.float32))
    out = cuda.device_array(h * d, np.float32)
    xq, xa = cuda.device_array(h * d // 4, np.uint32), cuda.device_array(h * d // 16, np.float32)
    scale = np.float32(1 / math.sqrt(d))
    cell_bytes = hkv * d * (2 if not q8 else 1.0625) * 2
    parts_max = (n_ctx + att.TILE - 1) // att.TILE  # enough for the smallest part of any variant
    part_o = cuda.device_array(h * parts_max * d, np.float32)
    part_ml = cuda.device_array(h * parts_max * 2, np.float32)
    ops.io[0:1].copy_to_device(np.array([n_ctx - 1], np.int32))

    def kernels(spec: str):
        kind, *shape = spec.split(":")
        if kind == "tile":
            nw = int(shape[0]) if shape else att.NWD
            return att.split_kernel(d, q8, q8, nw), nw, BKV
        nw, tpw = (int(shape[0]), int(shape[1])) if len(shape) >= 2 else (att.WS_WARPS, att.TPW)
        hoist = shape[-1:] == ["hoist"]
        return att.warp_split_kernel(d, q8, q8, nw, tpw, hoist=hoist), nw, att.part_cells(nw, tpw)

    def launches(spec: str):
        split, nw, cells = kernels(spec)
        v_tile = spec.startswith("tile")
        n_parts = (n_ctx + cells - 1) // cells
        combine = att.combine_kernel(d, cells, ops.att_combine_nw)
        s, c = [], []
        for i in range(32):
            il = i % nl
            fused = () if v_tile else (out, xq, xa, ops.att_counter, True)  # the warp split's fused tail (unused)
            s.append((split, (n_parts, hkv, 1), 32 * nw, (q, kv.kq[il], kv.kd[il], kv.vq[il], kv.vd[il], ops.posv,
                                                            part_o, part_ml, h, hkv, n_parts, scale, 0, *fused)))
            c.append((combine, (h, d // 32, 1), 32 * ops.att_combine_nw,
                      (part_o, part_ml, ops.posv, out, xq, xa, h, n_parts, 0, True)))
        return s, c

    variants = args.variants.split(",")
    plans = {v: launches(v) for v in variants}
    if not args.once:  # clocks up: about a second of the deepest launches
        s, _ = plans[variants[0]]
        t_end = time.time() + 1.0
        while time.time() < t_end:
            launches_us(ops.stream, s, reps=4)
    mb_layer = n_ctx * cell_bytes / 1e6
    print(f"\n{h}/{hkv} heads of {d}, {args.kv} cache, {nl} layers' caches cycled ({nl * mb_layer:.0f} MB at full "
          f"context; L2 is 50 MB)")
    print("| variant | N_KV | split us | combine us | K+V MB | split GB/s | parts |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for depth in [int(x) for x in args.depths.split(",")]:
        ops.io[0:1].copy_to_device(np.array([depth - 1], np.int32))
        outs = []
        for v in variants:  # the variants agree (layer 0)
            s, c = plans[v]
            for k, gr, b, a in (s[0], c[0]):
                k[gr, b, ops.stream](*a)
            ops.stream.synchronize()
            outs.append(out.copy_to_host())
        diff = max(float(np.max(np.abs(o - outs[0])) / (np.max(np.abs(outs[0])) + 1e-30)) for o in outs)
        print(f"N_KV {depth}: largest difference between variants {diff:.2e} (of the largest output)")
        for v in variants:
            s, c = plans[v]
            if args.once:
                continue
            us_s, us_c = launches_us(ops.stream, s), launches_us(ops.stream, c)
            mb = depth * cell_bytes / 1e6
            cells = kernels(v)[2]
            print(f"| {v} | {depth} | {us_s:.1f} | {us_c:.1f} | {mb:.1f} | {mb * 1e3 / us_s:.0f} | "
                  f"{(depth + cells - 1) // cells * hkv} |", flush=True)


if __name__ == "__main__":
    main()
