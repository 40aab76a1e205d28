"""Register tiles of the R8 layouts (``layouts.py``): 8 weight rows x 1 or 4 tokens -> one V8F per token.

``t1``: the decode (GEMV) tile. ``t4``: the prefill (GEMM) tile: each weight vector is decoded once and used
for 4 tokens. Every integer accumulator has a partner (even / odd vectors) so that two chains are in flight:
one vpdpbusd chain of 8 would wait on its own latency (measured: 173 -> 193 GOP/s on one core).

Arguments, shared by every type (one matrix of the stack):
    qs       uint8 [G*GB]           repacked block records of one matrix: scales, then quants (``layouts``)
    g, K     row group, row length
    X        uint8 [rows*B*48]      activation block records (``quant_act``): q[32], d, s32, s_lo, s_hi
    r        activation row (t4: rows r..r+3; expert rows are gathered contiguously first, so that a tile
             needs one row pointer: 4 arbitrary row pointers cost 229 -> 168 GOP/s in register pressure)
Per block the integer sum S becomes float once: d_x * S - offset * s (Q4_0: 8 * s32; Q6_K: 32 * s_lo|hi;
VNNI's +128 on signed weights: 128 * s32), then times the row scales; K-quant mins enter as dmin*m*s32.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from sweepbench.cpu_kernels.layouts import IQ4_TABLE
from sweepbench.cpu_kernels.quant_act import REC
from sweepbench.cpu_kernels.simd import (
    W8_OFFSET, bc4, bcf, bits_at, cvt, dot_us, dot_w8, fma, fmul, fsub, hi4, iadd, ld1f, ld16x2, ld32, ldf, ldh, lds8f,
    ldu8f, lo4, lut16, orb, prep_w8, zb, zf, zi,
)

_M8, _M32, _M128 = np.float32(-8.0), np.float32(-32.0), np.float32(-128.0)


@njit(cache=True)
def _fd(s, X, xb):
    """Integer block sum -> d_x * S."""
    return fmul(cvt(s), bcf(ld1f(X, xb + 32)))


@njit(cache=True)
def _fo(s, X, xb, at, off):
    """Unsigned-weight block with an offset: d_x * S + off * (the record's sum at byte ``at``)."""
    return fma(bcf(ld1f(X, xb + at)), bcf(off), _fd(s, X, xb))


@njit(cache=True)
def _f8(s, X, xb):
    """Signed-weight block: d_x * S, minus 128 * s32 where the weights carry +128 (VNNI)."""
    return _fo(s, X, xb, 36, _M128) if W8_OFFSET else _fd(s, X, xb)


# ------------------------------------------------------------------------------------------- Q8_0, MXFP4 (int8)


@njit(cache=True)
def q8_t1(qs, g, K, X, r, f32s):
    """Q8_0 (f16 scales) or the MXFP4 expansion (``f32s``: float32 scales)."""
    nb, sb = K // 32, 32 if f32s else 16
    bb = sb + 256
    qg, xr = g * nb * bb, r * nb * REC
    acc = zf()
    for b in range(nb):
        bo, xb = qg + bb * b, xr + REC * b
        wo = bo + sb
        s0, s1 = zi(), zi()
        for v in range(0, 8, 2):
            w0, w1 = ld32(qs, wo + 32 * v), ld32(qs, wo + 32 * v + 32)
            s0 = dot_w8(s0, prep_w8(w0), w0, bc4(X, xb + 4 * v))
            s1 = dot_w8(s1, prep_w8(w1), w1, bc4(X, xb + 4 * v + 4))
        d = ldf(qs, bo) if f32s else ldh(qs, bo)
        acc = fma(_f8(iadd(s0, s1), X, xb), d, acc)
    return acc


@njit(cache=True)
def q8_t4(qs, g, K, X, r, f32s):
    nb, sb = K // 32, 32 if f32s else 16
    bb = sb + 256
    qg, rb = g * nb * bb, nb * REC
    a0, a1, a2, a3 = zf(), zf(), zf(), zf()
    for b in range(nb):
        bo = qg + bb * b
        wo = bo + sb
        x0 = r * rb + REC * b
        x1, x2, x3 = x0 + rb, x0 + 2 * rb, x0 + 3 * rb
        s0, s1, s2, s3, u0, u1, u2, u3 = zi(), zi(), zi(), zi(), zi(), zi(), zi(), zi()
        for v in range(0, 8, 2):
            w = ld32(qs, wo + 32 * v)
            wp = prep_w8(w)
            s0, s1 = dot_w8(s0, wp, w, bc4(X, x0 + 4 * v)), dot_w8(s1, wp, w, bc4(X, x1 + 4 * v))
            s2, s3 = dot_w8(s2, wp, w, bc4(X, x2 + 4 * v)), dot_w8(s3, wp, w, bc4(X, x3 + 4 * v))
            w = ld32(qs, wo + 32 * v + 32)
            wp = prep_w8(w)
            u0, u1 = dot_w8(u0, wp, w, bc4(X, x0 + 4 * v + 4)), dot_w8(u1, wp, w, bc4(X, x1 + 4 * v + 4))
            u2, u3 = dot_w8(u2, wp, w, bc4(X, x2 + 4 * v + 4)), dot_w8(u3, wp, w, bc4(X, x3 + 4 * v + 4))
        d = ldf(qs, bo) if f32s else ldh(qs, bo)
        a0, a1 = fma(_f8(iadd(s0, u0), X, x0), d, a0), fma(_f8(iadd(s1, u1), X, x1), d, a1)
        a2, a3 = fma(_f8(iadd(s2, u2), X, x2), d, a2), fma(_f8(iadd(s3, u3), X, x3), d, a3)
    return a0, a1, a2, a3


# ------------------------------------------------------------------------------------------- Q4_0


@njit(cache=True)
def q4_0_t1(qs, g, K, X, r):
    nb = K // 32
    qg, xr = g * nb * 144, r * nb * REC
    acc = zf()
    for b in range(nb):
        bo, xb = qg + 144 * b, xr + REC * b
        wo = bo + 16
        s0, s1 = zi(), zi()
        for v in range(4):
            w = ld32(qs, wo + 32 * v)
            s0 = dot_us(s0, lo4(w), bc4(X, xb + 4 * v))
            s1 = dot_us(s1, hi4(w), bc4(X, xb + 16 + 4 * v))
        acc = fma(_fo(iadd(s0, s1), X, xb, 36, _M8), ldh(qs, bo), acc)
    return acc


@njit(cache=True)
def q4_0_t4(qs, g, K, X, r):
    nb = K // 32
    qg, rb = g * nb * 144, nb * REC
    a0, a1, a2, a3 = zf(), zf(), zf(), zf()
    for b in range(nb):
        bo = qg + 144 * b
        wo = bo + 16
        x0 = r * rb + REC * b
        x1, x2, x3 = x0 + rb, x0 + 2 * rb, x0 + 3 * rb
        s0, s1, s2, s3, u0, u1, u2, u3 = zi(), zi(), zi(), zi(), zi(), zi(), zi(), zi()
        for v in range(4):
            w = ld32(qs, wo + 32 * v)
            n, m = lo4(w), hi4(w)
            s0, s1 = dot_us(s0, n, bc4(X, x0 + 4 * v)), dot_us(s1, n, bc4(X, x1 + 4 * v))
            s2, s3 = dot_us(s2, n, bc4(X, x2 + 4 * v)), dot_us(s3, n, bc4(X, x3 + 4 * v))
            u0, u1 = dot_us(u0, m, bc4(X, x0 + 16 + 4 * v)), dot_us(u1, m, bc4(X, x1 + 16 + 4 * v))
            u2, u3 = dot_us(u2, m, bc4(X, x2 + 16 + 4 * v)), dot_us(u3, m, bc4(X, x3 + 16 + 4 * v))
        d = ldh(qs, bo)
        a0, a1 = fma(_fo(iadd(s0, u0), X, x0, 36, _M8), d, a0), fma(_fo(iadd(s1, u1), X, x1, 36, _M8), d, a1)
        a2, a3 = fma(_fo(iadd(s2, u2), X, x2, 36, _M8), d, a2), fma(_fo(iadd(s3, u3), X, x3, 36, _M8), d, a3)
    return a0, a1, a2, a3


# ------------------------------------------------------------------------------------------- Q4_K, Q5_K
# Per 32-value sub-block j: scale d*sc_j and min dmin*m_j of the 8 rows, formed once and shared by the tokens.
# 5th bits (Q5_K) sit in a plane after the nibbles: bit v of byte 4r+i of sub-block j's 32 bytes.
# The helpers are inlined (``inline='always'``) and called with constant ``half`` / ``five`` only, so the selects
# fold away (measured 157 -> 207 GOP/s on one core for Q4_K against a run-time select per vector).


@njit(cache=True, inline="always")
def _nib(w, h, v, half, five):
    """The 4-bit (Q5_K: 5-bit) quants of vector v of a sub-block from its nibble pair vector w and plane h."""
    n = hi4(w) if half else lo4(w)
    return orb(n, bits_at(h, v, 1, 4)) if five else n


@njit(cache=True, inline="always")
def _qk_pair1(qs, qo, p, X, xa, ha, hb, five):
    """Sub-blocks 2p (low nibbles) and 2p+1 (high nibbles) against one token: each vector loaded once and
    used for both, two chains per sub-block. Returns the two integer sums."""
    sa, ta, sb, tb = zi(), zi(), zi(), zi()
    for v in range(0, 8, 2):
        w0, w1 = ld32(qs, qo + 256 * p + 32 * v), ld32(qs, qo + 256 * p + 32 * v + 32)
        sa = dot_us(sa, _nib(w0, ha, v, False, five), bc4(X, xa + 4 * v))
        ta = dot_us(ta, _nib(w1, ha, v + 1, False, five), bc4(X, xa + 4 * v + 4))
        sb = dot_us(sb, _nib(w0, hb, v, True, five), bc4(X, xa + REC + 4 * v))
        tb = dot_us(tb, _nib(w1, hb, v + 1, True, five), bc4(X, xa + REC + 4 * v + 4))
    return iadd(sa, ta), iadd(sb, tb)


@njit(cache=True, inline="always")
def _qk_sub4(qs, qo, p, X, x0, x1, x2, x3, h, half, five):
    """One sub-block against 4 tokens: each decoded vector serves the 4, two chains per token."""
    s0, s1, s2, s3, u0, u1, u2, u3 = zi(), zi(), zi(), zi(), zi(), zi(), zi(), zi()
    for v in range(0, 8, 2):
        n = _nib(ld32(qs, qo + 256 * p + 32 * v), h, v, half, five)
        s0, s1 = dot_us(s0, n, bc4(X, x0 + 4 * v)), dot_us(s1, n, bc4(X, x1 + 4 * v))
        s2, s3 = dot_us(s2, n, bc4(X, x2 + 4 * v)), dot_us(s3, n, bc4(X, x3 + 4 * v))
        n = _nib(ld32(qs, qo + 256 * p + 32 * v + 32), h, v + 1, half, five)
        u0, u1 = dot_us(u0, n, bc4(X, x0 + 4 * v + 4)), dot_us(u1, n, bc4(X, x1 + 4 * v + 4))
        u2, u3 = dot_us(u2, n, bc4(X, x2 + 4 * v + 4)), dot_us(u3, n, bc4(X, x3 + 4 * v + 4))
    return iadd(s0, u0), iadd(s1, u1), iadd(s2, u2), iadd(s3, u3)


@njit(cache=True)
def qk_t1(qs, g, K, X, r, five):
    """Per super-block: sum_j sc_j (d_x S_j) and sum_j m_j s32_j as float vectors, times d and dmin once
    (two multiplies per super-block instead of two per sub-block); each weight vector serves the low and the
    high nibbles of a sub-block pair."""
    ns, nb = K // 256, K // 32
    bb = 1440 if five else 1184  # 160 scale bytes, then the quants (and Q5_K's plane)
    qg, xr = g * ns * bb, r * nb * REC
    acc = zf()
    for s in range(ns):
        so = qg + bb * s
        qo = so + 160
        cs, cm = zf(), zf()
        for p in range(4):
            xa = xr + REC * (8 * s + 2 * p)
            if five:  # Q4_K has no plane: never read past its super-block
                ta, tb = _qk_pair1(qs, qo, p, X, xa, ld32(qs, qo + 1024 + 64 * p), ld32(qs, qo + 1056 + 64 * p), True)
            else:
                ta, tb = _qk_pair1(qs, qo, p, X, xa, zb(), zb(), False)
            cs = fma(_fd(ta, X, xa), ldu8f(qs, so + 32 + 16 * p), cs)
            cs = fma(_fd(tb, X, xa + REC), ldu8f(qs, so + 40 + 16 * p), cs)
            cm = fma(bcf(ld1f(X, xa + 36)), ldu8f(qs, so + 96 + 16 * p), cm)
            cm = fma(bcf(ld1f(X, xa + REC + 36)), ldu8f(qs, so + 104 + 16 * p), cm)
        acc = fsub(fma(ldh(qs, so), cs, acc), fmul(ldh(qs, so + 16), cm))
    return acc


@njit(cache=True)
def qk_t4(qs, g, K, X, r, five):
    ns, nb = K // 256, K // 32
    bb = 1440 if five else 1184
    qg, rb = g * ns * bb, nb * REC
    a0, a1, a2, a3 = zf(), zf(), zf(), zf()
    for s in range(ns):
        so = qg + bb * s
        qo = so + 160
        d, dm = ldh(qs, so), ldh(qs, so + 16)
        for j in range(8):
            p, bj = j // 2, REC * (8 * s + j)
            x0 = r * rb + bj
            x1, x2, x3 = x0 + rb, x0 + 2 * rb, x0 + 3 * rb
            if five:
                h = ld32(qs, qo + 1024 + 32 * j)
                if j % 2 == 0:
                    t0, t1, t2, t3 = _qk_sub4(qs, qo, p, X, x0, x1, x2, x3, h, False, True)
                else:
                    t0, t1, t2, t3 = _qk_sub4(qs, qo, p, X, x0, x1, x2, x3, h, True, True)
            elif j % 2 == 0:
                t0, t1, t2, t3 = _qk_sub4(qs, qo, p, X, x0, x1, x2, x3, zb(), False, False)
            else:
                t0, t1, t2, t3 = _qk_sub4(qs, qo, p, X, x0, x1, x2, x3, zb(), True, False)
            dsc, dmn = fmul(d, ldu8f(qs, so + 32 + 8 * j)), fmul(dm, ldu8f(qs, so + 96 + 8 * j))
            a0 = fma(bcf(-ld1f(X, x0 + 36)), dmn, fma(_fd(t0, X, x0), dsc, a0))
            a1 = fma(bcf(-ld1f(X, x1 + 36)), dmn, fma(_fd(t1, X, x1), dsc, a1))
            a2 = fma(bcf(-ld1f(X, x2 + 36)), dmn, fma(_fd(t2, X, x2), dsc, a2))
            a3 = fma(bcf(-ld1f(X, x3 + 36)), dmn, fma(_fd(t3, X, x3), dsc, a3))
    return a0, a1, a2, a3


# ------------------------------------------------------------------------------------------- Q6_K
# q = nibble | 2 top bits << 4 in 0..63, value d * sc * (q - 32); 16-value sub-blocks: vectors 0-3 and 4-7 of
# a 32-value chunk have their own scale (and their own activation sum s_lo / s_hi).


@njit(cache=True)
def q6_t1(qs, g, K, X, r):
    ns, nb = K // 256, K // 32
    qg, xr = g * ns * 1680, r * nb * REC  # per super-block: 144 scale bytes, then 1536 of quants
    acc = zf()
    for s in range(ns):
        so = qg + 1680 * s
        qo = so + 144
        d = ldh(qs, so)
        for c in range(8):
            p, half = c // 2, c % 2
            xb = xr + REC * (8 * s + c)
            h0, h1 = ld32(qs, qo + 1024 + 64 * c), ld32(qs, qo + 1024 + 64 * c + 32)
            s0, s1, t0, t1 = zi(), zi(), zi(), zi()
            for v in range(0, 4, 2):
                for k in range(2):
                    w0, w1 = ld32(qs, qo + 256 * p + 32 * (v + k)), ld32(qs, qo + 256 * p + 32 * (v + k) + 128)
                    n0 = orb(hi4(w0) if half else lo4(w0), bits_at(h0, 2 * (v + k), 3, 4))
                    n1 = orb(hi4(w1) if half else lo4(w1), bits_at(h1, 2 * (v + k), 3, 4))
                    if k == 0:
                        s0, s1 = dot_us(s0, n0, bc4(X, xb + 4 * v)), dot_us(s1, n1, bc4(X, xb + 16 + 4 * v))
                    else:
                        t0, t1 = dot_us(t0, n0, bc4(X, xb + 4 * v + 4)), dot_us(t1, n1, bc4(X, xb + 20 + 4 * v))
            acc = fma(_fo(iadd(s0, t0), X, xb, 40, _M32), fmul(d, lds8f(qs, so + 16 + 16 * c)), acc)
            acc = fma(_fo(iadd(s1, t1), X, xb, 44, _M32), fmul(d, lds8f(qs, so + 24 + 16 * c)), acc)
    return acc


@njit(cache=True)
def q6_t4(qs, g, K, X, r):
    ns, nb = K // 256, K // 32
    qg, rb = g * ns * 1680, nb * REC
    a0, a1, a2, a3 = zf(), zf(), zf(), zf()
    for s in range(ns):
        so = qg + 1680 * s
        qo = so + 144
        d = ldh(qs, so)
        for c in range(8):
            p, half = c // 2, c % 2
            bc = REC * (8 * s + c)
            x0 = r * rb + bc
            x1, x2, x3 = x0 + rb, x0 + 2 * rb, x0 + 3 * rb
            for u in range(2):
                h = ld32(qs, qo + 1024 + 64 * c + 32 * u)
                s0, s1, s2, s3, t0, t1, t2, t3 = zi(), zi(), zi(), zi(), zi(), zi(), zi(), zi()
                for v in range(0, 4, 2):
                    o = 16 * u + 4 * v
                    w = ld32(qs, qo + 256 * p + 32 * (4 * u + v))
                    n = orb(hi4(w) if half else lo4(w), bits_at(h, 2 * v, 3, 4))
                    s0, s1 = dot_us(s0, n, bc4(X, x0 + o)), dot_us(s1, n, bc4(X, x1 + o))
                    s2, s3 = dot_us(s2, n, bc4(X, x2 + o)), dot_us(s3, n, bc4(X, x3 + o))
                    w = ld32(qs, qo + 256 * p + 32 * (4 * u + v + 1))
                    n = orb(hi4(w) if half else lo4(w), bits_at(h, 2 * v + 2, 3, 4))
                    t0, t1 = dot_us(t0, n, bc4(X, x0 + o + 4)), dot_us(t1, n, bc4(X, x1 + o + 4))
                    t2, t3 = dot_us(t2, n, bc4(X, x2 + o + 4)), dot_us(t3, n, bc4(X, x3 + o + 4))
                dsc = fmul(d, lds8f(qs, so + 16 + 16 * c + 8 * u))
                at = 40 + 4 * u
                a0, a1 = fma(_fo(iadd(s0, t0), X, x0, at, _M32), dsc, a0), fma(_fo(iadd(s1, t1), X, x1, at, _M32), dsc, a1)
                a2, a3 = fma(_fo(iadd(s2, t2), X, x2, at, _M32), dsc, a2), fma(_fo(iadd(s3, t3), X, x3, at, _M32), dsc, a3)
    return a0, a1, a2, a3


# ------------------------------------------------------------------------------------------- IQ4_XS
# Nibbles index the non-linear IQ4_NL table (vpshufb); values are signed, so they take the int8 weight path.


@njit(cache=True)
def iq4_t1(qs, g, K, X, r):
    ns, nb = K // 256, K // 32
    qg, xr = g * ns * 1104, r * nb * REC  # per super-block: 80 scale bytes, then 1024 of nibbles
    tab = ld16x2(IQ4_TABLE, 0)
    acc = zf()
    for s in range(ns):
        so = qg + 1104 * s
        qo = so + 80
        d = ldh(qs, so)
        for p in range(4):
            xa = xr + REC * (8 * s + 2 * p)
            sa, sb = zi(), zi()
            for v in range(8):
                w = ld32(qs, qo + 256 * p + 32 * v)
                wa, wb = lut16(tab, lo4(w)), lut16(tab, hi4(w))
                sa = dot_w8(sa, prep_w8(wa), wa, bc4(X, xa + 4 * v))
                sb = dot_w8(sb, prep_w8(wb), wb, bc4(X, xa + REC + 4 * v))
            acc = fma(_f8(sa, X, xa), fmul(d, lds8f(qs, so + 16 + 16 * p)), acc)
            acc = fma(_f8(sb, X, xa + REC), fmul(d, lds8f(qs, so + 24 + 16 * p)), acc)
    return acc


@njit(cache=True)
def iq4_t4(qs, g, K, X, r):
    ns, nb = K // 256, K // 32
    qg, rb = g * ns * 1104, nb * REC
    tab = ld16x2(IQ4_TABLE, 0)
    a0, a1, a2, a3 = zf(), zf(), zf(), zf()
    for s in range(ns):
        so = qg + 1104 * s
        qo = so + 80
        d = ldh(qs, so)
        for j in range(8):
            p, half = j // 2, j % 2
            bj = REC * (8 * s + j)
            x0 = r * rb + bj
            x1, x2, x3 = x0 + rb, x0 + 2 * rb, x0 + 3 * rb
            s0, s1, s2, s3, u0, u1, u2, u3 = zi(), zi(), zi(), zi(), zi(), zi(), zi(), zi()
            for v in range(0, 8, 2):
                w = ld32(qs, qo + 256 * p + 32 * v)
                wv = lut16(tab, hi4(w) if half else lo4(w))
                wp = prep_w8(wv)
                s0, s1 = dot_w8(s0, wp, wv, bc4(X, x0 + 4 * v)), dot_w8(s1, wp, wv, bc4(X, x1 + 4 * v))
                s2, s3 = dot_w8(s2, wp, wv, bc4(X, x2 + 4 * v)), dot_w8(s3, wp, wv, bc4(X, x3 + 4 * v))
                w = ld32(qs, qo + 256 * p + 32 * v + 32)
                wv = lut16(tab, hi4(w) if half else lo4(w))
                wp = prep_w8(wv)
                u0, u1 = dot_w8(u0, wp, wv, bc4(X, x0 + 4 * v + 4)), dot_w8(u1, wp, wv, bc4(X, x1 + 4 * v + 4))
                u2, u3 = dot_w8(u2, wp, wv, bc4(X, x2 + 4 * v + 4)), dot_w8(u3, wp, wv, bc4(X, x3 + 4 * v + 4))
            dls = fmul(d, lds8f(qs, so + 16 + 8 * j))
            a0, a1 = fma(_f8(iadd(s0, u0), X, x0), dls, a0), fma(_f8(iadd(s1, u1), X, x1), dls, a1)
            a2, a3 = fma(_f8(iadd(s2, u2), X, x2), dls, a2), fma(_f8(iadd(s3, u3), X, x3), dls, a3)
    return a0, a1, a2, a3
