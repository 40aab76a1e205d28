"""GGML quant formats: the supported set, fast dequantization, random blocks for synthetic models.

Dimension legend: R rows, K values per row (``row_len``), B blocks, S bytes per block (type size),
G values per block (block size; 32, or 256 for the K-quants and IQ4_XS).

Block layouts (little-endian; "f16" is an IEEE half, offsets in bytes):

=======  =====  ====  ==========================================================================================
type     G      S     block
=======  =====  ====  ==========================================================================================
F32      1      4     float32
F16      1      2     float16
BF16     1      2     bfloat16 (top half of a float32)
Q8_0     32     34    d f16 | qs int8[32];                     x = d * q
Q4_0     32     18    d f16 | qs u8[16];                       x[j] = d * (lo(qs[j]) - 8), x[j+16] = ... hi(qs[j])
Q4_K     256    144   d f16 | dmin f16 | scales u8[12] | qs u8[128]
                      8 sub-blocks of 32, 6-bit scale sc and min m each (packed, see ``_k_scales``):
                      x = d*sc * q - dmin*m with q a 4-bit nibble; sub-blocks 2i, 2i+1 are the low, high
                      nibbles of qs[32i : 32i+32]
Q5_K     256    176   d f16 | dmin f16 | scales u8[12] | qh u8[32] | qs u8[128]
                      like Q4_K with q = nibble | (bit j of qh[l]) << 4 for sub-block j, lane l
Q6_K     256    210   ql u8[128] | qh u8[64] | scales int8[16] | d f16
                      16 sub-blocks of 16, x = d*sc * (q - 32), q = 4 bits of ql | 2 bits of qh << 4; per half
                      h of 128 values: ql[64h : 64h+64] lo nibbles give lanes 0-63, hi nibbles lanes 64-127,
                      qh[32h : 32h+32] bit pairs 0,2,4,6 give the top bits of lanes 0-31, 32-63, 64-95, 96-127
IQ4_XS   256    136   d f16 | scales_h u16 | scales_l u8[4] | qs u8[128]
                      8 sub-blocks of 32: ls = lo4 (scales_l, nibble j) | hi2 (scales_h bits 2j..2j+1) << 4,
                      x = d*(ls - 32) * IQ4_NL_VALUES[nibble]; sub-block j uses qs[16j : 16j+16], lo then hi
MXFP4    32     17    e u8 (E8M0) | qs u8[16];                 x[j] = MXFP4_VALUES[lo(qs[j])] * 2^(e-128),
                                                               x[j+16] = ... hi(qs[j])
                      (MXFP4_VALUES are the e2m1 values doubled, hence ggml's "half" scale 2^(e-128))
=======  =====  ====  ==========================================================================================

Every ``dequantize`` result is bit-for-bit what ``gguf.quants.dequantize`` (and ggml's ``dequantize_row_*``)
computes: the same float32 operations in the same order, never fused.
"""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import quants as gguf_quants
from gguf.constants import GGML_QUANT_SIZES

from sweepbench.errors import SweepbenchError

SUPPORTED = (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.IQ4_XS, Q.MXFP4)
QUANTIZABLE = (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0)

IQ4_NL_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.int8)
MXFP4_VALUES = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int8)

# Output values dequantized per step: bounds the scratch (a few times this many float32s, a few MB) while
# keeping NumPy's per-call overhead small next to the work (1 << 16 .. 1 << 22 measured within ~15%).
CHUNK_ELEMENTS = 1 << 18


def check_supported(qtype, where: str) -> None:
    if qtype not in SUPPORTED:
        names = ", ".join(q.name for q in SUPPORTED)
        raise SweepbenchError(f"{where} has quant type {Q(qtype).name}, which sweepbench does not support (supported: {names})")


def row_bytes(qtype, row_len: int) -> int:
    """Bytes of one row of ``row_len`` values (a multiple of the block size)."""
    check_supported(qtype, "row_bytes")
    block, size = GGML_QUANT_SIZES[Q(qtype)]
    if row_len <= 0 or row_len % block:
        raise SweepbenchError(f"row length {row_len} is not a positive multiple of the {Q(qtype).name} block size {block}")
    return row_len // block * size


# ---------------------------------------------------------------------------------------------------------
# Dequantization: one kernel per format, blocks uint8 [B, S] -> out float32 [B, G] (written in place)
# ---------------------------------------------------------------------------------------------------------


def _f16(blocks: np.ndarray, offset: int) -> np.ndarray:
    """The f16 field at ``offset`` of every block as float32 [B, 1] (copies only those 2 bytes per block)."""
    return np.ascontiguousarray(blocks[:, offset : offset + 2]).view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray, group: int) -> np.ndarray:
    """uint8 [B, n] -> uint8 [B, 2n/group, group]: per run of ``group`` bytes, its low nibbles then its high ones."""
    runs = qs.reshape(qs.shape[0], -1, 1, group)  # [B, n/group, 1, group]
    out = np.empty((qs.shape[0], runs.shape[1], 2, group), np.uint8)
    np.bitwise_and(runs, 0x0F, out=out[:, :, :1])
    np.right_shift(runs, 4, out=out[:, :, 1:])
    return out.reshape(qs.shape[0], -1, group)


def _k_scales(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K packed scales uint8 [B, 12] -> (sc, m) uint8 [B, 8], 6 bits each.

    Bytes 0-3 hold sc0-3 in their low 6 bits, bytes 4-7 m0-3; bytes 8-11 hold the low 4 bits of sc4-7
    (low nibble) and m4-7 (high nibble), whose top 2 bits sit in the spare top bits of bytes 0-3 / 4-7.
    """
    lo, mid, hi = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
    sc = np.concatenate([lo & 0x3F, (hi & 0x0F) | ((lo >> 6) << 4)], axis=1)
    m = np.concatenate([mid & 0x3F, (hi >> 4) | ((mid >> 6) << 4)], axis=1)
    return sc, m


def _dequant_q8_0(blocks: np.ndarray, out: np.ndarray) -> None:
    np.multiply(blocks[:, 2:].view(np.int8), _f16(blocks, 0), out=out)


def _dequant_q4_0(blocks: np.ndarray, out: np.ndarray) -> None:
    q = _nibbles(blocks[:, 2:], 16).reshape(-1, 32).view(np.int8)  # [B, 32]
    q -= 8
    np.multiply(q, _f16(blocks, 0), out=out)


def _dequant_k(blocks: np.ndarray, q: np.ndarray, out: np.ndarray) -> None:
    """Q4_K/Q5_K given the unsigned quants q uint8 [B, 8, 32]: x = (d*sc) * q - (dmin*m)."""
    sc, m = _k_scales(blocks[:, 4:16])
    scale = (_f16(blocks, 0) * sc)[:, :, None]  # [B, 8, 1]
    offset = (_f16(blocks, 2) * m)[:, :, None]  # [B, 8, 1]
    out3 = out.reshape(-1, 8, 32)
    np.multiply(q, scale, out=out3)
    out3 -= offset


def _dequant_q4_k(blocks: np.ndarray, out: np.ndarray) -> None:
    _dequant_k(blocks, _nibbles(blocks[:, 16:144], 32), out)


_BIT_SHIFTS = np.arange(8, dtype=np.uint8)[:, None]  # [8, 1]: sub-block j takes bit j of qh


def _dequant_q5_k(blocks: np.ndarray, out: np.ndarray) -> None:
    q = _nibbles(blocks[:, 48:176], 32)  # [B, 8, 32]
    high = (blocks[:, None, 16:48] >> _BIT_SHIFTS) & 1  # [B, 8, 32]
    high <<= 4
    q |= high
    _dequant_k(blocks, q, out)


_PAIR_SHIFTS = np.array([0, 2, 4, 6], np.uint8)[:, None]  # [4, 1]


def _dequant_q6_k(blocks: np.ndarray, out: np.ndarray) -> None:
    n = blocks.shape[0]
    low = _nibbles(blocks[:, 0:128], 64).reshape(n, 8, 32)  # [B, 8, 32]: (half, lo/hi, first/second 32)
    high = (blocks[:, 128:192].reshape(n, 2, 1, 32) >> _PAIR_SHIFTS) & 3  # [B, 2, 4, 32]
    high <<= 4
    low |= high.reshape(n, 8, 32)
    q = low.view(np.int8)
    q -= 32
    scale = _f16(blocks, 208) * blocks[:, 192:208].view(np.int8)  # [B, 16]
    np.multiply(q.reshape(n, 16, 16), scale[:, :, None], out=out.reshape(n, 16, 16))


_SCALE_H_SHIFTS = np.arange(0, 16, 2, dtype=np.uint16)  # [8]


def _dequant_iq4_xs(blocks: np.ndarray, out: np.ndarray) -> None:
    n = blocks.shape[0]
    scales_h = np.ascontiguousarray(blocks[:, 2:4]).view("<u2")  # [B, 1]
    high = ((scales_h >> _SCALE_H_SHIFTS) & 3).astype(np.uint8)  # [B, 8]
    low = np.stack([blocks[:, 4:8] & 0x0F, blocks[:, 4:8] >> 4], axis=2).reshape(n, 8)  # [B, 8]
    ls = (low | (high << 4)).view(np.int8)
    ls -= 32
    scale = _f16(blocks, 0) * ls  # [B, 8]
    values = IQ4_NL_VALUES[_nibbles(blocks[:, 8:136], 16).reshape(n, 8, 32)]  # int8 [B, 8, 32]
    np.multiply(values, scale[:, :, None], out=out.reshape(n, 8, 32))


def e8m0_to_float_half(e: np.ndarray) -> np.ndarray:
    """ggml's ``ggml_e8m0_to_fp32_half``: 2^(e-128) as float32 (e = 0, 1 give the subnormals 2^-128, 2^-127)."""
    e = e.astype(np.uint32)
    bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - np.uint32(1)) << np.uint32(23))
    return bits.astype(np.uint32).view(np.float32)


def _dequant_mxfp4(blocks: np.ndarray, out: np.ndarray) -> None:
    values = MXFP4_VALUES[_nibbles(blocks[:, 1:17], 16).reshape(-1, 32)]  # int8 [B, 32]
    np.multiply(values, e8m0_to_float_half(blocks[:, 0:1]), out=out)


_DEQUANT_KERNELS = {
    Q.Q8_0: _dequant_q8_0,
    Q.Q4_0: _dequant_q4_0,
    Q.Q4_K: _dequant_q4_k,
    Q.Q5_K: _dequant_q5_k,
    Q.Q6_K: _dequant_q6_k,
    Q.IQ4_XS: _dequant_iq4_xs,
    Q.MXFP4: _dequant_mxfp4,
}


def _check_raw(raw: np.ndarray, qtype, row_len: int) -> None:
    expected = row_bytes(qtype, row_len)
    if raw.dtype != np.uint8 or raw.ndim != 2 or raw.shape[1] != expected:
        raise SweepbenchError(
            f"{Q(qtype).name} data of row length {row_len} must be uint8 [rows, {expected}], got {raw.dtype} {list(raw.shape)}"
        )


def dequantize(raw: np.ndarray, qtype, row_len: int, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 [R, row_bytes] -> float32 [R, K].

    Without ``out``, F32 data comes back as a (read-only if ``raw`` is) view, not a copy. Other types are
    decoded ``CHUNK_ELEMENTS`` values at a time, so the memory needed is the output plus a bounded scratch.
    ``out`` (float32 [R, K], C-contiguous) lets a caller reuse one buffer, e.g. per expert: fresh pages
    cost more than the decoding on some hosts.
    """
    check_supported(qtype, "dequantize")
    raw = np.asarray(raw)  # a plain ndarray view of a np.memmap: no copy
    _check_raw(raw, qtype, row_len)
    qtype = Q(qtype)
    n_rows = raw.shape[0]
    if out is None:
        if qtype == Q.F32:
            return raw.view(np.float32)
        out = np.empty((n_rows, row_len), np.float32)  # [R, K]
    elif out.dtype != np.float32 or out.shape != (n_rows, row_len) or not out.flags.c_contiguous:
        raise SweepbenchError(f"dequantize out= must be C-contiguous float32 {[n_rows, row_len]}, got {out.dtype} {list(out.shape)}")
    if qtype in (Q.F32, Q.F16):
        np.copyto(out, raw.view(np.float32 if qtype == Q.F32 else np.float16))
        return out
    if qtype == Q.BF16:
        bits = out.view(np.uint32)
        np.copyto(bits, raw.view("<u2"))
        bits <<= 16
        return out
    block, size = GGML_QUANT_SIZES[qtype]
    kernel = _DEQUANT_KERNELS[qtype]
    step = max(1, CHUNK_ELEMENTS // row_len)
    with np.errstate(over="ignore", invalid="ignore"):  # inf/nan scales decode to inf/nan, as in ggml
        for start in range(0, n_rows, step):
            stop = min(start + step, n_rows)
            kernel(raw[start:stop].reshape(-1, size), out[start:stop].reshape(-1, block))
    return out


# ---------------------------------------------------------------------------------------------------------
# Quantization (float rows -> bytes), for KV caches and tests
# ---------------------------------------------------------------------------------------------------------


def quantize_rows(x: np.ndarray, qtype) -> np.ndarray:
    """float32 [R, K] -> uint8 [R, row_bytes], rounding exactly as ggml's reference quantizers do.

    F32/F16 are plain casts (round to nearest even); BF16, Q8_0 and Q4_0 reuse ``gguf.quants.quantize``,
    which matches ggml's ``quantize_row_*_ref`` bit for bit.
    """
    qtype = Q(qtype)
    if qtype not in QUANTIZABLE:
        names = ", ".join(q.name for q in QUANTIZABLE)
        raise SweepbenchError(f"quantizing to {qtype.name} is not supported (supported: {names})")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise SweepbenchError(f"quantize_rows expects a 2-D [rows, row_len] array, got shape {list(x.shape)}")
    n_rows, row_len = x.shape
    nbytes = row_bytes(qtype, row_len)
    if qtype == Q.F32:
        return x.copy().view(np.uint8).reshape(n_rows, nbytes)
    if qtype == Q.F16:
        return x.astype(np.float16).view(np.uint8).reshape(n_rows, nbytes)
    return gguf_quants.quantize(x, qtype).reshape(n_rows, nbytes)


# ---------------------------------------------------------------------------------------------------------
# Random blocks for synthetic models
# ---------------------------------------------------------------------------------------------------------
# Random bytes everywhere, then the scale fields are overwritten so that the dequantized values have std
# ~= ``std`` and mean ~= 0 (anchors.md, "Weight statistics"). With u uniform in [0.75, 1.25] per block the
# scale d is u * std / c, where c (below) is the RMS of the values a unit scale gives on random bits:
#   Q8_0    q int8 uniform                          RMS 73.9  (mean -0.5 d: 0.7% of std, left alone)
#   Q4_0    q in [-8, 7]                            RMS 4.64 (anchors: 4.65); mean -0.5 d is 11% of std, so
#           the sign of d is random per block: the tensor mean cancels, the value distribution is unchanged
#   Q4_K    d*sc*q - dmin*m, sc, m uniform 0..63, q 0..15: the mean is d*31.5*(7.5 - dmin/d), zero exactly
#           for dmin = 7.5 d (anchors' recipe keeps mean 0); RMS 258.3 d
#   Q5_K    the same with q 0..31: dmin = 15.5 d gives mean 0; RMS 526.9 d
#   Q6_K    sc int8 uniform in [-24, 24] (E sc = 0 gives mean 0), q - 32 in [-32, 31]: RMS 261.3 d
#   IQ4_XS  ls - 32 uniform in [-8, 7] times the IQ4_NL values: RMS 312.7 d (mean 2.9 d: 0.9% of std)
#   MXFP4   value table symmetric (mean 0), RMS 5.852; the scale is a power of two, so instead of u the
#           exponent is e_lo or e_lo + 1 per block, with the probability of e_lo + 1 chosen so that
#           E[scale^2] = (std / 5.852)^2 exactly (std 0.03: 2^-8 or 2^-7, the latter with p = 0.241)
# Q4_K's 6-bit mins make each 32-value sub-block carry its own offset d*7.5*(sc - m): about 3/4 of the value
# std varies per sub-block rather than per value. That is what the peer's files contain, so it is kept.
_RMS = {Q.Q8_0: 73.9, Q.Q4_0: 4.65, Q.Q4_K: 258.3, Q.Q5_K: 526.9, Q.Q6_K: 261.3, Q.IQ4_XS: 312.7, Q.MXFP4: 5.852}
_K_DMIN_RATIO = {Q.Q4_K: 7.5, Q.Q5_K: 15.5}


def _random_bytes(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random bytes, writable; ``random_raw`` is about 5x faster than ``integers(..., dtype=uint8)``."""
    return rng.bit_generator.random_raw((n + 7) // 8).view(np.uint8)[:n]


def _put_f16(blocks: np.ndarray, offset: int, values: np.ndarray) -> None:
    blocks[:, offset : offset + 2] = values.astype(np.float16).view(np.uint8).reshape(-1, 2)


def _uniform_scale(rng: np.random.Generator, n_blocks: int, qtype, std: float) -> np.ndarray:
    u = rng.random(n_blocks, dtype=np.float32) * np.float32(0.5) + np.float32(0.75)  # [B]
    return u * np.float32(std / _RMS[qtype])


def _set_scales(blocks: np.ndarray, qtype, rng: np.random.Generator, std: float) -> None:
    n = blocks.shape[0]
    if qtype == Q.Q8_0:
        _put_f16(blocks, 0, _uniform_scale(rng, n, qtype, std))
    elif qtype == Q.Q4_0:
        sign = np.where(rng.random(n, dtype=np.float32) < 0.5, np.float32(-1), np.float32(1))
        _put_f16(blocks, 0, sign * _uniform_scale(rng, n, qtype, std))
    elif qtype in (Q.Q4_K, Q.Q5_K):
        d = _uniform_scale(rng, n, qtype, std)
        _put_f16(blocks, 0, d)
        _put_f16(blocks, 2, d * np.float32(_K_DMIN_RATIO[qtype]))
    elif qtype == Q.Q6_K:
        blocks[:, 192:208] = rng.integers(-24, 25, (n, 16), dtype=np.int8).view(np.uint8)
        _put_f16(blocks, 208, _uniform_scale(rng, n, qtype, std))
    elif qtype == Q.IQ4_XS:
        ls = rng.integers(24, 40, (n, 8), dtype=np.uint8)  # [B, 8], so ls - 32 in [-8, 7]
        blocks[:, 4:8] = (ls[:, 0::2] & 0x0F) | ((ls[:, 1::2] & 0x0F) << 4)
        scales_h = ((ls >> 4).astype(np.uint16) << _SCALE_H_SHIFTS).sum(axis=1, dtype=np.uint16)  # [B]
        blocks[:, 2:4] = scales_h.astype("<u2").view(np.uint8).reshape(n, 2)
        _put_f16(blocks, 0, _uniform_scale(rng, n, qtype, std))
    elif qtype == Q.MXFP4:
        target = std / _RMS[qtype]
        e_lo = int(np.floor(np.log2(target))) + 128
        p_hi = ((target / 2.0 ** (e_lo - 128)) ** 2 - 1) / 3  # E[2^(2(e-128))] = target^2
        blocks[:, 0] = e_lo + (rng.random(n, dtype=np.float32) < p_hi)
    else:  # pragma: no cover - every quantized SUPPORTED type has a branch
        raise AssertionError(qtype)


def random_rows(qtype, n_rows: int, row_len: int, rng: np.random.Generator, std: float = 0.03) -> np.ndarray:
    """Random weights uint8 [R, row_bytes] whose dequantized values have std ~= ``std`` and mean ~= 0.

    Float types hold normal(0, std) samples; quantized ones random bits with scale fields set as above.
    """
    check_supported(qtype, "random_rows")
    qtype = Q(qtype)
    if qtype in (Q.F32, Q.F16, Q.BF16):
        x = rng.standard_normal((n_rows, row_len), dtype=np.float32)  # [R, K]
        x *= np.float32(std)
        return quantize_rows(x, qtype)
    nbytes = row_bytes(qtype, row_len)
    raw = _random_bytes(rng, n_rows * nbytes).reshape(n_rows, nbytes)
    _set_scales(raw.reshape(-1, GGML_QUANT_SIZES[qtype][1]), qtype, rng, std)
    return raw
