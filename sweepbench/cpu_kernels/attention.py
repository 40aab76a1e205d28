"""KV cache and flash attention (online softmax over chunks of cells; never an n_kv x n_tokens matrix).

Cache layout per layer (C cells, padded to a multiple of ``CHUNK``; Hkv heads of D dims):
    f16   K  uint16 [Hkv, C/8, D, 8]   8 cells side by side per dim: one vcvtph2ps gives a dim of 8 cells
          V  uint16 [Hkv, C, D]        row-major: a cell's values are contiguous for the P.V accumulation
    q8_0  K  the Q8_0 R8 weight layout per head (uint8 [Hkv, C/8, D/32 * 272] block records: 8 f16 scales,
             then 256 quants): the 8 cells of a group are the 8 "rows" of ``qtiles.q8_t4``, the quantized
             query rows its "tokens"
          V  int8 [Hkv, C, D] and f16 scales [Hkv, C, D/32]
q8_0 blocks are quantized as ggml's reference (d = amax/127 in f16, q = roundf(x/d)).

Work item = (KV head h, tile of up to TQ tokens): its G = H/Hkv query heads x tokens are the rows of the tile;
per chunk of 32 cells: scores S [rows, 32] (scaled by 1/sqrt(D), causal mask), running max m, sum l and
output O [rows, D] rescaled by exp(m_old - m_new), V chunk converted to float32 once, O += P V. Items write
disjoint output rows: deterministic.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from sweepbench.cpu_kernels.dense import norm_rope_rows
from sweepbench.cpu_kernels.layouts import SIGNED_OFFSET
from sweepbench.cpu_kernels.quant_act import REC, quantize_row
from sweepbench.cpu_kernels.qtiles import q8_t1, q8_t4
from sweepbench.cpu_kernels.simd import (
    bcf, f2h, fma, fmul, fsub, h2f, hmax, hsum, ld1f, ldf, ldh, lds8f, mask_from, stf, vexp, zf,
)

CHUNK = 32  # cells per online-softmax step (a multiple of 16): S and the float32 V chunk (16 KB) stay in L1
TQ = 4  # tokens per prefill tile: K/V chunks are read once for TQ*G query rows


class KVCache:
    """Per-layer K/V arrays in the layouts above. ``n_filled`` is kept by the engine (truncate moves it)."""

    def __init__(self, n_layer: int, n_ctx: int, n_head_kv: int, head_dim: int, type_k: str, type_v: str):
        if head_dim % 32:
            raise ValueError(f"head_dim {head_dim} is not a multiple of 32")
        c = -(-n_ctx // CHUNK) * CHUNK
        self.type_k, self.type_v, self.n_ctx, self.head_dim, self.n_head_kv = type_k, type_v, c, head_dim, n_head_kv
        h, d = n_head_kv, head_dim
        self.k = [np.zeros((h, c // 8, d * 8), np.uint16) if type_k == "f16" else
                  np.zeros((h, c // 8, d // 32 * 272), np.uint8) for _ in range(n_layer)]
        self.v = [np.zeros((h, c, d), np.uint16 if type_v == "f16" else np.int8) for _ in range(n_layer)]
        self.vs = [np.zeros((h, c, d // 32) if type_v == "q8_0" else (1, 1, 1), np.uint16) for _ in range(n_layer)]

    @property
    def n_bytes(self) -> int:
        return sum(a.nbytes for a in self.k + self.v + self.vs)


# ------------------------------------------------------------------------------------------- store


@njit(cache=True)
def _q8_block(x, q):
    """ggml's quantize_row_q8_0_ref on 32 values: returns d (float32, to be stored as f16), fills q int8."""
    amax = np.float32(0.0)
    for i in range(32):
        amax = max(amax, abs(x[i]))
    d = amax / np.float32(127.0)
    inv = np.float32(1.0) / d if d != 0 else np.float32(0.0)
    for i in range(32):
        a = abs(x[i] * inv)
        f = np.floor(a)
        r = f + np.floor(np.float32(2.0) * (a - f))  # roundf: halves away from zero (gguf's np_roundf)
        q[i] = np.int8(-r if x[i] * inv < 0 else r)
    return d


@njit(cache=True)
def store_head(k, v, kc, vc, vs, pos0, k_q8, v_q8, h, q):
    """Head h of k, v f32 [T, Hkv*D] -> cells pos0..pos0+T of one layer's cache arrays (q: int8 [32] scratch)."""
    t_n = k.shape[0]
    d_n = k.shape[1] // kc.shape[0]
    for t in range(t_n):
        c = pos0 + t
        grp, r = c // 8, c % 8
        for b in range(d_n // 32):
            src = k[t, h * d_n + 32 * b : h * d_n + 32 * b + 32]
            if k_q8:
                dh = f2h(_q8_block(src, q))
                kc[h, grp, 272 * b + 2 * r], kc[h, grp, 272 * b + 2 * r + 1] = dh & 0xFF, dh >> 8
                for vv in range(8):
                    for i in range(4):
                        byte = np.uint8(q[4 * vv + i]) ^ np.uint8(0x80 if SIGNED_OFFSET else 0)
                        kc[h, grp, 272 * b + 16 + 32 * vv + 4 * r + i] = byte
            else:
                for i in range(32):
                    kc[h, grp, (32 * b + i) * 8 + r] = f2h(src[i])
            vsrc = v[t, h * d_n + 32 * b : h * d_n + 32 * b + 32]
            if v_q8:
                vs[h, c, b] = f2h(_q8_block(vsrc, q))
                for i in range(32):
                    vc[h, c, 32 * b + i] = q[i]
            else:
                for i in range(32):
                    vc[h, c, 32 * b + i] = f2h(vsrc[i])


@njit(cache=True)
def kv_store(k, v, kc, vc, vs, pos0, k_q8, v_q8):
    """k, v f32 [T, Hkv*D] -> cells pos0..pos0+T of one layer's cache arrays (layouts in the module doc)."""
    q = np.empty(32, np.int8)
    for h in range(kc.shape[0]):
        store_head(k, v, kc, vc, vs, pos0, k_q8, v_q8, h, q)


@njit(cache=True)
def rope_store_k(k, v, wk, do_norm, eps, cs, sn, kc, vc, vs, pos0, k_q8, v_q8):
    """A decode step's k normed per head (when ``do_norm``) and rotated (``dense.norm_rope_rows``), then stored
    with v at cells pos0.. (``kv_store``): three ops in one call, the cache gets the same bits."""
    k_rot = np.empty_like(k)
    norm_rope_rows(k, wk, do_norm, eps, vc.shape[2], cs, sn, k_rot)
    kv_store(k_rot, v, kc, vc, vs, pos0, k_q8, v_q8)


# ------------------------------------------------------------------------------------------- attention


@njit(cache=True)
def _scores_f16(kh, grp, D, Qb, rows, S1, gi):
    """S[r, 8gi : 8gi+16] = q_r . k for the 16 cells of groups grp, grp+1 (f16 K): 4 rows x 2 groups = 8
    accumulators, each K vector converted once per 4 rows. Qb: the query rows' bytes (float32 [rows, D]).
    Scratch arrays come flat (S1 = S [rows, CHUNK] flattened): a reshape per call is a helper call."""
    base = grp * D * 8
    n = CHUNK
    for rb in range(0, rows, 4):
        q0 = 4 * D * rb  # byte offsets of rows rb..rb+3 (rows past the end read the padded scratch: unused)
        q1, q2, q3 = q0 + 4 * D, q0 + 8 * D, q0 + 12 * D
        a0, a1, a2, a3, b0, b1, b2, b3 = zf(), zf(), zf(), zf(), zf(), zf(), zf(), zf()
        for d in range(D):
            ka, kb = ldh(kh, base + 8 * d), ldh(kh, base + 8 * D + 8 * d)
            x0, x1 = bcf(ld1f(Qb, q0 + 4 * d)), bcf(ld1f(Qb, q1 + 4 * d))
            x2, x3 = bcf(ld1f(Qb, q2 + 4 * d)), bcf(ld1f(Qb, q3 + 4 * d))
            a0, a1, a2, a3 = fma(ka, x0, a0), fma(ka, x1, a1), fma(ka, x2, a2), fma(ka, x3, a3)
            b0, b1, b2, b3 = fma(kb, x0, b0), fma(kb, x1, b1), fma(kb, x2, b2), fma(kb, x3, b3)
        for j, (a, b) in enumerate(((a0, b0), (a1, b1), (a2, b2), (a3, b3))):
            if rb + j < rows:
                stf(S1, (rb + j) * n + 8 * gi, a)
                stf(S1, (rb + j) * n + 8 * gi + 8, b)


@njit(cache=True)
def _scores_q8(kq, grp, D, QQ, rows, S1, gi):
    """The same with a q8_0 K: integer dots of the quantized query rows against the 16 cells of 2 groups."""
    n = CHUNK
    for gg in range(2):
        rb = 0
        while rb + 4 <= rows:
            a0, a1, a2, a3 = q8_t4(kq, grp + gg, D, QQ, rb, False)
            o = 8 * (gi + gg)
            stf(S1, rb * n + o, a0)
            stf(S1, (rb + 1) * n + o, a1)
            stf(S1, (rb + 2) * n + o, a2)
            stf(S1, (rb + 3) * n + o, a3)
            rb += 4
        while rb < rows:
            stf(S1, rb * n + 8 * (gi + gg), q8_t1(kq, grp + gg, D, QQ, rb, False))
            rb += 1


@njit(parallel=True, cache=True)
def flash_attn(q, out, pos0, n_head, kc, vc, vs, k_q8, v_q8):
    """q f32 [T, H*D] (token t at pos0+t) over one layer's cache -> out f32 [T, H*D]."""
    for item in prange(kc.shape[0] * n_tiles(q.shape[0])):
        attn_item(q, out, pos0, n_head, kc, vc, vs, k_q8, v_q8, item)


@njit(cache=True)
def n_tiles(t_n):
    tq = TQ if t_n >= TQ else 1
    return (t_n + tq - 1) // tq


@njit(cache=True)
def attn_item(q, out, pos0, n_head, kc, vc, vs, k_q8, v_q8, item):
    """One work item of ``flash_attn``: KV head item % Hkv, for the query heads of its group and the tokens of
    tile item // Hkv (online softmax over chunks of CHUNK cells)."""
    t_n = q.shape[0]
    h_kv, d_n = vc.shape[0], vc.shape[2]
    g_n = n_head // h_kv
    tq = TQ if t_n >= TQ else 1
    scale = np.float32(1.0 / math.sqrt(d_n))
    h, t0 = item % h_kv, (item // h_kv) * tq
    nt = min(tq, t_n - t0)
    rows = nt * g_n
    Q = np.zeros((rows + 3, d_n), np.float32)  # row = tt * G + g; 3 spare rows for the 4-row tiles
    for rr in range(rows):
        Q[rr] = q[t0 + rr // g_n, (h * g_n + rr % g_n) * d_n : (h * g_n + rr % g_n + 1) * d_n]
    QQ = np.empty(rows * d_n // 32 * REC if k_q8 else 1, np.uint8)  # the query rows as activation records
    if k_q8:
        for rr in range(rows):
            quantize_row(Q[rr], QQ, rr * d_n // 32 * REC)
    S = np.empty(rows * CHUNK, np.float32)  # [rows, CHUNK], flat
    O = np.zeros((rows + 3) * d_n, np.float32)  # [rows + 3, D], flat
    Vc = np.empty(CHUNK * d_n, np.float32)  # [CHUNK, D], flat
    m = np.full(rows, -np.inf, np.float32)
    l = np.zeros(rows, np.float32)
    kh, Qb, vh = kc[h].reshape(-1), Q.reshape(-1).view(np.uint8), vc[h].reshape(-1)
    last = pos0 + t0 + nt - 1  # last cell any row of the tile sees
    for c0 in range(0, last + 1, CHUNK):
        cn = min(CHUNK, last + 1 - c0)
        ng = (cn + 7) // 8
        for gi in range(0, ng, 2):  # pairs of 8-cell groups (a chunk holds whole pairs: CHUNK % 16 == 0)
            if k_q8:
                _scores_q8(kh.view(np.uint8), c0 // 8 + gi, d_n, QQ, rows, S, gi)
            else:
                _scores_f16(kh, c0 // 8 + gi, d_n, Qb, rows, S, gi)
        ng = (ng + 1) // 2 * 2
        _softmax_step(S, O, m, l, rows, ng, c0, pos0 + t0, g_n, scale, d_n)
        _v_chunk(vh, vs[h], c0, ng * 8, v_q8, Vc, d_n)
        _pv(S, Vc, O, rows, ng * 8, d_n)
    for rr in range(rows):
        inv = np.float32(1.0) / l[rr]
        o = out[t0 + rr // g_n, (h * g_n + rr % g_n) * d_n : (h * g_n + rr % g_n + 1) * d_n]
        for d in range(d_n):
            o[d] = O[rr * d_n + d] * inv


@njit(cache=True)
def _softmax_step(S1, O1, m, l, rows, ng, c0, pos_t0, g_n, scale, d_n):
    """Scale and mask S, update m and l, turn S into exp(S - m_new), rescale O by exp(m_old - m_new)."""
    n = CHUNK
    for r in range(rows):
        visible = pos_t0 + r // g_n - c0 + 1  # cells c0 .. c0 + visible - 1 are at or before the row's token
        mx = np.float32(-np.inf)
        for gi in range(ng):
            sv = mask_from(fmul(ldf(S1, r * n + 8 * gi), bcf(scale)), visible - 8 * gi, -np.inf)
            stf(S1, r * n + 8 * gi, sv)
            mx = max(mx, hmax(sv))
        m_new = max(m[r], mx)
        alpha = np.float32(math.exp(m[r] - m_new))  # 0 on the first chunk (m = -inf); cell 0 is always visible
        tot = np.float32(0.0)
        for gi in range(ng):
            p = vexp(fsub(ldf(S1, r * n + 8 * gi), bcf(m_new)))
            stf(S1, r * n + 8 * gi, p)
            tot += hsum(p)
        m[r], l[r] = m_new, l[r] * alpha + tot
        if alpha != 1:
            av = bcf(alpha)
            for d in range(0, d_n, 8):
                stf(O1, r * d_n + d, fmul(ldf(O1, r * d_n + d), av))


@njit(cache=True)
def _v_chunk(V1, vsh, c0, cn, v_q8, Vc1, d_n):
    """Cells c0..c0+cn of one head's V (flat [C*D]) -> float32 Vc [CHUNK, D] (flat)."""
    V8 = V1.view(np.uint8)
    for c in range(cn):
        for d in range(0, d_n, 8):
            if v_q8:
                x = fmul(lds8f(V8, (c0 + c) * d_n + d), bcf(h2f(vsh[c0 + c, d // 32])))
            else:
                x = ldh(V1, (c0 + c) * d_n + d)
            stf(Vc1, c * d_n + d, x)


@njit(cache=True)
def _pv(S1, V1, O1, rows, cn, d_n):
    """O[r, :] += sum_c P[r, c] Vc[c, :]: 4 rows x 16 dims (8 accumulators) per pass, one V load per 4 rows."""
    Sb = S1.view(np.uint8)
    n = CHUNK
    for rb in range(0, rows, 4):
        p0 = 4 * n * min(rb, rows - 1)  # byte offsets of the rows' P (rows past the end repeat the last)
        p1, p2, p3 = 4 * n * min(rb + 1, rows - 1), 4 * n * min(rb + 2, rows - 1), 4 * n * min(rb + 3, rows - 1)
        for ds in range(0, d_n, 16):
            o = rb * d_n + ds
            a0, a1, a2, a3 = ldf(O1, o), ldf(O1, o + d_n), ldf(O1, o + 2 * d_n), ldf(O1, o + 3 * d_n)
            b0, b1, b2, b3 = ldf(O1, o + 8), ldf(O1, o + d_n + 8), ldf(O1, o + 2 * d_n + 8), ldf(O1, o + 3 * d_n + 8)
            for c in range(cn):
                va, vb = ldf(V1, c * d_n + ds), ldf(V1, c * d_n + ds + 8)
                x0, x1 = bcf(ld1f(Sb, p0 + 4 * c)), bcf(ld1f(Sb, p1 + 4 * c))
                x2, x3 = bcf(ld1f(Sb, p2 + 4 * c)), bcf(ld1f(Sb, p3 + 4 * c))
                a0, a1, a2, a3 = fma(va, x0, a0), fma(va, x1, a1), fma(va, x2, a2), fma(va, x3, a3)
                b0, b1, b2, b3 = fma(vb, x0, b0), fma(vb, x1, b1), fma(vb, x2, b2), fma(vb, x3, b3)
            stf(O1, o, a0)
            stf(O1, o + 8, b0)
            stf(O1, o + d_n, a1)  # rows past the end land in O's 3 spare rows
            stf(O1, o + d_n + 8, b1)
            stf(O1, o + 2 * d_n, a2)
            stf(O1, o + 2 * d_n + 8, b2)
            stf(O1, o + 3 * d_n, a3)
            stf(O1, o + 3 * d_n + 8, b3)
