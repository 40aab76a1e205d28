"""Dequantization of one 32-value chunk of a weight row (device layout of ``layout``) to float32.

Used where whole rows are needed as floats: the embedding lookup. Same arithmetic as ``sweepbench.quants``
(d * q for Q8_0, (d*sc) * q - dmin*m for Q4_K, ...), so results agree to the last bit or one rounding (the GPU
may fuse a multiply and an add).

Every function: (qs, hdr, row, c, K, out, o) writes out[o .. o+32] = values 32c .. 32c+31 of the row.
"""
from __future__ import annotations

import numpy as np

from cuda_kernels.env import device, unpack_h2
from cuda_kernels.qdot import IQ4_T0, IQ4_T1, IQ4_T2, IQ4_T3, _byte, _s8, iq4_xs_scale, q4_k_scale_min

U32 = np.uint32


@device
def _s8f(w, k):
    return _s8(_byte(w, k))


@device
def deq_q8_0(qs, hdr, row, c, K, out, o):
    nb = K // 32
    dlo, dhi = unpack_h2(hdr[row * ((nb + 1) // 2) + c // 2])
    d = dhi if c & 1 else dlo
    base = row * (K // 4) + c * 8
    for k in range(8):
        w = qs[base + k]
        for b in range(4):
            out[o + 4 * k + b] = d * _s8f(w, b)


@device
def deq_q4_k(qs, hdr, row, c, K, out, o):
    sb, j = c // 8, c % 8
    scale, off = q4_k_scale_min(hdr, row, c, K)
    base = row * (K // 8) + sb * 32 + (j // 2) * 8
    sh = U32(4 * (j & 1))
    for k in range(8):
        w = qs[base + k] >> sh
        for b in range(4):
            out[o + 4 * k + b] = np.float32((w >> U32(8 * b)) & U32(0xF)) * scale - off


@device
def deq_q6_k(qs, hdr, row, c, K, out, o):
    sb, j = c // 8, c % 8
    h, q = j // 4, j % 4
    blk = row * (K // 256) * 48 + sb * 48
    lb, qb = blk + h * 16 + (q % 2) * 8, blk + 32 + h * 8
    shl, shh = U32(4 * (q // 2)), U32(2 * q)
    hd = row * (K // 256) * 5 + sb * 5
    d, _pad = unpack_h2(hdr[hd + 4])
    sw = hdr[hd + j // 2]
    k0 = (j % 2) * 2
    s0, s1 = d * _s8f(sw, k0), d * _s8f(sw, k0 + 1)
    for k in range(8):
        ql, qh = qs[lb + k] >> shl, qs[qb + k] >> shh
        for b in range(4):
            v = ((ql >> U32(8 * b)) & U32(0xF)) | (((qh >> U32(8 * b)) & U32(3)) << U32(4))
            out[o + 4 * k + b] = (s0 if k < 4 else s1) * np.float32(np.int32(v) - 32)


@device
def _iq4_value(n):
    t = IQ4_T0 if n < 4 else (IQ4_T1 if n < 8 else (IQ4_T2 if n < 12 else IQ4_T3))
    return _s8f(t, n % 4)


@device
def deq_iq4_xs(qs, hdr, row, c, K, out, o):
    sb, j = c // 8, c % 8
    dl = iq4_xs_scale(hdr, row, c, K)
    base = row * (K // 8) + sb * 32 + j * 4
    for k in range(4):
        w = qs[base + k]
        for b in range(4):
            n = (w >> U32(8 * b)) & U32(0xFF)
            out[o + 4 * k + b] = dl * _iq4_value(np.int32(n & U32(0xF)))
            out[o + 16 + 4 * k + b] = dl * _iq4_value(np.int32(n >> U32(4)))


@device
def deq_f16(qs, hdr, row, c, K, out, o):
    base = row * (K // 2) + c * 16
    for k in range(16):
        lo, hi = unpack_h2(qs[base + k])
        out[o + 2 * k] = lo
        out[o + 2 * k + 1] = hi


@device
def deq_f32(qs, hdr, row, c, K, out, o):
    for i in range(32):
        out[o + i] = qs[row * K + c * 32 + i]


DEQUANT = {"q8_0": deq_q8_0, "q4_k": deq_q4_k, "q6_k": deq_q6_k, "iq4_xs": deq_iq4_xs, "f16": deq_f16, "f32": deq_f32}
