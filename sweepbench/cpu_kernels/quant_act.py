"""Activation quantization for the integer dot products (ggml's Q8_0 / Q8_2 activations).

Per block of 32 values: d = absmax / 127, q = round_to_nearest_even(x / d) in int8 (ik: ``_mm256_round_ps``
nearest). Each block is one 48-byte record, so a kernel needs one pointer per activation row:

    bytes 0..31  q int8 [32]
    32..35       d          float32
    36..39       s32        d * sum(q)        (Q4_0's -8, K-quant mins, VNNI's +128 on signed weights)
    40..43       s_lo       d * sum(q[0:16])  (Q6_K's -32 per 16-value sub-block)
    44..47       s_hi       d * sum(q[16:32])

Scales stay float32 (ik rounds Q8_2's to bf16; far inside the quantized tier, and the F16 tier never quantizes).
Dimension legend: T rows (tokens or routed rows), K values per row (a multiple of 32), B = K/32 blocks.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from sweepbench.cpu_kernels.simd import st1f
from sweepbench.cpu_kernels.threads import with_serial_twin

REC = 48  # bytes per block record


@njit(cache=True)
def quantize_row(x, out, o):
    """x f32 [K] -> K/32 records at byte ``o`` of ``out`` (any byte array)."""
    for b in range(x.shape[0] // 32):
        amax = np.float32(0.0)
        for i in range(32):
            amax = max(amax, abs(x[32 * b + i]))
        d = amax / np.float32(127.0)
        inv = np.float32(1.0) / d if d > 0 else np.float32(0.0)
        r = o + REC * b
        lo = hi = 0
        for i in range(32):
            v = np.int32(np.rint(x[32 * b + i] * inv))
            out[r + i] = np.uint8(v & 0xFF)
            if i < 16:
                lo += v
            else:
                hi += v
        st1f(out, r + 32, d)
        st1f(out, r + 36, d * np.float32(lo + hi))
        st1f(out, r + 40, d * np.float32(lo))
        st1f(out, r + 44, d * np.float32(hi))


@with_serial_twin
def quantize_rows_q8(x, out):
    """x f32 [T, K] -> out uint8 [T, K/32*48] records (``.serial`` for a few rows: a decode step quantizes ~100
    activations)."""
    for t in prange(x.shape[0]):
        quantize_row(x[t], out[t], 0)


class QuantAct:
    """A quantized activation matrix: ``x`` uint8 [T, B*48] of block records (see the module doc)."""

    __slots__ = ("x",)

    def __init__(self, x: np.ndarray):
        x = np.ascontiguousarray(x, np.float32)
        t, k = x.shape
        self.x = np.empty((t, k // 32 * REC), np.uint8)
        (quantize_rows_q8.serial if t <= 4 else quantize_rows_q8)(x, self.x)

    def fields(self):
        """(q int8 [T, K], d [T, B], s32, s_lo, s_hi) as NumPy arrays (for tests)."""
        t = self.x.shape[0]
        rec = self.x.reshape(t, -1, REC)
        q = rec[..., :32].view(np.int8).reshape(t, -1)
        f = np.ascontiguousarray(rec[..., 32:]).view(np.float32)  # [T, B, 4]
        return q, f[..., 0], f[..., 1], f[..., 2], f[..., 3]

    def dequantize(self) -> np.ndarray:  # [T, K]
        q, d = self.fields()[:2]
        t = q.shape[0]
        return (q.reshape(t, -1, 32) * d[:, :, None]).reshape(t, -1).astype(np.float32)
