"""Element-wise and per-row ops: RMS norms, NEOX RoPE, residual add (NumPy twins in ``ref_ops``).

Dimension legend: T tokens, E row width, H heads, D head_dim. The same float64 accumulation as the twins,
so the results agree to the last bit or two.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from sweepbench.cpu_kernels.moe import combine_row
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


@njit(cache=True)
def _rope_row(x, cs, sn, out):
    """One head x [D] -> out [D]: rotates (x[i], x[i + n_rot/2]) for i < n_rot/2 = len(cs); dims n_rot.. copied."""
    half = cs.shape[0]
    for i in range(half):
        x0, x1 = x[i], x[half + i]
        out[i] = x0 * cs[i] - x1 * sn[i]
        out[half + i] = x0 * sn[i] + x1 * cs[i]
    for i in range(2 * half, x.shape[0]):
        out[i] = x[i]


@njit(parallel=True, cache=True)
def rope_neox(x, head_dim, cs, sn, out):
    """NEOX RoPE with a ``rope_table`` [T, n_rot/2] on every head of x [T, H*D]."""
    n_head = x.shape[1] // head_dim
    for t in prange(x.shape[0]):
        for h in range(n_head):
            o = h * head_dim
            _rope_row(x[t, o : o + head_dim], cs[t], sn[t], out[t, o : o + head_dim])


@njit(cache=True)
def norm_rope_rows(x, w, do_norm, eps, head_dim, cs, sn, out):
    """The per-head RMSNorm (when ``do_norm``) and the NEOX RoPE of x [T, H*D] in one pass, for a decode step:
    the same operations in the same order as ``rms_norm_heads`` then ``rope_neox``, so the same bits."""
    n_head = x.shape[1] // head_dim
    tmp = np.empty(head_dim, np.float32)
    for t in range(x.shape[0]):
        for h in range(n_head):
            o = h * head_dim
            if do_norm:
                _rms_row(x[t, o : o + head_dim], w, eps, tmp)
                _rope_row(tmp, cs[t], sn[t], out[t, o : o + head_dim])
            else:
                _rope_row(x[t, o : o + head_dim], cs[t], sn[t], out[t, o : o + head_dim])


@njit(parallel=True, cache=True)
def add(x, y, out):
    for t in prange(x.shape[0]):
        for i in range(x.shape[1]):
            out[t, i] = x[t, i] + y[t, i]


@njit(cache=True)
def residual_norm(x, y, cy, cw, combine_y, w, eps, do_norm, s_out, n_out):
    """A decode step's residual sum and the RMSNorm that reads it, in one call: s_out = x + y (with
    ``combine_y``: x + the weighted combine of the expert rows cy [T*K, E] by cw [T, K]), n_out = rms_norm(s_out)
    when ``do_norm``. The same operations in the same order as ``add`` / ``moe.combine`` / ``rms_norm``."""
    for t in range(x.shape[0]):
        s = s_out[t]
        if combine_y:  # c as moe.combine computes it, then x + c
            combine_row(cy, cw, t, s)
            for i in range(s.shape[0]):
                s[i] = x[t, i] + s[i]
        else:
            for i in range(s.shape[0]):
                s[i] = x[t, i] + y[t, i]
        if do_norm:
            _rms_row(s, w, eps, n_out[t])
