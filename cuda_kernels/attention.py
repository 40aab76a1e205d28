"""KV-cache stores and flash-decoding attention (split over N_KV, then a combine), f16 and q8_0 caches.

Cache layouts (per layer, flat): f16 -> uint32 words [n_ctx, Hkv*D/2] (f16 pairs); q8_0 -> qs uint32
[n_ctx, Hkv*D/4] (int8 x4) and d float32 [n_ctx, Hkv*D/32] (the f16-rounded block scale, as ggml stores it).

Decode (``split_kernel``): grid (n_ctx / SPLIT, Hkv, T); block = NW warps, warp w of block s owns cells
s*SPLIT + w*CPW ..; blocks past the token's last cell return at once, so a grid sized for n_ctx serves every
position (the position is a device scalar: one CUDA graph for all of them). A warp serves all G = H/Hkv query
heads of its KV head, so K and V are read once per group: lane l holds dims [l*D/32, (l+1)*D/32) of every head;
per step of CPS = 32/G cells the (cell, head) partial dots are summed by one reduce-scatter (31 shuffles for 32
scores), an online softmax per head follows, then P V. The block merges its warps; ``combine_kernel`` merges the
blocks of each (token, head) and normalises.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from cuda_kernels.elementwise import quant4
from cuda_kernels.env import device, group_max, group_sum, jit, pack_h2, reduce_scatter32, shfl_idx, unpack_h2, \
    warp_gather32, warp_max, warp_sum

NEG = np.float32(-np.inf)
# Warps per block and cells per warp of the split kernel. Each warp walks its cells in steps of 32/G, a chain
# of ~80 dependent shuffles per step: few cells per warp and many blocks, or the step latency dominates
# (measured on an H200, N_KV 2048, G = 8: 64 cells per warp took 38 us per layer, 16 took 12.8 us).
NW, CPW = 8, 8
SPLIT = NW * CPW  # cells per block
MAX_PARTS = 4096  # blocks over N_KV the combine can merge (n_ctx <= MAX_PARTS * SPLIT)
_CACHE: dict = {}
U32 = np.uint32


@jit
def kv_store(k, v, kq, kd, vq, vd, posv, T, W, k_q8, v_q8):
    """K, V float32 [T, W] (W = Hkv*D) -> cache cells posv[0] + t; one thread per 4 values, 8 per q8_0 block."""
    i = cuda.grid(1)
    n4 = T * (W // 4)
    ok = i < n4
    t, j = i // (W // 4), i % (W // 4)
    cell = posv[0] + t
    src = 4 * i if ok else 0
    for which in range(2):
        x = k if which == 0 else v
        q8 = k_q8 if which == 0 else v_q8
        v0, v1, v2, v3 = x[src], x[src + 1], x[src + 2], x[src + 3]
        word, d, _s = quant4(v0, v1, v2, v3)
        if ok:
            if q8:
                dst = kq if which == 0 else vq
                dst[cell * (W // 4) + j] = word
                if j % 8 == 0:
                    dd = kd if which == 0 else vd
                    d16, _z = unpack_h2(pack_h2(d, np.float32(0)))
                    dd[cell * (W // 32) + j // 8] = d16
            else:
                dst = kq if which == 0 else vq
                dst[cell * (W // 2) + 2 * j] = pack_h2(v0, v1)
                dst[cell * (W // 2) + 2 * j + 1] = pack_h2(v2, v3)


@device
def _s8(w, b):
    v = np.int32((w >> U32(8 * b)) & U32(0xFF))
    return np.float32(v - 256 if v > 127 else v)


def split_kernel(D: int, G: int, k_q8: bool, v_q8: bool, nw: int = NW, cpw: int = CPW):
    """(q, kq, kd, vq, vd, posv, part_o, part_ml, H, Hkv, n_parts, scale, t0) -> per block the merged
    (m, l, unnormalised O) of its cells for each of its G heads, for query rows t0 + blockIdx.z:
    part_ml [Tz, H, n_parts, 2], part_o [Tz, H, n_parts, D] (Tz = gridDim.z)."""
    key = ("split", D, G, k_q8, v_q8, nw, cpw)
    if key in _CACHE:
        return _CACHE[key]
    DPL, CPS, SPL = D // 32, 32 // G, nw * cpw
    GD, SH_O, SH_ML = G * (D // 32), (nw, G, D), (nw, G, 2)  # array shapes: compile-time constants

    @device
    def load(xq, xd, q8, cell, col, W, vals, valid):
        """dims col .. col+DPL of a cache row (W values) into vals; zeros for an invalid cell."""
        for i in range(DPL):
            vals[i] = np.float32(0)
        if valid:
            if q8:
                sc = xd[cell * (W // 32) + col // 32]
                for i in range(DPL):
                    vals[i] = sc * _s8(xq[cell * (W // 4) + (col + i) // 4], (col + i) % 4)
            elif DPL == 1:  # head_dim 32: half a word per lane
                lo, hi = unpack_h2(xq[cell * (W // 2) + col // 2])
                vals[0] = hi if col & 1 else lo
            else:
                for i in range(0, DPL, 2):
                    lo, hi = unpack_h2(xq[cell * (W // 2) + (col + i) // 2])
                    vals[i], vals[i + 1] = lo, hi

    def kernel(q, kq, kd, vq, vd, posv, part_o, part_ml, H, Hkv, n_parts, scale, t0):
        s, hk, z = cuda.blockIdx.x, cuda.blockIdx.y, cuda.blockIdx.z
        t = t0 + z
        w, lane = cuda.threadIdx.x // 32, cuda.threadIdx.x & 31
        n_kv = posv[0] + t + 1
        if s * SPL >= n_kv:
            return
        W = Hkv * D
        col = hk * D + lane * DPL
        qv = cuda.local.array(GD, np.float32)
        acc = cuda.local.array(GD, np.float32)
        for g in range(G):
            for i in range(DPL):
                qv[g * DPL + i] = q[(t * H + hk * G + g) * D + lane * DPL + i] * scale
                acc[g * DPL + i] = np.float32(0)
        part = cuda.local.array(32, np.float32)
        pv = cuda.local.array(32, np.float32)
        kv = cuda.local.array(DPL, np.float32)
        m_own, l_own = NEG, np.float32(0)  # running max and sum of head lane % G
        c0 = s * SPL + w * cpw
        for step in range(cpw // CPS):
            base = c0 + step * CPS
            for cc in range(CPS):
                load(kq, kd, k_q8, base + cc, col, W, kv, base + cc < n_kv)
                for g in range(G):
                    d = np.float32(0)
                    for i in range(DPL):
                        d += qv[g * DPL + i] * kv[i]
                    part[cc * G + g] = d
            sc = reduce_scatter32(part)  # score of (cell base + lane // G, head lane % G)
            if base + lane // G >= n_kv:
                sc = NEG
            m_new = max(m_own, group_max(sc, G))
            alpha = math.exp(m_own - m_new) if m_new != NEG else np.float32(1)
            p = math.exp(sc - m_new) if sc != NEG else np.float32(0)
            l_own = l_own * alpha + group_sum(p, G)
            m_own = m_new
            warp_gather32(p, pv)
            for g in range(G):
                a = shfl_idx(alpha, g)
                for i in range(DPL):
                    acc[g * DPL + i] *= a
            for cc in range(CPS):
                load(vq, vd, v_q8, base + cc, col, W, kv, base + cc < n_kv)
                for g in range(G):
                    for i in range(DPL):
                        acc[g * DPL + i] += pv[cc * G + g] * kv[i]
        # merge the NW warps of the block
        sh_o = cuda.shared.array(SH_O, np.float32)
        sh_ml = cuda.shared.array(SH_ML, np.float32)
        for g in range(G):
            for i in range(DPL):
                sh_o[w, g, lane * DPL + i] = acc[g * DPL + i]
        if lane < G:
            sh_ml[w, lane, 0] = m_own
            sh_ml[w, lane, 1] = l_own
        cuda.syncthreads()
        for idx in range(cuda.threadIdx.x, G * D, nw * 32):
            g, d = idx // D, idx % D
            mx = NEG
            for ww in range(nw):
                mx = max(mx, sh_ml[ww, g, 0])
            o, ll = np.float32(0), np.float32(0)
            for ww in range(nw):
                f = math.exp(sh_ml[ww, g, 0] - mx) if sh_ml[ww, g, 0] != NEG else np.float32(0)
                o += f * sh_o[ww, g, d]
                ll += f * sh_ml[ww, g, 1]
            h = hk * G + g
            part_o[((z * H + h) * n_parts + s) * D + d] = o
            if d == 0:
                part_ml[((z * H + h) * n_parts + s) * 2] = mx
                part_ml[((z * H + h) * n_parts + s) * 2 + 1] = ll

    _CACHE[key] = jit(kernel)
    return _CACHE[key]


def combine_kernel(D: int, split: int = SPLIT):
    """(part_o, part_ml, posv, out, H, n_parts, t0): grid (H, Tz), block D; out float32 [T, H*D], rows t0 + z.

    The block's threads share the parts: the maximum and the weights exp(m_s - max) go through shared memory,
    then thread d sums f_s * O_s[d] over the parts with eight independent accumulators (loads in flight
    together). Fixed orders throughout: the result does not depend on scheduling."""
    key = ("combine", D, split)
    if key in _CACHE:
        return _CACHE[key]
    NWD = D // 32

    def kernel(part_o, part_ml, posv, out, H, n_parts, t0):
        h, z, tid = cuda.blockIdx.x, cuda.blockIdx.y, cuda.threadIdx.x
        lane, w = tid & 31, tid // 32
        f = cuda.shared.array(MAX_PARTS, np.float32)
        red = cuda.shared.array(NWD, np.float32)
        t = t0 + z
        used = min((posv[0] + t + split) // split, n_parts)
        base = (z * H + h) * n_parts
        mx = NEG
        for s in range(tid, used, D):
            mx = max(mx, part_ml[(base + s) * 2])
        mx = warp_max(mx)
        if lane == 0:
            red[w] = mx
        cuda.syncthreads()
        mx = NEG
        for i in range(NWD):
            mx = max(mx, red[i])
        cuda.syncthreads()
        ll = np.float32(0)
        for s in range(tid, used, D):
            fs = math.exp(part_ml[(base + s) * 2] - mx)
            f[s] = fs
            ll += fs * part_ml[(base + s) * 2 + 1]
        ll = warp_sum(ll)
        if lane == 0:
            red[w] = ll
        cuda.syncthreads()
        ll = np.float32(0)
        for i in range(NWD):
            ll += red[i]
        o = cuda.local.array(8, np.float32)
        for i in range(8):
            o[i] = np.float32(0)
        s = 0
        while s + 8 <= used:  # eight loads in flight per iteration
            for i in range(8):
                o[i] += f[s + i] * part_o[(base + s + i) * D + tid]
            s += 8
        while s < used:
            o[0] += f[s] * part_o[(base + s) * D + tid]
            s += 1
        out[(t * H + h) * D + tid] = (((o[0] + o[1]) + (o[2] + o[3])) + ((o[4] + o[5]) + (o[6] + o[7]))) / ll

    _CACHE[key] = jit(kernel)
    return _CACHE[key]
