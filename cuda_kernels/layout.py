"""Host-side repacking of GGUF blocks into the device layout: quants apart from block headers, 32-bit aligned.

GGUF rows interleave a small header (scales) with the quants, and Q8_0 / Q6_K blocks are not even 4-byte aligned
(34 and 210 bytes), so a kernel could only read them byte by byte. Splitting each row into a ``qs`` array (the
quant bits, uint32 words, whole 16-byte vectors per 32 values) and a ``hdr`` array (the block headers, unchanged
bytes) costs no extra bytes and lets every lane read its 32 values with two 16-byte loads.

Device layout per type (rows = X*N for expert stacks, expert e owning rows e*N .. e*N+N-1; B = K/32 blocks of 32):
    f32     qs float32 [rows, K]                    hdr unused
    f16     qs uint32 [rows, K/2] (f16 pairs)        hdr unused
    q8_0    qs uint32 [rows, K/4] (int8 x4)          hdr uint32 [rows, ceil(B/2)]: the f16 scales, two a word
    q4_k    qs uint32 [rows, K/8] (128 B / 256)      hdr uint32 [rows, 4*K/256]: d|dmin, 12 scale bytes
    q6_k    qs uint32 [rows, 48*K/256] (ql | qh)     hdr uint32 [rows, 5*K/256]: 16 int8 scales, d (+2 pad)
    iq4_xs  qs uint32 [rows, K/8]                    hdr uint32 [rows, 2*K/256]: d|scales_h, scales_l
Any other supported type is dequantized here and stored as f16 (exact for BF16 values that fit f16's range).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType as Q

from sweepbench.quants import dequantize

NATIVE = {Q.F32: "f32", Q.F16: "f16", Q.Q8_0: "q8_0", Q.Q4_K: "q4_k", Q.Q6_K: "q6_k", Q.IQ4_XS: "iq4_xs"}
# bytes per 32 values on the device (what a GEMV streams), for the roofline figures
BYTES_PER_32 = {"f32": 128, "f16": 64, "q8_0": 34, "q4_k": 18, "q6_k": 26.25, "iq4_xs": 17}


@dataclass
class HostWeight:
    """A weight in device layout, still on the host. ``kind``: one of NATIVE's values."""

    kind: str
    qs: np.ndarray
    hdr: np.ndarray
    n_rows: int  # rows of one matrix (per expert for stacks)
    row_len: int  # K
    n_mats: int = 1  # experts in a stack

    @property
    def n_bytes(self) -> int:
        return int(self.qs.nbytes + self.hdr.nbytes)


def _words(b: np.ndarray) -> np.ndarray:
    """uint8 [rows, n] (n a multiple of 4) -> uint32 [rows, n/4], little-endian, contiguous."""
    return np.ascontiguousarray(b).view("<u4")


def repack(raw: np.ndarray, qtype, row_len: int, n_mats: int = 1) -> HostWeight:
    """GGUF rows uint8 [rows, row_bytes] -> HostWeight in the device layout described in the module docstring."""
    qtype = Q(qtype)
    rows = raw.shape[0]
    n = rows // n_mats
    empty = np.zeros((1, 1), np.uint32)
    kind = NATIVE.get(qtype)
    if kind is None or (kind != "f32" and row_len % 32):
        f = dequantize(raw, qtype, row_len).astype(np.float16)
        return HostWeight("f16", _words(f.view(np.uint8)), empty, n, row_len, n_mats)
    if kind == "f32":
        return HostWeight(kind, np.ascontiguousarray(raw).view(np.float32), empty, n, row_len, n_mats)
    if kind == "f16":
        return HostWeight(kind, _words(raw), empty, n, row_len, n_mats)
    nb = row_len // 32
    if kind == "q8_0":
        blocks = raw.reshape(rows, nb, 34)
        d = blocks[:, :, 0:2]
        if nb % 2:
            d = np.concatenate([d, np.zeros((rows, 1, 2), np.uint8)], axis=1)
        return HostWeight(kind, _words(blocks[:, :, 2:].reshape(rows, -1)), _words(d.reshape(rows, -1)), n, row_len,
                          n_mats)
    if row_len % 256:
        f = dequantize(raw, qtype, row_len).astype(np.float16)
        return HostWeight("f16", _words(f.view(np.uint8)), empty, n, row_len, n_mats)
    ns = row_len // 256
    if kind == "q4_k":
        blocks = raw.reshape(rows, ns, 144)
        qs, hdr = blocks[:, :, 16:].reshape(rows, -1), blocks[:, :, :16].reshape(rows, -1)  # nibbles; d, dmin, scales
        return HostWeight(kind, _words(qs), _words(hdr), n, row_len, n_mats)
    if kind == "q6_k":
        blocks = raw.reshape(rows, ns, 210)
        hdr = np.concatenate([blocks[:, :, 192:210], np.zeros((rows, ns, 2), np.uint8)], axis=2)  # scales, d, pad
        return HostWeight(kind, _words(blocks[:, :, :192].reshape(rows, -1)), _words(hdr.reshape(rows, -1)), n, row_len,
                          n_mats)
    blocks = raw.reshape(rows, ns, 136)  # iq4_xs
    return HostWeight(kind, _words(blocks[:, :, 8:].reshape(rows, -1)), _words(blocks[:, :, :8].reshape(rows, -1)),
                      n, row_len, n_mats)
