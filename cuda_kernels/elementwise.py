"""Row-wise kernels: embedding lookup, RMSNorm (optionally fused with the residual add and the q8_1 quantization
of its output), q8_1 quantization, adds, column splits and row gathers.

q8_1 activations (what the quantized GEMVs read): per 32 values d = amax / 127, q = round(x / d) (half away from
zero), stored as xq (int8 x4 per uint32 word, [T, K/4]) and xa ([T, K/32, 2] = d, d * sum(q)). Eight threads
own one 32-value block, four values each, and meet through three xor-shuffles.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from cuda_kernels.dequant import DEQUANT
from cuda_kernels.env import device, grid_dep_wait, jit, pack_h2, shfl_xor, warp_max, warp_sum

U32 = np.uint32


@device
def _round_away(v):
    a = math.floor(abs(v) + np.float32(0.5))
    return np.int32(-a if v < 0 else a)


@device
def quant4(v0, v1, v2, v3):
    """Four values of a thread whose 8-lane group holds one 32-value block -> (word, d, d * sum(q) of the block)."""
    amax = max(max(abs(v0), abs(v1)), max(abs(v2), abs(v3)))
    amax = max(amax, shfl_xor(amax, 1))
    amax = max(amax, shfl_xor(amax, 2))
    amax = max(amax, shfl_xor(amax, 4))
    d = np.float32(amax / np.float32(127))
    inv = np.float32(1) / d if d != 0 else np.float32(0)
    q0, q1, q2, q3 = _round_away(v0 * inv), _round_away(v1 * inv), _round_away(v2 * inv), _round_away(v3 * inv)
    word = (U32(q0) & U32(0xFF)) | ((U32(q1) & U32(0xFF)) << U32(8)) | ((U32(q2) & U32(0xFF)) << U32(16)) \
        | ((U32(q3) & U32(0xFF)) << U32(24))
    s = q0 + q1 + q2 + q3
    s += shfl_xor(s, 1)
    s += shfl_xor(s, 2)
    s += shfl_xor(s, 4)
    return word, d, d * np.float32(s)


@jit
def quantize_q8_1(x, xq, xa, n4):
    """x float32 [T*K] -> xq uint32 [T*K/4], xa float32 [T*K/32*2]; one thread per 4 values (n4 = T*K/4)."""
    grid_dep_wait()
    i = cuda.grid(1)
    ok = i < n4
    v0 = x[4 * i] if ok else np.float32(0)
    v1 = x[4 * i + 1] if ok else np.float32(0)
    v2 = x[4 * i + 2] if ok else np.float32(0)
    v3 = x[4 * i + 3] if ok else np.float32(0)
    word, d, s = quant4(v0, v1, v2, v3)
    if ok:
        xq[i] = word
        if i % 8 == 0:
            xa[i // 4] = d
            xa[i // 4 + 1] = s


@device
def _block_reduce(v, take_max):
    """Sum (or maximum) of v over the block, in a fixed order: warp butterflies, then the warp totals in warp
    order. Starts with a barrier, so a caller may reuse what the previous reduction's threads still read."""
    sh = cuda.shared.array(32, np.float32)
    w = warp_max(v) if take_max else warp_sum(v)
    cuda.syncthreads()
    if cuda.threadIdx.x % 32 == 0:
        sh[cuda.threadIdx.x // 32] = w
    cuda.syncthreads()
    tot = sh[0]
    for k in range(1, (cuda.blockDim.x + 31) // 32):
        tot = max(tot, sh[k]) if take_max else tot + sh[k]
    return tot


@device
def block_sum(v):
    return _block_reduce(v, False)


@device
def block_max(v):
    return _block_reduce(v, True)


@jit
def rms_norm(x, y, res, w, out, xq, xa, xh, E, eps, add, q8, h16):
    """Per row t (block t, E/4 threads rounded up to whole warps): s = x (+ y, written to res if add);
    out = s / sqrt(mean(s^2) + eps) * w; with q8, also the q8_1 quantization of out; with h16, out as f16 pairs
    in xh (uint32 [T, E/2], round to nearest even: the prefill GEMMs' activations, ``gemm.kernel``'s xh).
    x, y, res, out float32 [T, E]; w float32 [E]."""
    grid_dep_wait()
    t, i = cuda.blockIdx.x, cuda.threadIdx.x
    ok = i < E // 4
    b = t * E + 4 * i if ok else t * E
    v0, v1, v2, v3 = x[b], x[b + 1], x[b + 2], x[b + 3]
    if add:
        v0 += y[b]
        v1 += y[b + 1]
        v2 += y[b + 2]
        v3 += y[b + 3]
        if ok:
            res[b], res[b + 1], res[b + 2], res[b + 3] = v0, v1, v2, v3
    if not ok:
        v0 = v1 = v2 = v3 = np.float32(0)
    wi = 4 * i if ok else 0
    w0, w1, w2, w3 = w[wi], w[wi + 1], w[wi + 2], w[wi + 3]  # loaded before the barriers, not after
    tot = block_sum(v0 * v0 + v1 * v1 + v2 * v2 + v3 * v3)
    scale = np.float32(1) / math.sqrt(tot / np.float32(E) + eps)
    o0, o1 = (v0 * scale) * w0, (v1 * scale) * w1
    o2, o3 = (v2 * scale) * w2, (v3 * scale) * w3
    word, d, s = quant4(o0, o1, o2, o3)
    if ok:
        out[b], out[b + 1], out[b + 2], out[b + 3] = o0, o1, o2, o3
        if q8:
            j = b // 4
            xq[j] = word
            if i % 8 == 0:
                xa[j // 4] = d
                xa[j // 4 + 1] = s
        if h16:
            xh[b // 2], xh[b // 2 + 1] = pack_h2(o0, o1), pack_h2(o2, o3)


@device
def last_block(counter, slot, total, flag) -> bool:
    """True in the block that finishes last of ``total`` (the whole block gets the answer; ``flag`` a shared int32
    [1]): every block fences its outputs and thread 0 counts it in on ``counter[slot]`` (integer atomics: no float
    sums reordered); the last one resets the counter for the next launch. The tails of ``gemv`` and the merge of
    ``attention.warp_split_kernel`` run behind it, reading what the other blocks wrote."""
    cuda.threadfence()  # this block's outputs are visible device-wide before it is counted
    cuda.syncthreads()
    if cuda.threadIdx.x == 0:
        last = cuda.atomic.add(counter, slot, 1) == total - 1
        if last:
            counter[slot] = 0
        flag[0] = 1 if last else 0
    cuda.syncthreads()
    if flag[0] == 0:
        return False
    cuda.threadfence()
    return True


@device
def norm_tail(y, a, res, w, out, xq, xa, E, eps, counter, flag):
    """The tail of a one-row GEMV (``gemv.dense`` / ``down_combine`` with tail): once every block has written its
    part of y [E], the last block to count in (``counter[0]``, back to 0 after; ``flag`` a shared int32 [1])
    computes res = a + y, out = res / sqrt(mean(res^2) + eps) * w and out's q8_1 copy, as ``rms_norm`` with add
    does (its block's threads four values at a time; the sums in a fixed order). Saves the RMSNorm launch."""
    tid, nt = cuda.threadIdx.x, cuda.blockDim.x
    if not last_block(counter, 0, cuda.gridDim.x * cuda.gridDim.y, flag):
        return
    e4 = E // 4
    ss = np.float32(0)
    for j0 in range(0, e4, nt):
        j = j0 + tid
        if j < e4:
            b = 4 * j
            v0, v1, v2, v3 = a[b] + y[b], a[b + 1] + y[b + 1], a[b + 2] + y[b + 2], a[b + 3] + y[b + 3]
            res[b], res[b + 1], res[b + 2], res[b + 3] = v0, v1, v2, v3
            ss += v0 * v0 + v1 * v1 + v2 * v2 + v3 * v3
    scale = np.float32(1) / math.sqrt(block_sum(ss) / np.float32(E) + eps)
    for j0 in range(0, e4, nt):  # warp-uniform trips: quant4 shuffles within 8-lane groups (E/4 % 8 == 0)
        j = j0 + tid
        ok = j < e4
        b = 4 * j if ok else 0
        o0, o1 = (res[b] * scale) * w[b], (res[b + 1] * scale) * w[b + 1]
        o2, o3 = (res[b + 2] * scale) * w[b + 2], (res[b + 3] * scale) * w[b + 3]
        word, d, s = quant4(o0, o1, o2, o3)
        if ok:
            out[b], out[b + 1], out[b + 2], out[b + 3] = o0, o1, o2, o3
            xq[j] = word
            if j % 8 == 0:
                xa[j // 4] = d
                xa[j // 4 + 1] = s


@jit
def add(x, y, out, n):
    grid_dep_wait()
    i = cuda.grid(1)
    if i < n:
        out[i] = x[i] + y[i]


@jit
def copy_cols(x, out, T, width, offset, n_out):
    """out [T, n_out] = x [T, width][:, offset:offset+n_out]."""
    grid_dep_wait()
    i = cuda.grid(1)
    if i < T * n_out:
        t, j = i // n_out, i % n_out
        out[i] = x[t * width + offset + j]


@jit
def gather_rows(x, idx, out, n_rows, width):
    """out [n, width] = x[idx[i]] rows."""
    grid_dep_wait()
    i = cuda.grid(1)
    if i < n_rows * width:
        r, j = i // width, i % width
        out[i] = x[idx[r] * width + j]


_EMBED: dict = {}


def embed_kernel(kind: str):
    """tokens int32 [T] -> out float32 [T, E]: row tokens[t] of the table, one thread per 32-value chunk."""
    if kind not in _EMBED:
        deq = DEQUANT[kind]

        def embed(qs, hdr, tokens, out, T, E):
            grid_dep_wait()
            i = cuda.grid(1)
            nb = E // 32
            if i < T * nb:
                t, c = i // nb, i % nb
                deq(qs, hdr, tokens[t], c, E, out, t * E + 32 * c)

        _EMBED[kind] = jit(embed)
    return _EMBED[kind]


@jit
def silu_mul(g, u, out, n):
    """out = silu(g) * u, elementwise (the unfused SwiGLU when gate and up have different types)."""
    grid_dep_wait()
    i = cuda.grid(1)
    if i < n:
        x = g[i]
        out[i] = x / (np.float32(1) + math.exp(-x)) * u[i]


@jit
def combine_rows(y, w, out, T, E, k):
    """out [T, E] = sum_j w[t, j] * y[t*k + j], j in slot order; y [R, E], w [T, k]."""
    grid_dep_wait()
    i = cuda.grid(1)
    if i < T * E:
        t, n = i // E, i % E
        acc = w[t * k] * y[t * k * E + n]
        for j in range(1, k):
            acc = acc + w[t * k + j] * y[(t * k + j) * E + n]
        out[i] = acc
