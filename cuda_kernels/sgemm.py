"""The float32 GEMM of prompt processing, for float32 weights (the MoE routers: their top-k must see float32
logits): y [M, N] = x [M, K] @ w [N, K]^T.

Dimension legend: M activation rows (tokens), N outputs (experts), K the reduced width (n_embd, a multiple of
32), S parts of K.

Block: a 64 x 64 tile of y, 256 threads of 4 x 4 outputs (rows tr + 16 i, columns tc + 16 j: a half warp reads
16 consecutive shared words of w's tile and one word of x's). K runs in steps of 32, staged transposed ([k][m],
rows of 65 words so the staging stores hit 32 banks) in two shared buffers: the next step's global loads (two
16-byte loads of x and two of w per thread) are issued before this step's multiply-adds and stored after them,
one barrier per step.

Why K is split (grid z): a router is narrow (N = 128-256 experts), so a 512-token ubatch is only 16-32 tiles for
132 SMs. The one-pass kernel this replaces (one tile per block over all of K, each staging load waited for in
turn) took ~380 us per layer of a qwen3-30b-a3b -ub 2048 prefill on an H100 (ncu, benchmarks/NOTES.md), 10% of
it; at -ub 512 it should take as long (the same work per block, a quarter of the blocks: inferred, not profiled).
``footprint.sgemm_parts`` picks S from the shape alone, never from the card, so the sums (and the logits' bits)
are the same on every GPU.

Deterministic: each partial sum is one thread's, over its K range in ascending k; the parts [S, M, N] are added
in part order by ``sum_parts``.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from cuda_kernels.env import device, grid_dep_wait, jit, ldg4f

B, THREADS, BK = 64, 256, 32  # tile edge, threads, K step
LD = B + 1  # a staged k row: 64 values + 1 pad word


@device
def _fetch(x, w, m0, n0, sr, sq, kc, M, N, K, xr, wr):
    """The step at k = kc: this thread's 4 x values of rows m0 + sr and m0 + sr + 32 into xr, likewise w's into
    wr (zeros past M or N). [2 x 4] each."""
    for v in range(2):
        r = sr + 32 * v
        if m0 + r < M:
            xr[4 * v], xr[4 * v + 1], xr[4 * v + 2], xr[4 * v + 3] = ldg4f(x, (m0 + r) * K + kc + 4 * sq)
        else:
            for c in range(4):
                xr[4 * v + c] = np.float32(0)
        if n0 + r < N:
            wr[4 * v], wr[4 * v + 1], wr[4 * v + 2], wr[4 * v + 3] = ldg4f(w, (n0 + r) * K + kc + 4 * sq)
        else:
            for c in range(4):
                wr[4 * v + c] = np.float32(0)


@device
def _stage(sx, sw, b, sr, sq, xr, wr):
    """Store a fetched step into shared buffer b, transposed: [k][row]."""
    for v in range(2):
        for c in range(4):
            sx[b, 4 * sq + c, sr + 32 * v] = xr[4 * v + c]
            sw[b, 4 * sq + c, sr + 32 * v] = wr[4 * v + c]


@jit
def sgemm_f32(w, x, y, M, N, K, k_len):
    """y [S, M, N] (part z of grid z: the products over k in [z k_len, (z + 1) k_len)) = x [M, K] @ w [N, K]^T;
    grid (ceil(M / 64), ceil(N / 64), S), 256 threads; K and k_len multiples of 32. With S = 1, y is the result."""
    grid_dep_wait()
    sx = cuda.shared.array((2, BK, LD), np.float32)  # [buffer, k, m]
    sw = cuda.shared.array((2, BK, LD), np.float32)  # [buffer, k, n]
    xr = cuda.local.array(8, np.float32)
    wr = cuda.local.array(8, np.float32)
    acc = cuda.local.array(16, np.float32)  # [i, j]: row tr + 16 i, column tc + 16 j
    tid = cuda.threadIdx.x
    m0, n0, z = cuda.blockIdx.x * B, cuda.blockIdx.y * B, cuda.blockIdx.z
    tr, tc = tid // 16, tid % 16
    sr, sq = tid // 8, tid % 8  # staging: rows sr, sr + 32; k 4 sq .. 4 sq + 3 of the step
    k0 = z * k_len
    n_steps = (min(K, k0 + k_len) - k0) // BK
    for i in range(16):
        acc[i] = np.float32(0)
    _fetch(x, w, m0, n0, sr, sq, k0, M, N, K, xr, wr)
    _stage(sx, sw, 0, sr, sq, xr, wr)
    cuda.syncthreads()
    for s in range(n_steps):
        b = s % 2
        more = s + 1 < n_steps
        if more:  # the next step's loads fly during this step's multiply-adds
            _fetch(x, w, m0, n0, sr, sq, k0 + (s + 1) * BK, M, N, K, xr, wr)
        for kq in range(BK // 4):
            for u in range(4):
                kk = 4 * kq + u
                for i in range(4):
                    xv = sx[b, kk, tr + 16 * i]
                    for j in range(4):
                        acc[4 * i + j] += xv * sw[b, kk, tc + 16 * j]
        if more:  # the other buffer: its last readers passed the previous step's barrier
            _stage(sx, sw, 1 - b, sr, sq, xr, wr)
        cuda.syncthreads()
    base = z * M * N
    for i in range(4):
        r = m0 + tr + 16 * i
        for j in range(4):
            c = n0 + tc + 16 * j
            if r < M and c < N:
                y[base + r * N + c] = acc[4 * i + j]


@jit
def sum_parts(part, y, MN, S):
    """y [M, N] = sum over s of part [S, M, N], in s order; grid over M N (one value a thread)."""
    grid_dep_wait()
    i = cuda.grid(1)
    if i < MN:
        v = part[i]
        for s in range(1, S):
            v += part[s * MN + i]
        y[i] = v
