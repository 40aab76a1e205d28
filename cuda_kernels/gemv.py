"""MMVQ-style GEMVs for a few activation rows (token generation): a warp per output row, lanes over 32-value
chunks, one warp reduction per (row, activation row).

    dense        y [T, N] = x [T, K] @ W[N, K]^T
    expert       y [R, N] = x[r // div] @ W[ids[r]]^T per routed row r (div = K for inputs per token, 1 per row)
    up_gate      h [R, F] = silu(x_t @ Wg[e]^T) * (x_t @ Wu[e]^T), t = r // k, e = ids[r]  (fused, seed #861/#864)
    down_combine y [T, E] = sum_j w[t, j] * (h[t*k + j] @ Wd[ids[t*k+j]]^T), j in slot order (deterministic)

Expert ids are read on the device, so one CUDA graph serves every token. Weights: ``layout``'s flat qs / hdr;
stacks keep expert e in rows e*N .. e*N+N-1. Activations: q8_1 (xq, xa) for quantized weights, float32 xf for
f16 / f32 weights (``qdot``).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from cuda_kernels.env import jit, warp_sum
from cuda_kernels.qdot import DOTS

GEMV_WARPS = 4  # rows (warps) per block by default
_CACHE: dict = {}


def _cached(key, make):
    if key not in _CACHE:
        _CACHE[key] = jit(make())
    return _CACHE[key]


def dense(kind: str, nw: int = GEMV_WARPS):
    """(qs, hdr, xq, xa, xf, y, N, K, T): grid (ceil(N / nw)), block 32 * nw."""
    dot = DOTS[kind]

    def make():
        def kernel(qs, hdr, xq, xa, xf, y, N, K, T):
            n = cuda.blockIdx.x * nw + cuda.threadIdx.x // 32
            lane = cuda.threadIdx.x & 31
            for t in range(T):
                acc = np.float32(0)
                if n < N:
                    for c in range(lane, K // 32, 32):
                        acc += dot(qs, hdr, n, c, K, xq, xa, xf, t)
                acc = warp_sum(acc)
                if lane == 0 and n < N:
                    y[t * N + n] = acc

        return kernel

    return _cached(("dense", kind, nw), make)


def expert(kind: str, nw: int = GEMV_WARPS):
    """(qs, hdr, xq, xa, xf, ids, y, N, K, div): grid (ceil(N / nw), R)."""
    dot = DOTS[kind]

    def make():
        def kernel(qs, hdr, xq, xa, xf, ids, y, N, K, div):
            r = cuda.blockIdx.y
            n = cuda.blockIdx.x * nw + cuda.threadIdx.x // 32
            lane = cuda.threadIdx.x & 31
            row = ids[r] * N + n
            acc = np.float32(0)
            if n < N:
                for c in range(lane, K // 32, 32):
                    acc += dot(qs, hdr, row, c, K, xq, xa, xf, r // div)
            acc = warp_sum(acc)
            if lane == 0 and n < N:
                y[r * N + n] = acc

        return kernel

    return _cached(("expert", kind, nw), make)


def up_gate(kind: str, nw: int = GEMV_WARPS):
    """(gq, gh, uq, uh, xq, xa, xf, ids, h, F, K, k): grid (ceil(F / nw), R)."""
    dot = DOTS[kind]

    def make():
        def kernel(gq, gh, uq, uh, xq, xa, xf, ids, h, F, K, k):
            r = cuda.blockIdx.y
            n = cuda.blockIdx.x * nw + cuda.threadIdx.x // 32
            lane = cuda.threadIdx.x & 31
            row, t = ids[r] * F + n, r // k
            g, u = np.float32(0), np.float32(0)
            if n < F:
                for c in range(lane, K // 32, 32):
                    g += dot(gq, gh, row, c, K, xq, xa, xf, t)
                    u += dot(uq, uh, row, c, K, xq, xa, xf, t)
            g = warp_sum(g)
            u = warp_sum(u)
            if lane == 0 and n < F:
                h[r * F + n] = g / (np.float32(1) + math.exp(-g)) * u

        return kernel

    return _cached(("up_gate", kind, nw), make)


def down_combine(kind: str, nw: int = GEMV_WARPS):
    """(qs, hdr, hq, ha, hf, ids, w, y, E, F, k): grid (ceil(E / nw), T)."""
    dot = DOTS[kind]

    def make():
        def kernel(qs, hdr, hq, ha, hf, ids, w, y, E, F, k):
            t = cuda.blockIdx.y
            n = cuda.blockIdx.x * nw + cuda.threadIdx.x // 32
            lane = cuda.threadIdx.x & 31
            out = np.float32(0)
            for j in range(k):
                r = t * k + j
                acc = np.float32(0)
                if n < E:
                    for c in range(lane, F // 32, 32):
                        acc += dot(qs, hdr, ids[r] * E + n, c, F, hq, ha, hf, r)
                acc = warp_sum(acc)
                out += w[r] * acc
            if lane == 0 and n < E:
                y[t * E + n] = out

        return kernel

    return _cached(("down_combine", kind, nw), make)
