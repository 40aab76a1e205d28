"""Dequantization of 16 weights straight to f16 pairs, for the tensor-core GEMM's shared-memory tiles.

Integer quants become f16 without a float conversion: a byte u (0..255) placed under the exponent byte 0x64 is
the f16 value 1024 + u exactly (prmt), one packed subtraction removes the 1024 (and the quant's offset), one packed
multiply-add applies the block scale (rounded to f16). Two instructions per value instead of an int-to-float
conversion (a quarter-rate instruction) per value.

Each kind is a pair (load, convert), split so that a GEMM can issue a step's loads and convert them a step later,
after the mma in between (a conversion right after its loads waits out their whole latency):
    load(qs, hdr, row, c, half, K, raw)   the words of values 32c + 16*half .. +15 of the weight row (layout of
                                          ``layout``) and their scales, as loaded: raw[0..RAW]
    convert(raw, c, half, out)            those words -> out[0..8], the 16 values as f16 pairs
"""
from __future__ import annotations

import numpy as np

from cuda_kernels.env import device, hfma2, hmul2, hsub2, ldg4, pack_h2, prmt, unpack_h2
from cuda_kernels.qdot import LO4, _byte, _iq4, _k_scale_min, _q6, _s8, iq4_xs_scale_of_words

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
def _copy8(raw, c, half, out):
    for k in range(8):
        out[k] = raw[k]


@device
def load_q8_0(qs, hdr, row, c, half, K, raw):
    raw[0], raw[1], raw[2], raw[3] = ldg4(qs, row * (K // 4) + c * 8 + 4 * half)
    raw[4] = hdr[row * ((K // 32 + 1) // 2) + c // 2]  # the scales of chunks c & ~1 and c | 1


@device
def conv_q8_0(raw, c, half, out):
    dlo, dhi = unpack_h2(raw[4])
    d = dhi if c & 1 else dlo
    s2 = pack_h2(d, d)
    for k in range(4):
        _bytes_to_h2(raw[k] ^ U32(0x80808080), H1152, s2, out, k)  # int8 + 128 as unsigned bytes


@device
def load_q4_k(qs, hdr, row, c, half, K, raw):
    sb, j = c // 8, c % 8
    raw[0], raw[1], raw[2], raw[3] = ldg4(qs, row * (K // 8) + sb * 32 + (j // 2) * 8 + 4 * half)
    hb = row * (K // 64) + sb * 4
    for k in range(4):  # d, dmin and the 12 bytes of 6-bit scales and mins
        raw[4 + k] = hdr[hb + k]


@device
def conv_q4_k(raw, c, half, out):
    j = c % 8
    d, dmin = unpack_h2(raw[4])
    sc, m = _k_scale_min(raw, 4, j)
    s, mn = d * sc, -(dmin * m)
    s2, m2 = pack_h2(s, s), pack_h2(mn, mn)
    sh = U32(4 * (j & 1))
    for k in range(4):
        n = (raw[k] >> sh) & LO4
        out[2 * k] = hfma2(hsub2(prmt(n, EXP, SEL01), H1024), s2, m2)
        out[2 * k + 1] = hfma2(hsub2(prmt(n, EXP, SEL23), H1024), s2, m2)


@device
def load_q6_k(qs, hdr, row, c, half, K, raw):
    sb, j = c // 8, c % 8
    h, q = j // 4, j % 4
    blk = row * (K // 256) * 48 + sb * 48
    raw[0], raw[1], raw[2], raw[3] = ldg4(qs, blk + h * 16 + (q % 2) * 8 + 4 * half)  # ql
    raw[4], raw[5], raw[6], raw[7] = ldg4(qs, blk + 32 + h * 8 + 4 * half)  # qh
    hd = row * (K // 256) * 5 + sb * 5
    raw[8], raw[9] = hdr[hd + 4], hdr[hd + j // 2]  # d, the word of this sub-block's int8 scale


@device
def conv_q6_k(raw, c, half, out):
    j = c % 8
    q = j % 4
    shl, shh = U32(4 * (q // 2)), U32(2 * q)
    d, _pad = unpack_h2(raw[8])
    s = d * _s8(_byte(raw[9], (j % 2) * 2 + half))  # the scale of this 16-value sub-block
    s2 = pack_h2(s, s)
    for k in range(4):
        _bytes_to_h2(_q6(raw[k], raw[4 + k], shl, shh), H1056, s2, out, k)


@device
def load_iq4_xs(qs, hdr, row, c, half, K, raw):
    sb, j = c // 8, c % 8
    raw[0], raw[1], raw[2], raw[3] = ldg4(qs, row * (K // 8) + sb * 32 + j * 4)
    hb = row * (K // 128) + sb * 2
    raw[4], raw[5] = hdr[hb], hdr[hb + 1]  # d | scales_h << 16, scales_l


@device
def conv_iq4_xs(raw, c, half, out):
    dl = iq4_xs_scale_of_words(raw[4], raw[5], c % 8)
    s2 = pack_h2(dl, dl)
    sh = U32(4 * half)  # low nibbles: values 0..15 of the chunk, high nibbles: 16..31
    for k in range(4):
        _bytes_to_h2(_iq4((raw[k] >> sh) & LO4) ^ U32(0x80808080), H1152, s2, out, k)


@device
def load_f16(qs, hdr, row, c, half, K, raw):
    base = row * (K // 2) + c * 16 + 8 * half
    raw[0], raw[1], raw[2], raw[3] = ldg4(qs, base)
    raw[4], raw[5], raw[6], raw[7] = ldg4(qs, base + 4)


@device
def load_f32(qs, hdr, row, c, half, K, raw):  # converted as it loads: 16 float32 do not fit the raw words
    base = row * K + c * 32 + 16 * half
    for k in range(8):
        raw[k] = pack_h2(qs[base + 2 * k], qs[base + 2 * k + 1])


RAW = 10  # raw words per thread and step, the most of any kind (q6_k)
H16 = {"q8_0": (load_q8_0, conv_q8_0), "q4_k": (load_q4_k, conv_q4_k), "q6_k": (load_q6_k, conv_q6_k),
       "iq4_xs": (load_iq4_xs, conv_iq4_xs), "f16": (load_f16, _copy8), "f32": (load_f32, _copy8)}
