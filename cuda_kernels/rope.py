"""Per-head RMSNorm (the q/k norm of Qwen3 and Ling) fused with NEOX RoPE: one block per (token, head), D threads.

out[t, h*D + i] for token t at position posv[0] + t: optional norm x / sqrt(mean_head(x^2) + eps) * w[i], then for
i < n_rot/2 the pair (i, i + n_rot/2) turns by theta = freq_scale * pos * base^(-2i/n_rot) (angles in float64,
as the reference); dims n_rot .. D pass unchanged.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from cuda_kernels.elementwise import block_sum
from cuda_kernels.env import jit


@jit
def norm_rope(x, w, out, posv, H, D, n_rot, base, freq_scale, eps, do_norm):
    """x, out float32 [T, H*D]; w float32 [D]; grid T*H, block D (<= 1024)."""
    bh, i = cuda.blockIdx.x, cuda.threadIdx.x
    t = bh // H
    v = x[bh * D + i]
    if do_norm:
        tot = block_sum(v * v)
        v = (v * (np.float32(1) / math.sqrt(tot / np.float32(D) + eps))) * w[i]
    sh = cuda.shared.array(1024, np.float32)
    sh[i] = v
    cuda.syncthreads()
    half = n_rot // 2
    if i < n_rot:
        j = i if i < half else i - half
        theta = freq_scale * np.float64(posv[0] + t) * math.pow(np.float64(base), -2.0 * j / n_rot)
        c, s = np.float32(math.cos(theta)), np.float32(math.sin(theta))
        if i < half:
            v = sh[i] * c - sh[i + half] * s
        else:
            v = sh[i - half] * s + sh[i] * c
    out[bh * D + i] = v
