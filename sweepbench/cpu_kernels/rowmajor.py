"""The plain path (``--no-repack``): integer dots straight on the memory-mapped GGUF rows, no copy at load.

One row x one token per call: 32 weights in natural order per vector against 32 activation bytes, a float
vector accumulator per row, one horizontal sum at the end. Kept as the layout baseline that run-time repacking
is measured against (benchmarks/NOTES.md), and for weights whose row count is not a multiple of 8.

Arguments: raw uint8 [N*RB] one matrix's rows (RB bytes each); n row; K row length; X the activation records
(``quant_act``); r activation row. Float weights: w the same bytes, X f32.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from sweepbench.cpu_kernels.quant_act import REC
from sweepbench.cpu_kernels.layouts import K_F32, K_IQ4_XS, K_Q4_0, K_Q4_K, K_Q5_K, K_Q6_K, K_Q8_0, K_Q8_F32
from sweepbench.cpu_kernels.simd import (
    bcf, bcf2, bits_at, bits_f32, cvt, dot_ss, dot_us, fma, fmul, fsub, hi4, hsum, ld16x2, ld32, ldbf, ldf,
    ldh, ld1f, ldh1, lo4, lut16, orb, silu_mul, split16, zf, zi,
)
from sweepbench.quants import IQ4_NL_VALUES, MXFP4_VALUES

K_MXFP4 = K_Q8_F32  # MXFP4's kind: here its blocks are read as they are, the R8 path expands them to int8
_IQ4 = np.tile(IQ4_NL_VALUES, 2).view(np.uint8)
_MXFP4 = np.tile(MXFP4_VALUES, 2).view(np.uint8)
@njit(cache=True)
def _k_scale_min(raw, o, j):
    """6-bit scale and min of sub-block j of a Q4_K/Q5_K super-block whose 12 scale bytes start at o."""
    if j < 4:
        return raw[o + j] & 63, raw[o + 4 + j] & 63
    return (raw[o + 4 + j] & 15) | ((raw[o + j - 4] >> 6) << 4), (raw[o + 4 + j] >> 4) | ((raw[o + j] >> 6) << 4)


@njit(cache=True)
def _e8m0_half(e):
    return bits_f32(np.uint32(0x00200000) << e if e < 2 else np.uint32(e - 1) << 23)


@njit(cache=True)
def rm_dot(kind, raw, n, K, X, r):
    """One row n of a GGUF matrix . activation records of row r -> float32."""
    nb = K // 32
    xr = r * nb * REC
    acc, corr = zf(), np.float32(0.0)  # corr: offsets and mins, accumulated as scalars
    if kind == K_Q8_0 or kind == K_Q4_0 or kind == K_MXFP4:
        bb = 34 if kind == K_Q8_0 else (18 if kind == K_Q4_0 else 17)
        tab = ld16x2(_MXFP4, 0)
        for b in range(nb):
            o, xb = n * nb * bb + bb * b, xr + REC * b
            x = ld32(X, xb)
            if kind == K_Q8_0:
                s, d = dot_ss(zi(), ld32(raw, o + 2), x), ldh1(raw, o)
            elif kind == K_Q4_0:
                s, d = dot_us(zi(), split16(ld16x2(raw, o + 2)), x), ldh1(raw, o)
                corr += d * np.float32(8.0) * ld1f(X, xb + 36)
            else:
                s, d = dot_ss(zi(), lut16(tab, split16(ld16x2(raw, o + 1))), x), _e8m0_half(raw[o])
            acc = fma(cvt(s), bcf(d * ld1f(X, xb + 32)), acc)
        return hsum(acc) - corr
    ns = K // 256
    if kind == K_Q4_K or kind == K_Q5_K:
        bb = 144 if kind == K_Q4_K else 176
        q0 = 16 if kind == K_Q4_K else 48
        for s_ in range(ns):
            o = n * ns * bb + bb * s_
            d, dm = ldh1(raw, o), ldh1(raw, o + 2)
            qh = ld32(raw, o + 16)
            for j in range(8):
                w = ld32(raw, o + q0 + 32 * (j // 2))
                q = hi4(w) if j % 2 else lo4(w)
                if kind == K_Q5_K:
                    q = orb(q, bits_at(qh, j, 1, 4))
                sc, mn = _k_scale_min(raw, o + 4, j)
                xb = xr + REC * (8 * s_ + j)
                s = dot_us(zi(), q, ld32(X, xb))
                acc = fma(cvt(s), bcf(d * np.float32(sc) * ld1f(X, xb + 32)), acc)
                corr += dm * np.float32(mn) * ld1f(X, xb + 36)
        return hsum(acc) - corr
    if kind == K_Q6_K:
        for s_ in range(ns):
            o = n * ns * 210 + 210 * s_
            d = ldh1(raw, o + 208)
            for h in range(2):
                qh = ld32(raw, o + 128 + 32 * h)
                for k4 in range(4):
                    w = ld32(raw, o + 64 * h + 32 * (k4 % 2))
                    q = orb(hi4(w) if k4 >= 2 else lo4(w), bits_at(qh, 2 * k4, 3, 4))
                    sub = 8 * h + 2 * k4  # two 16-value sub-blocks: lanes 0-3 and 4-7 of the dot
                    sa, sb = d * np.float32(np.int8(raw[o + 192 + sub])), d * np.float32(np.int8(raw[o + 193 + sub]))
                    xb = xr + REC * (8 * s_ + 4 * h + k4)
                    s = dot_us(zi(), q, ld32(X, xb))
                    acc = fma(fmul(cvt(s), bcf(ld1f(X, xb + 32))), bcf2(sa, sb), acc)
                    corr += np.float32(32.0) * (sa * ld1f(X, xb + 40) + sb * ld1f(X, xb + 44))
        return hsum(acc) - corr
    tab = ld16x2(_IQ4, 0)  # IQ4_XS
    for s_ in range(ns):
        o = n * ns * 136 + 136 * s_
        d = ldh1(raw, o)
        sh = np.int32(raw[o + 2]) | (np.int32(raw[o + 3]) << 8)
        for j in range(8):
            ls = ((raw[o + 4 + j // 2] >> (4 * (j % 2))) & 15) | (((sh >> (2 * j)) & 3) << 4)
            w = lut16(tab, split16(ld16x2(raw, o + 8 + 16 * j)))
            xb = xr + REC * (8 * s_ + j)
            s = dot_ss(zi(), w, ld32(X, xb))
            acc = fma(cvt(s), bcf(d * np.float32(np.int32(ls) - 32) * ld1f(X, xb + 32)), acc)
    return hsum(acc)


@njit(cache=True)
def rm_fdot(fmt, w, n, K, X, r):
    """One row of a float matrix (w uint8 bytes; fmt 0 f32, 1 f16, 2 bf16) . x row r, 8 lanes then a fixed sum."""
    acc = zf()
    size = 4 if fmt == 0 else 2
    for k in range(0, K, 8):
        o = size * (n * K + k)  # byte offset (loads on a uint8 array take bytes)
        wv = ldf(w, o) if fmt == 0 else (ldh(w, o) if fmt == 1 else ldbf(w, o))
        acc = fma(wv, ldf(X, r * K + k), acc)
    return hsum(acc)


@njit(cache=True)
def _row(kind, raw, n, K, X, r):
    if kind >= K_F32:
        return rm_fdot(kind - K_F32, raw, n, K, X, r)
    return rm_dot(kind, raw, n, K, X, r)


@njit(parallel=True, cache=True)
def rm_mm(kind, raw, N, K, X, yrows, offsets, active, Y):
    """Plain twin of ``qmm.q_mm``: raw uint8 [X, N*row_bytes]; float kinds take float32 X."""
    for item in prange(active.shape[0] * N):
        e, n = active[item // N], item % N
        for i in range(offsets[e], offsets[e + 1]):
            Y[yrows[i] * N + n] = _row(kind, raw[e], n, K, X, i)


@njit(parallel=True, cache=True)
def rm_up_gate(kind, graw, uraw, N, K, X, offsets, active, H):
    """Plain twin of ``qmm.q_up_gate``: H[i, n] = silu(gate . x_i) * (up . x_i)."""
    for item in prange(active.shape[0] * N):
        e, n = active[item // N], item % N
        for i in range(offsets[e], offsets[e + 1]):
            g = _row(kind, graw[e], n, K, X, i)
            u = _row(kind, uraw[e], n, K, X, i)
            H[i * N + n] = g * u / (np.float32(1.0) + np.exp(-g))
