"""Run-time repacking (``-rtr``): GGUF blocks -> "R8" row-group layouts whose kernels need no horizontal sums.

Eight rows form a group g; inside a block, one 32-byte vector holds 4 consecutive quants of each of the 8 rows
(ik's Q8_0_R8 interleave), so ``dot_us(acc, w, broadcast(x[4v:4v+4]))`` leaves the 8 rows' partial dots in
the 8 lanes and scales for 8 rows are one vector. A matrix is one byte array ``qs`` uint8 [G, GB] of block
records, each the 8 rows' scale bytes then their quant bytes (ik's {d[8], qs[256]}: one memory stream per
matrix; measured +3-7% GEMV bandwidth over separate scale and quant arrays).

Offsets below are inside the scale part ("sc") and the quant part ("qs") of the record of 32-value block b
(Q8_0, Q4_0, MXFP4) or 256-value super-block s (K-quants, IQ4_XS); r = row in group, i < 4, v = vector:
    Q8_0   qs[256b + 32v + 4r + i] = q[r, 32b + 4v + i]                       sc[16b + 2r] = d[r] (f16)
           (stored ^ 0x80, i.e. q + 128 as u8, when the target has VNNI: vpdpbusd then needs no sign trick)
    MXFP4  as Q8_0 with the e2m1 values doubled as int8 and sc[32b + 4r] = 2^(e-128)/... as float32
           (an int8 expansion: exact, twice MXFP4's bytes; stated fallback)
    Q4_0   qs[128b + 32v + 4r + i] = nibbles q[r, 32b+4v+i] | q[r, 32b+16+4v+i] << 4   (v < 4; q unsigned)
    Q4_K   qs[1024s + 256p + 32v + 4r + i] = q[r, 256s+64p+4v+i] | q[r, 256s+64p+32+4v+i] << 4  (p < 4)
           sc[160s + 0:16] d (f16 x8), [16:32] dmin, [32 + 8j + r] scale j, [96 + 8j + r] min j (u8, 6 bits)
    Q5_K   Q4_K's qs, then qh at 1024 + 32j + 4r + i: bit v = 5th bit of q[r, 256s + 32j + 4v + i]; sc as Q4_K
    Q6_K   low nibbles as Q4_K (chunks 2p, 2p+1), then at 1024 + 64c + 32u + 4r + i: bits 2k..2k+1 = top bits
           of q[r, 256s + 32c + 4(4u+k) + i]; q unsigned 0..63; sc[144s + 0:16] d, [16 + 8j + r] scale j (int8)
    IQ4_XS nibble indices as Q4_K; sc[80s + 0:16] d, [16 + 8j + r] ls - 32 (int8)
Float weights (F32, F16, BF16) are interleaved per element: w[g, k, r] (in ``qs``, with no scales).
Repacking is a one-off transpose in NumPy at load (reported as load time).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType as Q

from sweepbench.cpu_kernels.simd import W8_OFFSET
from sweepbench.errors import SweepbenchError
from sweepbench.quants import IQ4_NL_VALUES, MXFP4_VALUES, e8m0_to_float_half, row_bytes

# kind ids the kernels switch on (one driver serves every type)
K_Q8_0, K_Q4_0, K_Q4_K, K_Q5_K, K_Q6_K, K_IQ4_XS, K_Q8_F32 = 0, 1, 2, 3, 4, 5, 6
K_F32, K_F16, K_BF16 = 7, 8, 9  # float weights: K_F32 + format
KIND_OF = {Q.Q8_0: K_Q8_0, Q.Q4_0: K_Q4_0, Q.Q4_K: K_Q4_K, Q.Q5_K: K_Q5_K, Q.Q6_K: K_Q6_K,
           Q.IQ4_XS: K_IQ4_XS, Q.MXFP4: K_Q8_F32, Q.F32: K_F32, Q.F16: K_F16, Q.BF16: K_BF16}
QUANT_TYPES = tuple(q for q, k in KIND_OF.items() if k < K_F32)
FLOAT_TYPES = (Q.F32, Q.F16, Q.BF16)
# signed int8 weights carry +128 on VNNI targets (see module doc)
SIGNED_OFFSET = W8_OFFSET

@dataclass
class QuantR8:
    """One repacked matrix stack: ``qs`` uint8 [X, G, GB] block records (X = 1 for a dense matrix).
    Float weights: ``qs`` [X, G, K*8] float32 or uint16 bits, element k of the 8 rows side by side."""

    kind: int
    qtype: Q
    n_rows: int  # N per matrix
    row_len: int  # K
    qs: np.ndarray

    @property
    def n_bytes(self) -> int:
        return self.qs.nbytes


def can_repack(qtype, n_rows: int) -> bool:
    return n_rows % 8 == 0 and (qtype in QUANT_TYPES or qtype in FLOAT_TYPES)


def repack(raw: np.ndarray, qtype, n_rows: int, row_len: int, n_mats: int = 1, threads: int = 2) -> QuantR8:
    """raw uint8 [X*N, row_bytes] (GGUF rows of X stacked matrices) -> QuantR8.

    Row groups are converted CHUNK_GROUPS at a time on ``threads`` threads (NumPy's copies release the GIL),
    each chunk small enough to stay in cache while it is transposed."""
    qtype = Q(qtype)
    if not can_repack(qtype, n_rows):
        raise SweepbenchError(f"cannot repack {qtype.name} with {n_rows} rows (needs a multiple of 8)")
    if raw.shape != (n_mats * n_rows, row_bytes(qtype, row_len)):
        raise SweepbenchError(f"{qtype.name} data has shape {list(raw.shape)}, expected "
                              f"{[n_mats * n_rows, row_bytes(qtype, row_len)]}")
    groups = np.asarray(raw).reshape(n_mats * n_rows // 8, 8, -1)  # [M, 8, row_bytes]: M row groups
    convert = _float_groups if qtype in FLOAT_TYPES else _REPACKERS[KIND_OF[qtype]]
    first = _records(convert, groups[:CHUNK_GROUPS], qtype, row_len)
    out = np.empty((groups.shape[0], first.shape[1]), first.dtype)
    out[: len(first)] = first

    def work(lo: int) -> None:
        out[lo : lo + CHUNK_GROUPS] = _records(convert, groups[lo : lo + CHUNK_GROUPS], qtype, row_len)

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(work, range(CHUNK_GROUPS, groups.shape[0], CHUNK_GROUPS)))
    return QuantR8(KIND_OF[qtype], qtype, n_rows, row_len, out.reshape(n_mats, n_rows // 8, -1))


CHUNK_GROUPS = 64  # row groups per repacking step (64 x 8 rows of 2048 Q8_0 values: 1.1 MB)


def _records(convert, groups: np.ndarray, qtype, row_len: int) -> np.ndarray:
    """[M, 8, row_bytes] -> [M, GB]: per block the scale bytes, then the quant bytes (float: the values)."""
    if qtype in FLOAT_TYPES:
        return convert(groups, qtype, row_len)
    qs, sc = convert(groups, row_len)
    m, n_blocks = groups.shape[0], row_len // (32 if KIND_OF[qtype] in (K_Q8_0, K_Q4_0, K_Q8_F32) else 256)
    return np.concatenate([sc.reshape(m, n_blocks, -1), qs.reshape(m, n_blocks, -1)], axis=-1).reshape(m, -1)


def _float_groups(groups: np.ndarray, qtype, row_len: int) -> np.ndarray:
    """[M, 8, K * size] float rows -> [M, K * 8]: element k of the 8 rows side by side."""
    dt = np.float32 if qtype == Q.F32 else np.uint16
    m = groups.shape[0]
    return np.ascontiguousarray(groups.view(dt).reshape(m, 8, row_len).transpose(0, 2, 1)).reshape(m, -1)


# ------------------------------------------------------------------------------------------- per type
# Each takes blocks uint8 [M, 8, row_bytes] (M row groups) and returns (qs [M, QB], sc [M, SB]).


def _interleave4(q: np.ndarray) -> np.ndarray:
    """[M, 8, nblk, n] per-row quants -> [M, nblk, (n/4) * 32]: 4 bytes of each of the 8 rows per vector."""
    m, _, nblk, n = q.shape
    return q.reshape(m, 8, nblk, n // 4, 4).transpose(0, 2, 3, 1, 4).reshape(m, nblk, n * 8)


def _by_row(a: np.ndarray) -> np.ndarray:
    """[M, 8, nblk, f, ...] -> [M, nblk, f, 8, ...]: a field of the 8 rows side by side."""
    return np.moveaxis(a, 1, 3)


def _pack_pairs(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return (lo | (hi << 4)).astype(np.uint8)


def _rp_q8_0(b, k):
    m = b.shape[0]
    blk = b.reshape(m, 8, k // 32, 34)
    qs = _interleave4(blk[..., 2:])
    if SIGNED_OFFSET:
        qs = qs ^ np.uint8(0x80)
    return qs.reshape(m, -1), np.ascontiguousarray(_by_row(blk[..., :2].reshape(m, 8, -1, 1, 2))).reshape(m, -1)


def _rp_mxfp4(b, k):
    m = b.shape[0]
    blk = b.reshape(m, 8, k // 32, 17)
    lo, hi = blk[..., 1:] & 0x0F, blk[..., 1:] >> 4
    vals = MXFP4_VALUES[np.concatenate([lo, hi], axis=-1)].view(np.uint8)  # [m, 8, nb, 32] int8 bits
    qs = _interleave4(vals)
    if SIGNED_OFFSET:
        qs = qs ^ np.uint8(0x80)
    d = e8m0_to_float_half(blk[..., 0]).reshape(m, 8, -1, 1)  # [m, 8, nb, 1] float32
    return qs.reshape(m, -1), np.ascontiguousarray(_by_row(d)).view(np.uint8).reshape(m, -1)


def _rp_q4_0(b, k):
    m = b.shape[0]
    blk = b.reshape(m, 8, k // 32, 18)
    qs = blk[..., 2:]  # byte j: lo = value j, hi = value 16 + j: already the pairing we want
    return _interleave4(qs).reshape(m, -1), np.ascontiguousarray(_by_row(blk[..., :2].reshape(m, 8, -1, 1, 2))).reshape(m, -1)


def _k_scales(s12: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, mid, hi = s12[..., 0:4], s12[..., 4:8], s12[..., 8:12]
    sc = np.concatenate([lo & 0x3F, (hi & 0x0F) | ((lo >> 6) << 4)], axis=-1)
    mn = np.concatenate([mid & 0x3F, (hi >> 4) | ((mid >> 6) << 4)], axis=-1)
    return sc, mn  # [..., 8] each


def _q4k_sc(blk) -> np.ndarray:
    """d, dmin f16 and the 8 unpacked scales and mins per row -> [M, ns, 160]."""
    m, _, ns, _ = blk.shape
    sc, mn = _k_scales(blk[..., 4:16])
    parts = [_by_row(blk[..., 0:2].reshape(m, 8, ns, 1, 2)).reshape(m, ns, 16),
             _by_row(blk[..., 2:4].reshape(m, 8, ns, 1, 2)).reshape(m, ns, 16),
             _by_row(sc).reshape(m, ns, 64), _by_row(mn).reshape(m, ns, 64)]
    return np.concatenate(parts, axis=-1)


def _nibble_pairs(qs128: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K/IQ4_XS-style quants [M, 8, ns, 128] whose bytes 32p..32p+31 hold sub-blocks 2p (lo), 2p+1 (hi)
    -> [M, ns, 1024]: pair p as 8 vectors of 4 bytes x 8 rows."""
    m, _, ns, _ = qs128.shape
    return _interleave4(qs128.reshape(m, 8, ns * 4, 32)).reshape(m, ns, 1024)


def _rp_q4_k(b, k):
    m = b.shape[0]
    blk = b.reshape(m, 8, k // 256, 144)
    return _nibble_pairs(blk[..., 16:144]).reshape(m, -1), _q4k_sc(blk).reshape(m, -1)


def _bit_planes(bits: np.ndarray, n_per_byte: int, width: int) -> np.ndarray:
    """bits [M, 8, n_vec, 8, ..] helper: pack ``n_per_byte`` fields of ``width`` bits into one byte."""
    out = np.zeros(bits.shape[:-1], np.uint8)
    for k in range(n_per_byte):
        out |= (bits[..., k] << (width * k)).astype(np.uint8)
    return out


def _rp_q5_k(b, k):
    m = b.shape[0]
    ns = k // 256
    blk = b.reshape(m, 8, ns, 176)
    qh = blk[..., 16:48]  # [m, 8, ns, 32]: bit j of byte l = 5th bit of sub-block j, lane l
    bits = (qh[..., None, :] >> np.arange(8, dtype=np.uint8)[:, None]) & 1  # [m, 8, ns, 8 (j), 32 (l)]
    # value index inside sub-block j: l = 4v + i -> plane byte (4r + i) bit v
    bits = bits.reshape(m, 8, ns, 8, 8, 4)  # [.., j, v, i]
    planes = _bit_planes(bits.transpose(0, 2, 3, 1, 5, 4), 8, 1)  # [m, ns, j, r, i]
    qh_r8 = planes.reshape(m, ns, 256)
    qs = np.concatenate([_nibble_pairs(blk[..., 48:176]), qh_r8], axis=-1)
    return qs.reshape(m, -1), _q4k_sc(blk).reshape(m, -1)


def _rp_q6_k(b, k):
    m = b.shape[0]
    ns = k // 256
    blk = b.reshape(m, 8, ns, 210)
    ql, qh, scales, d = blk[..., 0:128], blk[..., 128:192], blk[..., 192:208], blk[..., 208:210]
    # full 6-bit q per value (natural order 0..255), then rebuild the planes we want
    low = np.empty((m, 8, ns, 256), np.uint8)
    high = np.empty((m, 8, ns, 256), np.uint8)
    for h in range(2):
        lq = ql[..., 64 * h : 64 * h + 64]
        hq = qh[..., 32 * h : 32 * h + 32]
        base = 128 * h
        low[..., base : base + 64] = lq & 0x0F
        low[..., base + 64 : base + 128] = lq >> 4
        for kq in range(4):
            high[..., base + 32 * kq : base + 32 * kq + 32] = (hq >> (2 * kq)) & 3
    nib = _pack_pairs(low.reshape(m, 8, ns, 4, 2, 32)[..., 0, :], low.reshape(m, 8, ns, 4, 2, 32)[..., 1, :])
    ql_r8 = _nibble_pairs(nib.reshape(m, 8, ns, 128))
    hb = high.reshape(m, 8, ns, 8, 2, 4, 4)  # [.., c, u, k, i]: value 32c + 4(4u+k) + i
    planes = _bit_planes(hb.transpose(0, 2, 3, 4, 1, 6, 5), 4, 2)  # [m, ns, c, u, r, i]
    qs = np.concatenate([ql_r8, planes.reshape(m, ns, 512)], axis=-1)
    sc = np.concatenate([_by_row(d.reshape(m, 8, ns, 1, 2)).reshape(m, ns, 16),
                         _by_row(scales).reshape(m, ns, 128)], axis=-1)
    return qs.reshape(m, -1), sc.reshape(m, -1)


def _rp_iq4_xs(b, k):
    m = b.shape[0]
    ns = k // 256
    blk = b.reshape(m, 8, ns, 136)
    # natural: sub j uses qs[16j : 16j+16], lo nibbles = values 0..15, hi = 16..31; re-pair as Q4_K's (2p lo, 2p+1 hi)
    qs = blk[..., 8:136].reshape(m, 8, ns, 8, 16)
    vals = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # [.., j, 32] nibble index of value 32j + l
    nib = _pack_pairs(vals[..., 0::2, :], vals[..., 1::2, :]).reshape(m, 8, ns, 128)
    scales_h = blk[..., 2:4].copy().view("<u2")  # [m, 8, ns, 1]
    high = ((scales_h >> np.arange(0, 16, 2, dtype=np.uint16)) & 3).astype(np.uint8)  # [m, 8, ns, 8]
    low = np.stack([blk[..., 4:8] & 0x0F, blk[..., 4:8] >> 4], axis=-1).reshape(m, 8, ns, 8)
    ls = ((low | (high << 4)).astype(np.int16) - 32).astype(np.int8).view(np.uint8)
    sc = np.concatenate([_by_row(blk[..., 0:2].reshape(m, 8, ns, 1, 2)).reshape(m, ns, 16),
                         _by_row(ls).reshape(m, ns, 64)], axis=-1)
    return _nibble_pairs(nib).reshape(m, -1), sc.reshape(m, -1)


_REPACKERS = {K_Q8_0: _rp_q8_0, K_Q8_F32: _rp_mxfp4, K_Q4_0: _rp_q4_0, K_Q4_K: _rp_q4_k, K_Q5_K: _rp_q5_k,
              K_Q6_K: _rp_q6_k, K_IQ4_XS: _rp_iq4_xs}

# IQ4_XS values for vpshufb, in both 128-bit halves; +128 when the kernels use unsigned weights
IQ4_TABLE = np.tile(IQ4_NL_VALUES.view(np.uint8) ^ (np.uint8(0x80) if SIGNED_OFFSET else np.uint8(0)), 2)
