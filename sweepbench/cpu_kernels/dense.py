"""Element-wise and per-row ops: RMS norms, NEOX RoPE, residual add (NumPy twins in ``ref_ops``).

Dimension legend: T tokens, E row width, H heads, D head_dim. The same float64 accumulation as the twins,
so the results agree to the last bit or two.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from sweepbench.cpu_kernels.threads import with_serial_twin


@njit(cache=True)
def _rms_row(x, w, eps, out):
    ss = 0.0
    for i in range(x.shape[0]):
        ss += np.float64(x[i]) * np.float64(x[i])
    scale = np.float32(1.0 / np.sqrt(ss / x.shape[0] + eps))
    for i in range(x.shape[0]):
        out[i] = (x[i] * scale) * w[i]


@with_serial_twin
def rms_norm(x, w, eps, out):
    """x f32 [T, E] -> out [T, E] = x / sqrt(mean(x^2) + eps) * w."""
    for t in prange(x.shape[0]):
        _rms_row(x[t], w, eps, out[t])


@with_serial_twin
def rms_norm_heads(x, w, eps, head_dim, out):
    """Per-head RMSNorm of x [T, H*D] with one weight [D] for every head."""
    n_head = x.shape[1] // head_dim
    for item in prange(x.shape[0] * n_head):
        t, h = item // n_head, item % n_head
        _rms_row(x[t, h * head_dim : (h + 1) * head_dim], w, eps, out[t, h * head_dim : (h + 1) * head_dim])


@njit(cache=True)
def rope_table(pos0, t_n, n_rot, base, freq_scale, cs, sn):
    """cos/sin [T, n_rot/2] of theta = freq_scale * pos * base^(-2i/n_rot), angles in float64, rounded to
    float32 as the twin. Computed once per forward and shared by every layer's q and k."""
    half = n_rot // 2
    for t in range(t_n):
        pos = np.float64(pos0 + t)
        for i in range(half):
            theta = freq_scale * pos * base ** (-2.0 * i / n_rot)
            cs[t, i], sn[t, i] = np.float32(np.cos(theta)), np.float32(np.sin(theta))


@with_serial_twin
def rope_neox(x, head_dim, cs, sn, out):
    """NEOX RoPE with a ``rope_table``: rotates (x[i], x[i + n_rot/2]) of every head; dims n_rot..D copied."""
    half = cs.shape[1]
    n_rot = 2 * half
    n_head = x.shape[1] // head_dim
    for t in prange(x.shape[0]):
        for h in range(n_head):
            o = h * head_dim
            for i in range(half):
                x0, x1 = x[t, o + i], x[t, o + half + i]
                out[t, o + i] = x0 * cs[t, i] - x1 * sn[t, i]
                out[t, o + half + i] = x0 * sn[t, i] + x1 * cs[t, i]
            for i in range(n_rot, head_dim):
                out[t, o + i] = x[t, o + i]


@with_serial_twin
def add(x, y, out):
    for t in prange(x.shape[0]):
        for i in range(x.shape[1]):
            out[t, i] = x[t, i] + y[t, i]
