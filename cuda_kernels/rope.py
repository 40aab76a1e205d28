"""Per-head RMSNorm (the q/k norm of Qwen3 and Ling) fused with NEOX RoPE: one block per (token, head), D threads.

out[t, h*D + i] for token t at position posv[0] + t: optional norm x / sqrt(mean_head(x^2) + eps) * w[i], then for
i < n_rot/2 the pair (i, i + n_rot/2) turns by theta = freq_scale * pos * base^(-2i/n_rot) (angles in float64,
as the reference); dims n_rot .. D pass unchanged.

``qk_rope_store`` does the q heads, the k heads and the KV-cache store of k and v in one launch (token generation
runs it once per layer instead of three kernels).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from cuda_kernels.attention import store4
from cuda_kernels.elementwise import block_sum
from cuda_kernels.env import device, grid_dep_wait, jit


@device
def _norm_rotate(v, w, i, pos, D, n_rot, base, freq_scale, eps, do_norm, sh):
    """Value i of a head (the block's D threads hold one each) -> normalised and rotated; sh: shared [>= D]."""
    if do_norm:
        tot = block_sum(v * v)
        v = (v * (np.float32(1) / math.sqrt(tot / np.float32(D) + eps))) * w[i]
    sh[i] = v
    cuda.syncthreads()
    half = n_rot // 2
    if i < n_rot:
        j = i if i < half else i - half
        theta = freq_scale * np.float64(pos) * math.pow(np.float64(base), -2.0 * j / n_rot)
        c, s = np.float32(math.cos(theta)), np.float32(math.sin(theta))
        if i < half:
            v = sh[i] * c - sh[i + half] * s
        else:
            v = sh[i - half] * s + sh[i] * c
    return v


@jit
def norm_rope(x, w, out, posv, H, D, n_rot, base, freq_scale, eps, do_norm):
    """x, out float32 [T, H*D]; w float32 [D]; grid T*H, block D (<= 1024)."""
    grid_dep_wait()
    bh, i = cuda.blockIdx.x, cuda.threadIdx.x
    sh = cuda.shared.array(1024, np.float32)
    out[bh * D + i] = _norm_rotate(x[bh * D + i], w, i, posv[0] + bh // H, D, n_rot, base, freq_scale, eps, do_norm,
                                   sh)


@jit
def qk_rope_store(q, k, v, wq, wk, qout, kq, kd, vq, vd, posv, H, Hkv, D, n_rot, base, freq_scale, eps, do_norm,
                  k_q8, v_q8):
    """q float32 [T, H*D] -> qout (normalised, rotated); k [T, Hkv*D] (normalised, rotated) and v [T, Hkv*D]
    -> cache cells posv[0] + t (f16 pairs or q8_0, as ``attention.kv_store``). Grid T*(H + Hkv), block D:
    block t*(H + Hkv) + h is q head h for h < H, else KV head h - H (its first D/4 threads store 4 values each)."""
    grid_dep_wait()
    b, i = cuda.blockIdx.x, cuda.threadIdx.x
    t, hh = b // (H + Hkv), b % (H + Hkv)
    pos = posv[0] + t
    sh = cuda.shared.array(1024, np.float32)
    if hh < H:
        qout[(t * H + hh) * D + i] = _norm_rotate(q[(t * H + hh) * D + i], wq, i, pos, D, n_rot, base, freq_scale,
                                                  eps, do_norm, sh)
        return
    hk = hh - H
    src = (t * Hkv + hk) * D
    kr = cuda.shared.array(1024, np.float32)
    kr[i] = _norm_rotate(k[src + i], wk, i, pos, D, n_rot, base, freq_scale, eps, do_norm, sh)
    cuda.syncthreads()
    W = Hkv * D
    ok = i < D // 4  # thread i stores values 4i .. 4i+3 (every thread calls: the q8_0 scale is a shuffle maximum)
    off = 4 * i if ok else 0
    store4(kr, off, kq, kd, pos, hk * (D // 4) + i, W, k_q8, ok)
    store4(v, src + off, vq, vd, pos, hk * (D // 4) + i, W, v_q8, ok)
