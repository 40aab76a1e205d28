"""Activation quantization for the integer dot products (ggml's Q8_0 / Q8_2 / Q8_K activations).

Per block of 32 values: d = absmax / 127, q = round_to_nearest_even(x / d) in int8 (ik: ``_mm256_round_ps``
nearest), and the block sums d * sum(q) per half block of 16, which the kernels need for weights with an
offset (Q4_0's -8, Q4_K/Q5_K mins, Q6_K's -32). Scales stay float32 (ik rounds Q8_2's to bf16; the difference
is far inside the quantized tier and the F16 tier never quantizes).

Dimension legend: T rows (tokens or routed rows), K values per row (a multiple of 32), B = K/32, S = K/16.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, fastmath=False)
def _quantize_row(x, q, d, s16):
    """One row: x f32 [K] -> q int8 [K], d f32 [B], s16 f32 [S]."""
    nb = x.shape[0] // 32
    for b in range(nb):
        amax = np.float32(0.0)
        for i in range(32):
            a = abs(x[32 * b + i])
            if a > amax:
                amax = a
        db = amax / np.float32(127.0)
        inv = np.float32(1.0) / db if db > 0 else np.float32(0.0)
        for h in range(2):
            tot = 0
            for i in range(16):
                v = np.int32(np.rint(x[32 * b + 16 * h + i] * inv))
                q[32 * b + 16 * h + i] = v
                tot += v
            s16[2 * b + h] = db * np.float32(tot)
        d[b] = db


@njit(parallel=True, cache=True)
def quantize_rows_q8(x, q, d, s16):
    """x f32 [T, K] -> q int8 [T, K], d f32 [T, B], s16 f32 [T, S] (written in place)."""
    for t in prange(x.shape[0]):
        _quantize_row(x[t], q[t], d[t], s16[t])


class QuantAct:
    """A quantized activation matrix: ``q`` int8 [T, K], ``d`` f32 [T, K/32], ``s16`` f32 [T, K/16]."""

    __slots__ = ("q", "d", "s16")

    def __init__(self, x: np.ndarray):
        x = np.ascontiguousarray(x, np.float32)
        t, k = x.shape
        self.q = np.empty((t, k), np.int8)
        self.d = np.empty((t, k // 32), np.float32)
        self.s16 = np.empty((t, k // 16), np.float32)
        quantize_rows_q8(x, self.q, self.d, self.s16)

    def dequantize(self) -> np.ndarray:  # for tests: [T, K]
        t, k = self.q.shape
        return (self.q.reshape(t, -1, 32) * self.d[:, :, None]).reshape(t, k).astype(np.float32)
