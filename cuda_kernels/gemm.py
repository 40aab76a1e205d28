"""Tensor-core GEMMs for prompt processing: Y = X W^T with W dequantized tile by tile into shared memory as f16.

Why f16 tiles rather than int8 (MMQ) mma: a 64x64 weight tile is dequantized once and used by 64 activation rows,
so dequantization costs 1/64 of an instruction per multiply-add, and the f32-accumulating HMMA needs no per-block
rescaling of int32 partial sums (MMQ's epilogue, which on this chip costs more than the mma itself). Bytes are no
concern at these sizes: a 2048-token ubatch reads each weight tile once per 64 rows.

Block: BM x BN outputs (64 x 64), 4 warps of 32 x 32 (2 x 4 m16n8k16 tiles), K in steps of BK = 32 (one quant
block). Each thread stages 16 activations (float32 -> f16) and 16 weights per step; the next step's global loads
are issued before the current step's mma (register double buffering), and with ``late`` their conversion to f16
waits until after that mma. Shared rows are padded to 20 words, so the fragment reads of a warp hit 32 distinct
banks (with ``swz``: unpadded rows of swizzled 16-byte chunks, for 16-byte stores too). Activations come as
float32 rows or, with ``xh``, as the f16 pairs their producer wrote (SWEEPBENCH_CUDA_GEMM_X).

Variants (``kernel(kind, gathered, fused, late, swz, regs, xh, yh)``; ``late`` and ``swz`` are
SWEEPBENCH_CUDA_GEMM's, both on by default):
    dense      rows m0 .. m0+BM of X and Y
    gathered   a tile of one expert's routed rows (``routing.group_rows``): X row = rows[i] // div, Y row = rows[i],
               weight rows e*N ..; blocks past the device-side tile count return at once
    fused      two weights (gate, up): Y = silu(X Wg^T) * (X Wu^T)

Float32 weights (the routers) take ``sgemm.sgemm_f32`` instead.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from cuda_kernels.env import SIM, device, grid_dep_wait, jit, ldg4, ldg4f, mma_f16, pack_h2, smem_base, sts4
from cuda_kernels.tiles import H16, RAW

BM, BN, BK, PAD = 64, 64, 32, 20
ALIGN = None if SIM else 16  # swizzled rows: 16-byte stores; the simulator refuses the argument
THREADS = 128
_CACHE: dict = {}


def kernel(kind: str, gathered: bool, fused: bool, late: bool = True, swz: bool = False, regs: int = 0,
           xh: bool = False, yh: bool = False):
    """(qs, hdr, qs2, hdr2, x, y, M, N, K, rows, offsets, tiles, div, n_expert) -> y.
    Grid: (ceil(M / BM) or max tiles, ceil(N / BN)), block THREADS. ``late``: a step's loaded words stay raw until
    the next iteration stages them, so the mma in between covers the loads' latency (else converted at once).
    ``swz``: tiles staged by 16-byte stores into unpadded rows whose four 16-byte chunks are swizzled (chunk c of
    row r at c ^ ((r >> 1) & 3)): each quarter warp's stores and each fragment read then hit 32 distinct banks
    (the padded rows' 4-byte stores have 4-way conflicts: 2/3 of the shared wavefronts, ncu, NOTES.md).
    ``regs``: a cap on registers per thread (0: none); such a kernel skips the disk cache, whose key (signature,
    bytecode, closure values) does not hold the cap.
    ``xh``: x holds f16 pairs (uint32 words [M, K/2], RNE-rounded by its producer as ``pack_h2`` rounds here: the
    same bits), half the bytes and registers of float32 rows. ``yh``: y written so (N even): what a following GEMM
    reads with ``xh``."""
    key = (kind, gathered, fused, late, swz, regs, xh, yh)
    if key in _CACHE:
        return _CACHE[key]
    load, conv = H16[kind]
    NACC = 64 if fused else 32
    RW = 16 if swz else PAD  # words per staged row
    SA, SB2 = BM * RW, BN * RW if fused else 1  # shared sizes must be compile-time constants
    AL = ALIGN if swz else None

    @device
    def at(r, kk, hi, sw, tq):
        """The word of staged row r holding k pair 8 kk + 4 hi + tq (an mma fragment's word; sw: r's swizzle)."""
        if swz:
            return r * RW + ((((2 * kk + hi) ^ sw) << 2) + tq)
        return r * PAD + kk * 8 + tq + 4 * hi

    @device
    def fetch(qs, hdr, qs2, hdr2, x, arow, brow, kc, lh, K, xr, xw, wr, wr2):
        """Issue the global loads of step kc: 16 activations into xr (f16 pairs into xw with xh), the weight words
        into wr (wr2)."""
        if arow >= 0:
            i = arow * K + kc * BK + lh * 16  # this thread's first activation
            if xh:  # 16 f16 = 8 words, as staged
                for v in range(2):
                    xw[4 * v], xw[4 * v + 1], xw[4 * v + 2], xw[4 * v + 3] = ldg4(x, i // 2 + 4 * v)
            else:
                for v in range(4):
                    xr[4 * v], xr[4 * v + 1], xr[4 * v + 2], xr[4 * v + 3] = ldg4f(x, i + 4 * v)
        if brow >= 0:
            load(qs, hdr, brow, kc, lh, K, wr)
            if fused:
                load(qs2, hdr2, brow, kc, lh, K, wr2)

    @device
    def convert(arow, brow, kc, lh, xr, xw, wr, wr2, ra, rb, rb2):
        """Step kc's loaded words -> the f16 pairs it stages (zeros for rows past the tile's edge)."""
        for j in range(8):
            if arow < 0:
                ra[j] = np.uint32(0)
            elif xh:
                ra[j] = xw[j]
            else:
                ra[j] = pack_h2(xr[2 * j], xr[2 * j + 1])
        if brow >= 0:
            conv(wr, kc, lh, rb)
            if fused:
                conv(wr2, kc, lh, rb2)
        else:
            for j in range(8):
                rb[j] = np.uint32(0)
                rb2[j] = np.uint32(0)

    @device
    def out_value(acc, o, fused):
        v = acc[o]
        if fused:
            v = v / (np.float32(1) + math.exp(-v)) * acc[32 + o]
        return v

    def gemm(qs, hdr, qs2, hdr2, x, y, M, N, K, rows, offsets, tiles, div, n_expert):
        grid_dep_wait()
        tid = cuda.threadIdx.x
        lane, warp = tid & 31, tid // 32
        g, tq = lane >> 2, lane & 3
        wm, wn = warp // 2, warp % 2
        bx, n0 = cuda.blockIdx.x, cuda.blockIdx.y * BN
        if gathered:
            if bx >= offsets[n_expert + 1]:
                return
            e, i0 = tiles[2 * bx], tiles[2 * bx + 1]
            cnt = min(BM, offsets[e + 1] - i0)
            wrow0 = e * N
        else:
            i0, cnt, wrow0 = bx * BM, min(BM, M - bx * BM), 0
        sa = cuda.shared.array(SA, np.uint32, alignment=AL)  # [BM, RW]
        sb = cuda.shared.array(SA, np.uint32, alignment=AL)  # [BN, RW]
        sb2 = cuda.shared.array(SB2, np.uint32, alignment=AL)
        lr, lh = tid // 2, tid % 2  # the row and half-row (16 values) this thread stages
        sw, sws = ((g >> 1) & 3, (lr >> 1) & 3) if swz else (0, 0)  # the chunk swizzle of read and staged rows
        sab, sbb, sb2b = smem_base(sa), smem_base(sb), smem_base(sb2)  # for sts4 (unused without swz)
        arow = -1
        if lr < cnt:
            arow = rows[i0 + lr] // div if gathered else i0 + lr
        brow = wrow0 + n0 + lr if n0 + lr < N else -1
        xr = cuda.local.array(16, np.float32)  # [16] activations as loaded
        xw = cuda.local.array(8, np.uint32)  # ... or their f16 pairs (xh; the other array is optimized away)
        wr = cuda.local.array(RAW, np.uint32)  # weight words as loaded
        wr2 = cuda.local.array(RAW, np.uint32)
        ra = cuda.local.array(8, np.uint32)  # [16] as f16 pairs, to stage
        rb = cuda.local.array(8, np.uint32)
        rb2 = cuda.local.array(8, np.uint32)
        acc = cuda.local.array(NACC, np.float32)
        for i in range(NACC):
            acc[i] = np.float32(0)
        nk = K // BK
        for kc in range(nk + 1):
            if kc > 0:  # stage step kc-1 (loaded last iteration) and multiply it
                if late:
                    convert(arow, brow, kc - 1, lh, xr, xw, wr, wr2, ra, rb, rb2)
                if swz:
                    for q in range(2):  # logical chunks 2 lh + q of row lr
                        w = lr * RW + (((2 * lh + q) ^ sws) << 2)
                        sts4(sa, sab, w, ra[4 * q], ra[4 * q + 1], ra[4 * q + 2], ra[4 * q + 3])
                        sts4(sb, sbb, w, rb[4 * q], rb[4 * q + 1], rb[4 * q + 2], rb[4 * q + 3])
                        if fused:
                            sts4(sb2, sb2b, w, rb2[4 * q], rb2[4 * q + 1], rb2[4 * q + 2], rb2[4 * q + 3])
                else:
                    for j in range(8):
                        sa[lr * RW + lh * 8 + j] = ra[j]
                        sb[lr * RW + lh * 8 + j] = rb[j]
                        if fused:
                            sb2[lr * RW + lh * 8 + j] = rb2[j]
                cuda.syncthreads()
            if kc < nk:  # global loads of step kc, in flight during the mma below
                fetch(qs, hdr, qs2, hdr2, x, arow, brow, kc, lh, K, xr, xw, wr, wr2)
                if not late:
                    convert(arow, brow, kc, lh, xr, xw, wr, wr2, ra, rb, rb2)
            if kc > 0:
                for kk in range(2):
                    for mi in range(2):
                        r = wm * 32 + mi * 16 + g
                        a0 = sa[at(r, kk, 0, sw, tq)]
                        a1 = sa[at(r + 8, kk, 0, sw, tq)]
                        a2 = sa[at(r, kk, 1, sw, tq)]
                        a3 = sa[at(r + 8, kk, 1, sw, tq)]
                        for ni in range(4):
                            c = wn * 32 + ni * 8 + g
                            o = (mi * 4 + ni) * 4
                            d0, d1, d2, d3 = mma_f16(a0, a1, a2, a3, sb[at(c, kk, 0, sw, tq)], sb[at(c, kk, 1, sw, tq)],
                                                     acc[o], acc[o + 1], acc[o + 2], acc[o + 3])
                            acc[o], acc[o + 1], acc[o + 2], acc[o + 3] = d0, d1, d2, d3
                            if fused:
                                p = 32 + o
                                d0, d1, d2, d3 = mma_f16(a0, a1, a2, a3, sb2[at(c, kk, 0, sw, tq)],
                                                         sb2[at(c, kk, 1, sw, tq)], acc[p], acc[p + 1], acc[p + 2],
                                                         acc[p + 3])
                                acc[p], acc[p + 1], acc[p + 2], acc[p + 3] = d0, d1, d2, d3
                cuda.syncthreads()
        for mi in range(2):
            for hh in range(2):
                r = wm * 32 + mi * 16 + g + 8 * hh
                if r < cnt:
                    orow = rows[i0 + r] if gathered else i0 + r
                    for ni in range(4):
                        col = n0 + wn * 32 + ni * 8 + 2 * tq  # and col + 1
                        o = (mi * 4 + ni) * 4 + 2 * hh
                        v0, v1 = out_value(acc, o, fused), out_value(acc, o + 1, fused)
                        if yh:
                            if col < N:  # N even: col + 1 < N too
                                y[(orow * N + col) // 2] = pack_h2(v0, v1)
                        else:
                            if col < N:
                                y[orow * N + col] = v0
                            if col + 1 < N:
                                y[orow * N + col + 1] = v1

    _CACHE[key] = jit(gemm, max_registers=regs, cache=False) if regs else jit(gemm)
    return _CACHE[key]
