"""Dot products of one 32-value block ("chunk") of a weight row with one activation row, per weight type.

Quantized weights meet q8_1 activations, as ggml's MMVQ does: ``xq`` holds the int8 values (4 to a uint32 word),
``xa`` per block the pair (d, s) with x ~= d * q and s = d * sum(q). Integer dot products run four bytes at a time
(dp4a); the block scales are applied once per block in float32. Float weights (f16, f32) meet the float32
activation ``xf`` instead, so F16 models compute exactly.

Every function: (qs, hdr, row, c, K, xq, xa, xf, t) -> float32, where qs / hdr are the flat device arrays of
``layout`` and t the activation row (token, or routed row). Chunk c covers values 32c .. 32c+31 of the row.
"""
from __future__ import annotations

import numpy as np

from cuda_kernels.env import device, dp4a, ldg4, ldg4f, prmt, unpack_h2

U32 = np.uint32
LO4 = U32(0x0F0F0F0F)


@device
def _x8(xq, K, t, c):
    """The 8 activation words of chunk c of row t."""
    xo = t * (K // 4) + c * 8
    a0, a1, a2, a3 = ldg4(xq, xo)
    a4, a5, a6, a7 = ldg4(xq, xo + 4)
    return a0, a1, a2, a3, a4, a5, a6, a7


@device
def _byte(w, k):
    return (w >> U32(8 * k)) & U32(0xFF)


@device
def dot_q8_0(qs, hdr, row, c, K, xq, xa, xf, t):  # qs [rows, K/4], hdr [rows, ceil(B/2)]
    x0, x1, x2, x3, x4, x5, x6, x7 = _x8(xq, K, t, c)
    base = row * (K // 4) + c * 8
    w0, w1, w2, w3 = ldg4(qs, base)
    w4, w5, w6, w7 = ldg4(qs, base + 4)
    s = dp4a(w0, x0, np.int32(0))
    s = dp4a(w1, x1, s)
    s = dp4a(w2, x2, s)
    s = dp4a(w3, x3, s)
    s = dp4a(w4, x4, s)
    s = dp4a(w5, x5, s)
    s = dp4a(w6, x6, s)
    s = dp4a(w7, x7, s)
    nb = K // 32
    dlo, dhi = unpack_h2(hdr[row * ((nb + 1) // 2) + c // 2])
    d = dhi if c & 1 else dlo
    a = t * (2 * nb) + 2 * c
    return np.float32(d * xa[a] * np.float32(s))


@device
def _s8(b):
    """A byte (0..255) read as int8, as float32."""
    v = np.int32(b)
    return np.float32(v - 256 if v > 127 else v)


@device
def _k_scale_min(hdr, hb, j):
    """Q4_K 6-bit (scale, min) of sub-block j from the 12 scale bytes at hdr words hb+1 .. hb+3."""
    s0, s1, s2 = hdr[hb + 1], hdr[hb + 2], hdr[hb + 3]  # bytes 0-3, 4-7, 8-11
    if j < 4:
        sc = _byte(s0, j) & U32(63)
        m = _byte(s1, j) & U32(63)
    else:
        sc = (_byte(s2, j - 4) & U32(0xF)) | ((_byte(s0, j - 4) >> U32(6)) << U32(4))
        m = (_byte(s2, j - 4) >> U32(4)) | ((_byte(s1, j - 4) >> U32(6)) << U32(4))
    return np.float32(sc), np.float32(m)


@device
def q4_k_scale_min(hdr, row, c, K):
    """(d * scale, dmin * min) of Q4_K chunk c (32 values) of a row: value = first * q - second."""
    sb, j = c // 8, c % 8
    hb = row * (K // 64) + sb * 4
    d, dmin = unpack_h2(hdr[hb])
    sc, m = _k_scale_min(hdr, hb, j)
    return d * sc, dmin * m


@device
def dot_q4_k(qs, hdr, row, c, K, xq, xa, xf, t):  # qs [rows, K/8], hdr [rows, 4K/256]
    x0, x1, x2, x3, x4, x5, x6, x7 = _x8(xq, K, t, c)
    sb, j = c // 8, c % 8
    base = row * (K // 8) + sb * 32 + (j // 2) * 8
    sh = U32(4 * (j & 1))
    w0, w1, w2, w3 = ldg4(qs, base)
    w4, w5, w6, w7 = ldg4(qs, base + 4)
    s = dp4a((w0 >> sh) & LO4, x0, np.int32(0))
    s = dp4a((w1 >> sh) & LO4, x1, s)
    s = dp4a((w2 >> sh) & LO4, x2, s)
    s = dp4a((w3 >> sh) & LO4, x3, s)
    s = dp4a((w4 >> sh) & LO4, x4, s)
    s = dp4a((w5 >> sh) & LO4, x5, s)
    s = dp4a((w6 >> sh) & LO4, x6, s)
    s = dp4a((w7 >> sh) & LO4, x7, s)
    scale, off = q4_k_scale_min(hdr, row, c, K)
    a = t * (K // 16) + 2 * c
    return np.float32(scale * xa[a] * np.float32(s) - off * xa[a + 1])


@device
def _q6(ql, qh, shl, shh):
    """4 Q6_K values (unsigned, 0..63) from a ql word (nibble at shl) and a qh word (2 bits at shh)."""
    return ((ql >> shl) & LO4) | (((qh >> shh) & U32(0x03030303)) << U32(4))


@device
def dot_q6_k(qs, hdr, row, c, K, xq, xa, xf, t):  # qs [rows, 48K/256], hdr [rows, 5K/256]
    x0, x1, x2, x3, x4, x5, x6, x7 = _x8(xq, K, t, c)
    sb, j = c // 8, c % 8
    h, q = j // 4, j % 4
    blk = row * (K // 256) * 48 + sb * 48
    lb = blk + h * 16 + (q % 2) * 8  # ql: 32 words per superblock, 16 per half
    hb = blk + 32 + h * 8  # qh: 16 words per superblock, 8 per half
    shl, shh = U32(4 * (q // 2)), U32(2 * q)
    l0, l1, l2, l3 = ldg4(qs, lb)
    l4, l5, l6, l7 = ldg4(qs, lb + 4)
    h0, h1, h2, h3 = ldg4(qs, hb)
    h4, h5, h6, h7 = ldg4(qs, hb + 4)
    k32 = U32(0x20202020)
    sa = dp4a(_q6(l0, h0, shl, shh), x0, np.int32(0))
    sa = dp4a(_q6(l1, h1, shl, shh), x1, sa)
    sa = dp4a(_q6(l2, h2, shl, shh), x2, sa)
    sa = dp4a(_q6(l3, h3, shl, shh), x3, sa)
    ma = dp4a(k32, x0, np.int32(0))  # 32 * sum(x): the -32 offset of the quants
    ma = dp4a(k32, x1, ma)
    ma = dp4a(k32, x2, ma)
    ma = dp4a(k32, x3, ma)
    sb2 = dp4a(_q6(l4, h4, shl, shh), x4, np.int32(0))
    sb2 = dp4a(_q6(l5, h5, shl, shh), x5, sb2)
    sb2 = dp4a(_q6(l6, h6, shl, shh), x6, sb2)
    sb2 = dp4a(_q6(l7, h7, shl, shh), x7, sb2)
    mb = dp4a(k32, x4, np.int32(0))
    mb = dp4a(k32, x5, mb)
    mb = dp4a(k32, x6, mb)
    mb = dp4a(k32, x7, mb)
    hd = row * (K // 256) * 5 + sb * 5
    sw = hdr[hd + j // 2]  # scale bytes 2j, 2j+1 of this chunk's two 16-value halves
    k0 = (j % 2) * 2
    sc0 = _s8(_byte(sw, k0))
    sc1 = _s8(_byte(sw, k0 + 1))
    d, _pad = unpack_h2(hdr[hd + 4])
    a = t * (K // 16) + 2 * c
    return np.float32(d * xa[a] * (sc0 * np.float32(sa - ma) + sc1 * np.float32(sb2 - mb)))


# IQ4_NL's 16 int8 values as four little-endian words: entries 0-3, 4-7, 8-11, 12-15
IQ4_T0, IQ4_T1, IQ4_T2, IQ4_T3 = U32(0xBFAD9881), U32(0xF6EADDCF), U32(0x26190D01), U32(0x71594535)


@device
def _iq4(n):
    """4 nibbles (one per byte of n, values 0..15) -> their 4 IQ4_NL int8 values as one word."""
    t = n | (n >> U32(4))
    sel = (t & U32(0xFF)) | ((t >> U32(8)) & U32(0xFF00))  # the 4 indices as 4 selector nibbles
    lo = prmt(IQ4_T0, IQ4_T1, sel & U32(0x7777))
    hi = prmt(IQ4_T2, IQ4_T3, sel & U32(0x7777))
    mask = ((n >> U32(3)) & U32(0x01010101)) * U32(0xFF)  # bytes whose index is >= 8
    return (lo & ~mask) | (hi & mask)


@device
def iq4_xs_scale_of_words(h0, h1, j):
    """The float32 scale d * (ls - 32) of sub-block j from a super-block's two header words: h0 = d | scales_h
    << 16, h1 = the 4-bit scales_l."""
    d, _sh = unpack_h2(h0)
    ls = ((_byte(h1, j // 2) >> U32(4 * (j % 2))) & U32(0xF)) | (((h0 >> U32(16 + 2 * j)) & U32(3)) << U32(4))
    return d * np.float32(np.int32(ls) - 32)


@device
def iq4_xs_scale(hdr, row, c, K):
    """The float32 scale of IQ4_XS chunk c (32 values) of a row; hdr [rows, 2K/256]: two words per super-block."""
    hb = row * (K // 128) + (c // 8) * 2
    return iq4_xs_scale_of_words(hdr[hb], hdr[hb + 1], c % 8)


@device
def dot_iq4_xs(qs, hdr, row, c, K, xq, xa, xf, t):  # qs [rows, K/8], hdr [rows, 2K/256]
    x0, x1, x2, x3, x4, x5, x6, x7 = _x8(xq, K, t, c)
    sb, j = c // 8, c % 8
    w0, w1, w2, w3 = ldg4(qs, row * (K // 8) + sb * 32 + j * 4)
    s = dp4a(_iq4(w0 & LO4), x0, np.int32(0))
    s = dp4a(_iq4(w1 & LO4), x1, s)
    s = dp4a(_iq4(w2 & LO4), x2, s)
    s = dp4a(_iq4(w3 & LO4), x3, s)
    s = dp4a(_iq4((w0 >> U32(4)) & LO4), x4, s)
    s = dp4a(_iq4((w1 >> U32(4)) & LO4), x5, s)
    s = dp4a(_iq4((w2 >> U32(4)) & LO4), x6, s)
    s = dp4a(_iq4((w3 >> U32(4)) & LO4), x7, s)
    a = t * (K // 16) + 2 * c
    return np.float32(iq4_xs_scale(hdr, row, c, K) * xa[a] * np.float32(s))


@device
def _f16x8(w0, w1, w2, w3, xf, fo):
    """8 f16 weights (4 words) times xf[fo .. fo+8]."""
    a, b = unpack_h2(w0)
    acc = a * xf[fo] + b * xf[fo + 1]
    a, b = unpack_h2(w1)
    acc += a * xf[fo + 2] + b * xf[fo + 3]
    a, b = unpack_h2(w2)
    acc += a * xf[fo + 4] + b * xf[fo + 5]
    a, b = unpack_h2(w3)
    acc += a * xf[fo + 6] + b * xf[fo + 7]
    return acc


@device
def dot_f16(qs, hdr, row, c, K, xq, xa, xf, t):  # qs [rows, K/2] f16 pairs; xf float32 rows
    base = row * (K // 2) + c * 16
    fo = t * K + c * 32
    acc = np.float32(0)
    for v in range(4):
        w0, w1, w2, w3 = ldg4(qs, base + 4 * v)
        acc += _f16x8(w0, w1, w2, w3, xf, fo + 8 * v)
    return acc


@device
def dot_f32(qs, hdr, row, c, K, xq, xa, xf, t):  # qs [rows, K] float32
    base = row * K + c * 32
    fo = t * K + c * 32
    acc = np.float32(0)
    for v in range(8):  # 16-byte loads of weights and activations: sixteen in flight per lane
        w0, w1, w2, w3 = ldg4f(qs, base + 4 * v)
        x0, x1, x2, x3 = ldg4f(xf, fo + 4 * v)
        acc += w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3
    return acc


DOTS = {"q8_0": dot_q8_0, "q4_k": dot_q4_k, "q6_k": dot_q6_k, "iq4_xs": dot_iq4_xs, "f16": dot_f16, "f32": dot_f32}
QUANTIZED = frozenset({"q8_0", "q4_k", "q6_k", "iq4_xs"})  # these read q8_1 activations; f16 / f32 read floats
