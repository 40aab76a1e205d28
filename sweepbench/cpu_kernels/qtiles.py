"""Register tiles of the R8 layouts (``layouts.py``): 8 weight rows x 1 or 4 tokens -> one V8F per token.

``t1``: the decode (GEMV) tile, two independent integer chains so that the dot latency hides.
``t4``: the prefill (GEMM) tile: each weight vector is decoded once and used for 4 tokens.

Arguments, shared by every type (one matrix of the stack):
    qs, sc   uint8 [G*QB], [G*SB]      repacked quants and scales (byte offsets below)
    g, K     row group, row length
    X        int8 [rows*K]             quantized activations (``quant_act``), row-major
    XD, XS   f32 [rows*K/32], [rows*K/16]   their block scales and half-block sums d*sum(q)
    r, r0-r3 activation rows
Per block the integer sums S become floats once: d_w * (d_x * S - offset * d_x * sum(q_x)) with the offset
of the format (Q4_0: 8; Q6_K: 32 per 16; VNNI's +128 on signed weights), K-quant mins enter as dmin*m*sum(x).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from sweepbench.cpu_kernels.layouts import IQ4_TABLE
from sweepbench.cpu_kernels.simd import (
    W8_OFFSET, bc4, bcf, bits_at, cvt, dot_us, dot_w8, fma, fmul, fsub, hi4, iadd, ld16x2, ld32, ldf, ldh, lds8f,
    ldu8f, lo4, lut16, orb, prep_w8, zb, zf, zi,
)

OFF8 = np.float32(128.0 if W8_OFFSET else 0.0)  # subtracted per block from signed-weight dots


@njit(cache=True)
def _xs32(XS, bi):
    return XS[2 * bi] + XS[2 * bi + 1]


@njit(cache=True)
def _f8(s, XD, XS, bi):
    """Integer dot of a signed-weight block -> float times d_x, the VNNI offset removed."""
    return fsub(fmul(cvt(s), bcf(XD[bi])), bcf(OFF8 * _xs32(XS, bi)))


# ------------------------------------------------------------------------------------------- Q8_0, MXFP4 (int8)


@njit(cache=True)
def q8_t1(qs, sc, g, K, X, r, XD, XS, f32s):
    """Q8_0 (f16 scales) or the MXFP4 expansion (``f32s``: float32 scales)."""
    nb = K // 32
    qg, sb = g * nb * 256, g * nb * (32 if f32s else 16)
    acc = zf()
    for b in range(nb):
        wo, xb = qg + 256 * b, r * K + 32 * b
        s0, s1 = zi(), zi()
        for v in range(0, 8, 2):
            w0, w1 = ld32(qs, wo + 32 * v), ld32(qs, wo + 32 * v + 32)
            s0 = dot_w8(s0, prep_w8(w0), w0, bc4(X, xb + 4 * v))
            s1 = dot_w8(s1, prep_w8(w1), w1, bc4(X, xb + 4 * v + 4))
        d = ldf(sc, sb + 32 * b) if f32s else ldh(sc, sb + 16 * b)
        acc = fma(_f8(iadd(s0, s1), XD, XS, r * nb + b), d, acc)
    return acc


@njit(cache=True)
def q8_t4(qs, sc, g, K, X, XD, XS, r0, r1, r2, r3, f32s):
    nb = K // 32
    qg, sb = g * nb * 256, g * nb * (32 if f32s else 16)
    a0, a1, a2, a3 = zf(), zf(), zf(), zf()
    for b in range(nb):
        wo, xo = qg + 256 * b, 32 * b
        s0, s1, s2, s3 = zi(), zi(), zi(), zi()
        for v in range(8):
            w = ld32(qs, wo + 32 * v)
            wp = prep_w8(w)
            o = xo + 4 * v
            s0 = dot_w8(s0, wp, w, bc4(X, r0 * K + o))
            s1 = dot_w8(s1, wp, w, bc4(X, r1 * K + o))
            s2 = dot_w8(s2, wp, w, bc4(X, r2 * K + o))
            s3 = dot_w8(s3, wp, w, bc4(X, r3 * K + o))
        d = ldf(sc, sb + 32 * b) if f32s else ldh(sc, sb + 16 * b)
        a0 = fma(_f8(s0, XD, XS, r0 * nb + b), d, a0)
        a1 = fma(_f8(s1, XD, XS, r1 * nb + b), d, a1)
        a2 = fma(_f8(s2, XD, XS, r2 * nb + b), d, a2)
        a3 = fma(_f8(s3, XD, XS, r3 * nb + b), d, a3)
    return a0, a1, a2, a3


# ------------------------------------------------------------------------------------------- Q4_0


@njit(cache=True)
def _f4_0(s, XD, XS, bi):
    return fsub(fmul(cvt(s), bcf(XD[bi])), bcf(np.float32(8.0) * _xs32(XS, bi)))


@njit(cache=True)
def q4_0_t1(qs, sc, g, K, X, r, XD, XS):
    nb = K // 32
    qg, sb = g * nb * 128, g * nb * 16
    acc = zf()
    for b in range(nb):
        wo, xb = qg + 128 * b, r * K + 32 * b
        s0, s1 = zi(), zi()
        for v in range(4):
            w = ld32(qs, wo + 32 * v)
            s0 = dot_us(s0, lo4(w), bc4(X, xb + 4 * v))
            s1 = dot_us(s1, hi4(w), bc4(X, xb + 16 + 4 * v))
        acc = fma(_f4_0(iadd(s0, s1), XD, XS, r * nb + b), ldh(sc, sb + 16 * b), acc)
    return acc


@njit(cache=True)
def q4_0_t4(qs, sc, g, K, X, XD, XS, r0, r1, r2, r3):
    nb = K // 32
    qg, sb = g * nb * 128, g * nb * 16
    a0, a1, a2, a3 = zf(), zf(), zf(), zf()
    for b in range(nb):
        wo, xo = qg + 128 * b, 32 * b
        s0, s1, s2, s3 = zi(), zi(), zi(), zi()
        for v in range(8):
            w = ld32(qs, wo + 32 * (v % 4))
            n = lo4(w) if v < 4 else hi4(w)
            o = xo + 4 * v
            s0 = dot_us(s0, n, bc4(X, r0 * K + o))
            s1 = dot_us(s1, n, bc4(X, r1 * K + o))
            s2 = dot_us(s2, n, bc4(X, r2 * K + o))
            s3 = dot_us(s3, n, bc4(X, r3 * K + o))
        d = ldh(sc, sb + 16 * b)
        a0 = fma(_f4_0(s0, XD, XS, r0 * nb + b), d, a0)
        a1 = fma(_f4_0(s1, XD, XS, r1 * nb + b), d, a1)
        a2 = fma(_f4_0(s2, XD, XS, r2 * nb + b), d, a2)
        a3 = fma(_f4_0(s3, XD, XS, r3 * nb + b), d, a3)
    return a0, a1, a2, a3


# ------------------------------------------------------------------------------------------- Q4_K, Q5_K
# 5th bits (Q5_K) sit in a plane after the nibbles: bit v of byte 4r+i of sub-block j's 32 bytes.


@njit(cache=True)
def qk_t1(qs, sc, g, K, X, r, XD, XS, five):
    ns = K // 256
    qb = 1280 if five else 1024
    qg, sg = g * ns * qb, g * ns * 160
    acc = zf()
    for s in range(ns):
        qo, so, xo = qg + qb * s, sg + 160 * s, r * K + 256 * s
        cs, cm = zf(), zf()
        for p in range(4):
            sa, sb = zi(), zi()
            ha, hb = zb(), zb()
            if five:  # Q4_K has no plane: never read past its super-block
                ha, hb = ld32(qs, qo + 1024 + 64 * p), ld32(qs, qo + 1024 + 64 * p + 32)
            for v in range(8):
                w = ld32(qs, qo + 256 * p + 32 * v)
                na, nb_ = lo4(w), hi4(w)
                if five:
                    na, nb_ = orb(na, bits_at(ha, v, 1, 4)), orb(nb_, bits_at(hb, v, 1, 4))
                sa = dot_us(sa, na, bc4(X, xo + 64 * p + 4 * v))
                sb = dot_us(sb, nb_, bc4(X, xo + 64 * p + 32 + 4 * v))
            bi = r * (K // 32) + 8 * s + 2 * p
            cs = fma(fmul(cvt(sa), bcf(XD[bi])), ldu8f(sc, so + 32 + 16 * p), cs)
            cs = fma(fmul(cvt(sb), bcf(XD[bi + 1])), ldu8f(sc, so + 40 + 16 * p), cs)
            cm = fma(ldu8f(sc, so + 96 + 16 * p), bcf(_xs32(XS, bi)), cm)
            cm = fma(ldu8f(sc, so + 104 + 16 * p), bcf(_xs32(XS, bi + 1)), cm)
        acc = fsub(fma(ldh(sc, so), cs, acc), fmul(ldh(sc, so + 16), cm))
    return acc


@njit(cache=True)
def qk_t4(qs, sc, g, K, X, XD, XS, r0, r1, r2, r3, five):
    ns, nb = K // 256, K // 32
    qb = 1280 if five else 1024
    qg, sg = g * ns * qb, g * ns * 160
    a0, a1, a2, a3 = zf(), zf(), zf(), zf()
    for s in range(ns):
        qo, so = qg + qb * s, sg + 160 * s
        c0, c1, c2, c3 = zf(), zf(), zf(), zf()
        m0, m1, m2, m3 = zf(), zf(), zf(), zf()
        for j in range(8):
            p, half = j // 2, j % 2
            h = ld32(qs, qo + 1024 + 32 * j) if five else zb()
            s0, s1, s2, s3 = zi(), zi(), zi(), zi()
            for v in range(8):
                w = ld32(qs, qo + 256 * p + 32 * v)
                n = hi4(w) if half else lo4(w)
                if five:
                    n = orb(n, bits_at(h, v, 1, 4))
                o = 256 * s + 32 * j + 4 * v
                s0 = dot_us(s0, n, bc4(X, r0 * K + o))
                s1 = dot_us(s1, n, bc4(X, r1 * K + o))
                s2 = dot_us(s2, n, bc4(X, r2 * K + o))
                s3 = dot_us(s3, n, bc4(X, r3 * K + o))
            scv, mv = ldu8f(sc, so + 32 + 8 * j), ldu8f(sc, so + 96 + 8 * j)
            bj = 8 * s + j
            c0 = fma(fmul(cvt(s0), bcf(XD[r0 * nb + bj])), scv, c0)
            c1 = fma(fmul(cvt(s1), bcf(XD[r1 * nb + bj])), scv, c1)
            c2 = fma(fmul(cvt(s2), bcf(XD[r2 * nb + bj])), scv, c2)
            c3 = fma(fmul(cvt(s3), bcf(XD[r3 * nb + bj])), scv, c3)
            m0 = fma(mv, bcf(_xs32(XS, r0 * nb + bj)), m0)
            m1 = fma(mv, bcf(_xs32(XS, r1 * nb + bj)), m1)
            m2 = fma(mv, bcf(_xs32(XS, r2 * nb + bj)), m2)
            m3 = fma(mv, bcf(_xs32(XS, r3 * nb + bj)), m3)
        d, dm = ldh(sc, so), ldh(sc, so + 16)
        a0 = fsub(fma(d, c0, a0), fmul(dm, m0))
        a1 = fsub(fma(d, c1, a1), fmul(dm, m1))
        a2 = fsub(fma(d, c2, a2), fmul(dm, m2))
        a3 = fsub(fma(d, c3, a3), fmul(dm, m3))
    return a0, a1, a2, a3


# ------------------------------------------------------------------------------------------- Q6_K
# q = nibble | 2 top bits << 4 in 0..63, value d * sc * (q - 32); 16-value sub-blocks: vectors 0-3 and 4-7 of a
# 32-value chunk have their own scale.


@njit(cache=True)
def _f6(s, XD, XS, bi, half):
    return fsub(fmul(cvt(s), bcf(XD[bi])), bcf(np.float32(32.0) * XS[2 * bi + half]))


@njit(cache=True)
def q6_t1(qs, sc, g, K, X, r, XD, XS):
    ns = K // 256
    qg, sg = g * ns * 1536, g * ns * 144
    acc = zf()
    for s in range(ns):
        qo, so, xo = qg + 1536 * s, sg + 144 * s, r * K + 256 * s
        cs = zf()
        for c in range(8):
            p, half = c // 2, c % 2
            h0, h1 = ld32(qs, qo + 1024 + 64 * c), ld32(qs, qo + 1024 + 64 * c + 32)
            s0, s1 = zi(), zi()
            for v in range(4):
                w0, w1 = ld32(qs, qo + 256 * p + 32 * v), ld32(qs, qo + 256 * p + 32 * v + 128)
                n0 = hi4(w0) if half else lo4(w0)
                n1 = hi4(w1) if half else lo4(w1)
                s0 = dot_us(s0, orb(n0, bits_at(h0, 2 * v, 3, 4)), bc4(X, xo + 32 * c + 4 * v))
                s1 = dot_us(s1, orb(n1, bits_at(h1, 2 * v, 3, 4)), bc4(X, xo + 32 * c + 16 + 4 * v))
            bi = r * (K // 32) + 8 * s + c
            cs = fma(_f6(s0, XD, XS, bi, 0), lds8f(sc, so + 16 + 16 * c), cs)
            cs = fma(_f6(s1, XD, XS, bi, 1), lds8f(sc, so + 24 + 16 * c), cs)
        acc = fma(ldh(sc, so), cs, acc)
    return acc


@njit(cache=True)
def q6_t4(qs, sc, g, K, X, XD, XS, r0, r1, r2, r3):
    ns, nb = K // 256, K // 32
    qg, sg = g * ns * 1536, g * ns * 144
    a0, a1, a2, a3 = zf(), zf(), zf(), zf()
    for s in range(ns):
        qo, so = qg + 1536 * s, sg + 144 * s
        c0, c1, c2, c3 = zf(), zf(), zf(), zf()
        for c in range(8):
            p, half = c // 2, c % 2
            bi = 8 * s + c
            for u in range(2):
                h = ld32(qs, qo + 1024 + 64 * c + 32 * u)
                s0, s1, s2, s3 = zi(), zi(), zi(), zi()
                for v in range(4):
                    w = ld32(qs, qo + 256 * p + 32 * (4 * u + v))
                    n = orb(hi4(w) if half else lo4(w), bits_at(h, 2 * v, 3, 4))
                    o = 256 * s + 32 * c + 16 * u + 4 * v
                    s0 = dot_us(s0, n, bc4(X, r0 * K + o))
                    s1 = dot_us(s1, n, bc4(X, r1 * K + o))
                    s2 = dot_us(s2, n, bc4(X, r2 * K + o))
                    s3 = dot_us(s3, n, bc4(X, r3 * K + o))
                scv = lds8f(sc, so + 16 + 16 * c + 8 * u)
                c0 = fma(_f6(s0, XD, XS, r0 * nb + bi, u), scv, c0)
                c1 = fma(_f6(s1, XD, XS, r1 * nb + bi, u), scv, c1)
                c2 = fma(_f6(s2, XD, XS, r2 * nb + bi, u), scv, c2)
                c3 = fma(_f6(s3, XD, XS, r3 * nb + bi, u), scv, c3)
        d = ldh(sc, so)
        a0, a1, a2, a3 = fma(d, c0, a0), fma(d, c1, a1), fma(d, c2, a2), fma(d, c3, a3)
    return a0, a1, a2, a3


# ------------------------------------------------------------------------------------------- IQ4_XS
# Nibbles index the non-linear IQ4_NL table (vpshufb); values are signed, so they take the int8 weight path.


@njit(cache=True)
def iq4_t1(qs, sc, g, K, X, r, XD, XS):
    ns = K // 256
    qg, sg = g * ns * 1024, g * ns * 80
    tab = ld16x2(IQ4_TABLE, 0)
    acc = zf()
    for s in range(ns):
        qo, so, xo = qg + 1024 * s, sg + 80 * s, r * K + 256 * s
        cs = zf()
        for p in range(4):
            sa, sb = zi(), zi()
            for v in range(8):
                w = ld32(qs, qo + 256 * p + 32 * v)
                wa, wb = lut16(tab, lo4(w)), lut16(tab, hi4(w))
                sa = dot_w8(sa, prep_w8(wa), wa, bc4(X, xo + 64 * p + 4 * v))
                sb = dot_w8(sb, prep_w8(wb), wb, bc4(X, xo + 64 * p + 32 + 4 * v))
            bi = r * (K // 32) + 8 * s + 2 * p
            cs = fma(_f8(sa, XD, XS, bi), lds8f(sc, so + 16 + 16 * p), cs)
            cs = fma(_f8(sb, XD, XS, bi + 1), lds8f(sc, so + 24 + 16 * p), cs)
        acc = fma(ldh(sc, so), cs, acc)
    return acc


@njit(cache=True)
def iq4_t4(qs, sc, g, K, X, XD, XS, r0, r1, r2, r3):
    ns, nb = K // 256, K // 32
    qg, sg = g * ns * 1024, g * ns * 80
    tab = ld16x2(IQ4_TABLE, 0)
    a0, a1, a2, a3 = zf(), zf(), zf(), zf()
    for s in range(ns):
        qo, so = qg + 1024 * s, sg + 80 * s
        c0, c1, c2, c3 = zf(), zf(), zf(), zf()
        for j in range(8):
            p, half = j // 2, j % 2
            s0, s1, s2, s3 = zi(), zi(), zi(), zi()
            for v in range(8):
                w = ld32(qs, qo + 256 * p + 32 * v)
                wv = lut16(tab, hi4(w) if half else lo4(w))
                wp = prep_w8(wv)
                o = 256 * s + 32 * j + 4 * v
                s0 = dot_w8(s0, wp, wv, bc4(X, r0 * K + o))
                s1 = dot_w8(s1, wp, wv, bc4(X, r1 * K + o))
                s2 = dot_w8(s2, wp, wv, bc4(X, r2 * K + o))
                s3 = dot_w8(s3, wp, wv, bc4(X, r3 * K + o))
            lsv = lds8f(sc, so + 16 + 8 * j)
            bj = 8 * s + j
            c0 = fma(_f8(s0, XD, XS, r0 * nb + bj), lsv, c0)
            c1 = fma(_f8(s1, XD, XS, r1 * nb + bj), lsv, c1)
            c2 = fma(_f8(s2, XD, XS, r2 * nb + bj), lsv, c2)
            c3 = fma(_f8(s3, XD, XS, r3 * nb + bj), lsv, c3)
        d = ldh(sc, so)
        a0, a1, a2, a3 = fma(d, c0, a0), fma(d, c1, a1), fma(d, c2, a2), fma(d, c3, a3)
    return a0, a1, a2, a3
