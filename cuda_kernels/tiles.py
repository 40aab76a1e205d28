"""Dequantization of 16 weights straight to f16 pairs, for the tensor-core GEMM's shared-memory tiles.

Integer quants become f16 without a float conversion: a byte u (0..255) placed under the exponent byte 0x64 is
the f16 value 1024 + u exactly (prmt), one packed subtraction removes the 1024 (and the quant's offset), one packed
multiply-add applies the block scale (rounded to f16). Two instructions per value instead of an int-to-float
conversion (a quarter-rate instruction) per value.

Every function: (qs, hdr, row, c, half, K, out) fills out[0..8] with the f16 pairs of values
32c + 16*half .. 32c + 16*half + 15 of the weight row (layout of ``layout``).
"""
from __future__ import annotations

import numpy as np

from cuda_kernels.env import device, hfma2, hmul2, hsub2, pack_h2, prmt, unpack_h2
from cuda_kernels.qdot import LO4, _byte, _iq4, _q6, _s8, iq4_xs_scale, q4_k_scale_min

U32 = np.uint32
EXP = U32(0x64646464)  # the exponent byte of f16 1024
SEL01, SEL23 = U32(0x4140), U32(0x4342)  # bytes 0,1 / 2,3 of the first operand, each under an exponent byte
H1024, H1152, H1056 = U32(0x64006400), U32(0x64806480), U32(0x64206420)  # f16 pairs of 1024, 1024+128, 1024+32


@device
def _bytes_to_h2(u, off, scale, out, k):
    """4 unsigned bytes u -> (u - off) * scale as two f16 pairs into out[2k], out[2k+1]."""
    out[2 * k] = hmul2(hsub2(prmt(u, EXP, SEL01), off), scale)
    out[2 * k + 1] = hmul2(hsub2(prmt(u, EXP, SEL23), off), scale)


@device
def q8_pair(word, byte, d):
    """Signed bytes byte, byte+1 (0 or 2) of a q8_0 word (int8 x4) times the scale d -> one f16 pair."""
    s2 = pack_h2(d, d)
    return hmul2(hsub2(prmt(word ^ U32(0x80808080), EXP, SEL01 if byte == 0 else SEL23), H1152), s2)


@device
def h16_q8_0(qs, hdr, row, c, half, K, out):
    nb = K // 32
    dlo, dhi = unpack_h2(hdr[row * ((nb + 1) // 2) + c // 2])
    d = dhi if c & 1 else dlo
    s2 = pack_h2(d, d)
    base = row * (K // 4) + c * 8 + 4 * half
    for k in range(4):
        _bytes_to_h2(qs[base + k] ^ U32(0x80808080), H1152, s2, out, k)  # int8 + 128 as unsigned bytes


@device
def h16_q4_k(qs, hdr, row, c, half, K, out):
    sb, j = c // 8, c % 8
    s, off = q4_k_scale_min(hdr, row, c, K)
    mn = -off
    s2, m2 = pack_h2(s, s), pack_h2(mn, mn)
    base = row * (K // 8) + sb * 32 + (j // 2) * 8 + 4 * half
    sh = U32(4 * (j & 1))
    for k in range(4):
        n = (qs[base + k] >> sh) & LO4
        out[2 * k] = hfma2(hsub2(prmt(n, EXP, SEL01), H1024), s2, m2)
        out[2 * k + 1] = hfma2(hsub2(prmt(n, EXP, SEL23), H1024), s2, m2)


@device
def h16_q6_k(qs, hdr, row, c, half, K, out):
    sb, j = c // 8, c % 8
    h, q = j // 4, j % 4
    blk = row * (K // 256) * 48 + sb * 48
    lb, qb = blk + h * 16 + (q % 2) * 8 + 4 * half, blk + 32 + h * 8 + 4 * half
    shl, shh = U32(4 * (q // 2)), U32(2 * q)
    hd = row * (K // 256) * 5 + sb * 5
    d, _pad = unpack_h2(hdr[hd + 4])
    s = d * _s8(_byte(hdr[hd + j // 2], (j % 2) * 2 + half))  # the scale of this 16-value sub-block
    s2 = pack_h2(s, s)
    for k in range(4):
        _bytes_to_h2(_q6(qs[lb + k], qs[qb + k], shl, shh), H1056, s2, out, k)


@device
def h16_iq4_xs(qs, hdr, row, c, half, K, out):
    sb, j = c // 8, c % 8
    dl = iq4_xs_scale(hdr, row, c, K)
    s2 = pack_h2(dl, dl)
    base = row * (K // 8) + sb * 32 + j * 4
    sh = U32(4 * half)  # low nibbles: values 0..15 of the chunk, high nibbles: 16..31
    for k in range(4):
        _bytes_to_h2(_iq4((qs[base + k] >> sh) & LO4) ^ U32(0x80808080), H1152, s2, out, k)


@device
def h16_f16(qs, hdr, row, c, half, K, out):
    base = row * (K // 2) + c * 16 + 8 * half
    for k in range(8):
        out[k] = qs[base + k]


@device
def h16_f32(qs, hdr, row, c, half, K, out):
    base = row * K + c * 32 + 16 * half
    for k in range(8):
        out[k] = pack_h2(qs[base + 2 * k], qs[base + 2 * k + 1])


H16 = {"q8_0": h16_q8_0, "q4_k": h16_q4_k, "q6_k": h16_q6_k, "iq4_xs": h16_iq4_xs, "f16": h16_f16, "f32": h16_f32}
