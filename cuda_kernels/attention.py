"""KV-cache stores and flash-decoding attention on the tensor cores (split over N_KV, then a combine), f16 and
q8_0 caches. The engine's split kernel is ``warp_split_kernel`` (independent warps, 256-cell parts; below);
``split_kernel`` (64-cell parts, P staged in shared memory) stays for A/B runs (``CudaOps.att_split = "tile"``,
``gpu_profile.py --att-split``, ``gpu_attention_micro.py --variants``).

Cache layouts (per layer, flat): f16 -> uint32 words [n_ctx, Hkv*D/2] (f16 pairs); q8_0 -> qs uint32
[n_ctx, Hkv*D/4] (int8 x4) and d float32 [n_ctx, Hkv*D/32] (the f16-rounded block scale, as ggml stores it).

Decode (``split_kernel``): grid (n_ctx / BKV, Hkv, T), block NWD warps. Block s takes cells s*BKV .. s*BKV+63 of
KV head hk and serves all G = H/Hkv query heads of the group as the rows of one m16 tile (rows G..15 are zero):
warp w computes S = Q K^T for cells 8w .. 8w+7 with the K rows as mma B operands loaded straight from the cache,
the row maxima and sums meet in shared memory, P goes there as f16 (the A operand), and warp w computes
O = P V for its D/NWD dims, V words loaded straight from the cache too. Every chain is short (8 mma). It writes
(m, l, unnormalised O) per head as part s. Blocks past the token's last cell return at once, so a grid sized
for n_ctx serves every position (the position is a device scalar: one CUDA graph for all of them).
``combine_kernel`` merges the parts of each (token, head) and writes the q8_1 copy of the output that the
output projection reads. Q and P enter the mma as f16, as in the prefill. Where a token spans at most
``FUSE_PARTS`` parts, the warp split's ``fused`` variant merges them itself: the last of a (token, KV head)'s
blocks to finish (a counter, no float atomics) reads every part in part order and writes the output and its
q8_1 copy, so a shallow decode step needs no combine launch.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from cuda_kernels.elementwise import block_max, block_sum, last_block, quant4
from cuda_kernels.env import device, grid_dep_wait, jit, ldg4, mma_f16, pack_h2, prmt, shfl_xor, unpack_h2
from cuda_kernels.flash import BKV
from cuda_kernels.tiles import q8_pair

NEG = np.float32(-np.inf)
NWD = 8  # warps per split block: warp w computes S for cells 8w .. 8w+7 and O for dims D/8 * w ..
COMBINE_WARPS = 16  # part groups per combine block (a warp each: 32 dims of one head, every 16th part)
MAX_PARTS = 4096  # blocks over N_KV the combine can merge (n_ctx <= MAX_PARTS * BKV)
MAX_GROUP = 16  # query heads per KV head: the rows of one m16 tile
MAX_CONTEXT = MAX_PARTS * BKV  # cells the decode attention serves


def unsupported_heads(n_head: int, n_head_kv: int, head_dim: int) -> bool:
    """True for head layouts these kernels do not run: G = H/Hkv query heads in one m16 tile, whole 32-dim
    q8_1 blocks per head, and a staged prefill tile within 48 KiB of shared memory."""
    return bool(n_head % n_head_kv or n_head // n_head_kv > MAX_GROUP or head_dim % 32 or head_dim > 128)
_CACHE: dict = {}
U32 = np.uint32


def _store4(x, src, dst, dd, cell, j, W, q8, ok):
    """Values x[src .. src+3] -> word j of a cache row (f16 pairs, or int8 x4 + the block scale); the 8 lanes of
    a q8_0 block call it together (the scale is a shuffle maximum)."""
    v0, v1, v2, v3 = x[src], x[src + 1], x[src + 2], x[src + 3]
    word, d, _s = quant4(v0, v1, v2, v3)
    if ok:
        if q8:
            dst[cell * (W // 4) + j] = word
            if j % 8 == 0:
                d16, _z = unpack_h2(pack_h2(d, np.float32(0)))
                dd[cell * (W // 32) + j // 8] = d16
        else:
            dst[cell * (W // 2) + 2 * j] = pack_h2(v0, v1)
            dst[cell * (W // 2) + 2 * j + 1] = pack_h2(v2, v3)


store4 = device(_store4)


@jit
def kv_store(k, v, kq, kd, vq, vd, posv, T, W, k_q8, v_q8):
    """K, V float32 [T, W] (W = Hkv*D) -> cache cells posv[0] + t; one thread per 4 values, 8 per q8_0 block."""
    grid_dep_wait()
    i = cuda.grid(1)
    n4 = T * (W // 4)
    ok = i < n4
    t, j = i // (W // 4), i % (W // 4)
    src = 4 * i if ok else 0
    store4(k, src, kq, kd, posv[0] + t, j, W, k_q8, ok)
    store4(v, src, vq, vd, posv[0] + t, j, W, v_q8, ok)


def word_copier(n: int):
    """Device function copy(words, base, out, o0): n words from words[base ..] into out[o0 ..], in 16-byte loads
    where n fills them."""
    key = ("copier", n)
    if key in _CACHE:
        return _CACHE[key]
    VEC = n % 4 == 0

    @device
    def copy(words, base, out, o0):
        for i in range(0, n, 4 if VEC else 1):
            if VEC:
                out[o0 + i], out[o0 + i + 1], out[o0 + i + 2], out[o0 + i + 3] = ldg4(words, base + i)
            else:
                out[o0 + i] = words[base + i]

    _CACHE[key] = copy
    return copy


def row_loader(q8: bool, dims: int):
    """Device function load(words, scales, cell, col0, W, valid, out, o0): dims values of a cache row from column
    col0 as dims/2 f16 pairs into out[o0 ..] (q8_0 bytes widened with their block scales; 16-byte loads where the
    words fill them), zeros for an invalid cell. W = Hkv*D, the row length in values."""
    key = ("loader", q8, dims)
    if key in _CACHE:
        return _CACHE[key]
    NW, NQ = dims // 2, dims // 4  # f16-pair words out; q8_0 words in
    VEC = NQ % 4 == 0
    copy_words = word_copier(NW)

    @device
    def load(words, scales, cell, col0, W, valid, out, o0):
        if not valid:
            for i in range(NW):
                out[o0 + i] = U32(0)
        elif q8:
            base = cell * (W // 4) + col0 // 4
            for i in range(0, NQ, 4 if VEC else 1):
                if VEC:
                    w0, w1, w2, w3 = ldg4(words, base + i)
                else:
                    w0, w1, w2, w3 = words[base + i], U32(0), U32(0), U32(0)
                for u in range(4 if VEC else 1):
                    wd = w0 if u == 0 else (w1 if u == 1 else (w2 if u == 2 else w3))
                    d = scales[cell * (W // 32) + (col0 + 4 * (i + u)) // 32]
                    out[o0 + 2 * (i + u)] = q8_pair(wd, 0, d)
                    out[o0 + 2 * (i + u) + 1] = q8_pair(wd, 2, d)
        else:
            copy_words(words, cell * (W // 2) + col0 // 2, out, o0)

    _CACHE[key] = load
    return load


def q8_row_parts(dims: int):
    """``row_loader``'s q8_0 load in two device functions, for a warp that fetches every cell of a tile before it
    widens any (one wait for memory per tile step, not one per cell: a widen needs its loads, and the validity
    branch of ``row_loader`` kept the next cell's loads behind it).

    fetch(words, scales, cell, col0, W, valid, raw, r0, sc, s0): the dims/4 words (16-byte loads where they fill
    them) into raw[r0 ..] and the block scales into sc[s0 ..]: one where dims divides 32 (the values then lie in
    one block), else one per word. An invalid cell reads cell 0 instead: no branch.
    widen(raw, r0, sc, s0, valid, out, o0): the dims/2 f16 pairs into out[o0 ..], zeros for an invalid cell (the
    same bits as ``row_loader``)."""
    key = ("q8parts", dims)
    if key in _CACHE:
        return _CACHE[key]
    NQ = dims // 4
    ONE = 32 % dims == 0
    NS = 1 if ONE else NQ
    copy_words = word_copier(NQ)

    @device
    def fetch(words, scales, cell, col0, W, valid, raw, r0, sc, s0):
        c = cell if valid else 0
        copy_words(words, c * (W // 4) + col0 // 4, raw, r0)
        for j in range(NS):
            sc[s0 + j] = scales[c * (W // 32) + (col0 + 4 * j) // 32]

    @device
    def widen(raw, r0, sc, s0, valid, out, o0):
        for i in range(NQ):
            d = sc[s0 + (0 if ONE else i)]
            lo, hi = q8_pair(raw[r0 + i], 0, d), q8_pair(raw[r0 + i], 2, d)
            out[o0 + 2 * i] = lo if valid else U32(0)
            out[o0 + 2 * i + 1] = hi if valid else U32(0)

    _CACHE[key] = (fetch, widen, NQ, NS)
    return _CACHE[key]


def split_kernel(D: int, k_q8: bool, v_q8: bool, nwd: int = NWD):
    """(q, kq, kd, vq, vd, posv, part_o, part_ml, H, Hkv, n_parts, scale, t0) -> per block the (m, l,
    unnormalised O) of its BKV cells for each of the G heads of its KV head, for query row t0 + blockIdx.z:
    part_ml [Tz, H, n_parts, 2], part_o [Tz, H, n_parts, D] (Tz = gridDim.z). Block 32 * nwd threads.

    The mma operands come straight from the cache, no staging: the head dim is summed in a permuted order
    (lane quad tq owns dims tq*D/4 .. (tq+1)*D/4 - 1: 16-byte loads of one cell row, Q packed to match), and
    the O columns are permuted (lane g owns the dim pair 2g, 2g+1 of each 16-dim slice: one word per cell,
    two cells' words make a B register with one byte permute)."""
    key = ("split", D, k_q8, v_q8, nwd)
    if key in _CACHE:
        return _CACHE[key]
    NKS = D // 16  # k16 steps over the head dim
    NQ, NDW = 8 // nwd, D // 8 // nwd  # per warp: n8 tiles of S (cells), n8 tiles of O (dims)
    if NDW % 2:
        raise ValueError(f"split_kernel: {nwd} warps leave an odd number of O tiles per warp (D = {D})")
    DPL = D // 4  # K dims per lane of a quad
    KW = DPL // 2  # f16-pair words per lane
    VW, DS = NDW // 2, D // nwd  # V words per cell and lane; dims per warp
    PP = BKV // 2 + 4  # padded row (words) of the f16 P tile [16 rows][BKV cells]
    SP, QA, OA, SC, SV = 16 * PP, 4 * NKS, 4 * NDW, 4 * NQ, 4 * VW
    SROW = (nwd, 16)  # per warp, per row of the tile

    load_k = row_loader(k_q8, DPL)

    @device
    def load_v(vq, vd, cell, col, W, valid):
        """Dims col, col+1 of a V row as one f16 pair (0 for an invalid cell)."""
        if not valid:
            return U32(0)
        if v_q8:
            return q8_pair(vq[cell * (W // 4) + col // 4], col % 4, vd[cell * (W // 32) + col // 32])
        return vq[cell * (W // 2) + col // 2]

    def kernel(q, kq, kd, vq, vd, posv, part_o, part_ml, H, Hkv, n_parts, scale, t0):
        grid_dep_wait()
        s, hk, z = cuda.blockIdx.x, cuda.blockIdx.y, cuda.blockIdx.z
        t = t0 + z
        n_kv = posv[0] + t + 1
        c0 = s * BKV
        if c0 >= n_kv:
            return
        tid = cuda.threadIdx.x
        lane, w = tid & 31, tid // 32
        g, tq = lane >> 2, lane & 3
        G, W = H // Hkv, Hkv * D
        qa = cuda.local.array(QA, np.uint32)
        for kk in range(NKS):  # rows g and g + 8 of the tile: heads hk*G + row (zeros past G), permuted dims
            for rr in range(2):
                row = g + 8 * rr
                lo, hi = U32(0), U32(0)
                if row < G:
                    b = (t * H + hk * G + row) * D + tq * DPL + 4 * kk
                    lo, hi = pack_h2(q[b] * scale, q[b + 1] * scale), pack_h2(q[b + 2] * scale, q[b + 3] * scale)
                qa[kk * 4 + rr], qa[kk * 4 + 2 + rr] = lo, hi
        sp = cuda.shared.array(SP, np.uint32)  # P as f16 pairs, the A operand of P V
        smax = cuda.shared.array(SROW, np.float32)
        ssum = cuda.shared.array(SROW, np.float32)
        kw = cuda.local.array(KW, np.uint32)
        sc = cuda.local.array(SC, np.float32)
        m0, m1 = NEG, NEG
        for j in range(NQ):  # S = Q K^T on this warp's cells
            nt = w + j * nwd
            cell = c0 + nt * 8 + g
            load_k(kq, kd, cell, hk * D + tq * DPL, W, cell < n_kv, kw, 0)
            z0 = np.float32(0)
            d0, d1, d2, d3 = z0, z0, z0, z0
            for kk in range(NKS):
                d0, d1, d2, d3 = mma_f16(qa[kk * 4], qa[kk * 4 + 1], qa[kk * 4 + 2], qa[kk * 4 + 3], kw[2 * kk],
                                         kw[2 * kk + 1], d0, d1, d2, d3)
            sc[j * 4], sc[j * 4 + 1], sc[j * 4 + 2], sc[j * 4 + 3] = d0, d1, d2, d3
            for e in range(4):
                if c0 + nt * 8 + 2 * tq + (e & 1) >= n_kv:
                    sc[j * 4 + e] = NEG
            m0 = max(m0, max(sc[j * 4], sc[j * 4 + 1]))
            m1 = max(m1, max(sc[j * 4 + 2], sc[j * 4 + 3]))
        m0 = max(m0, shfl_xor(m0, 1))  # the 4 lanes of a row quad
        m0 = max(m0, shfl_xor(m0, 2))
        m1 = max(m1, shfl_xor(m1, 1))
        m1 = max(m1, shfl_xor(m1, 2))
        if tq == 0:
            smax[w, g], smax[w, g + 8] = m0, m1
        cuda.syncthreads()
        for k in range(nwd):  # the block's row maxima (cell c0 is valid: finite)
            m0, m1 = max(m0, smax[k, g]), max(m1, smax[k, g + 8])
        l0, l1 = np.float32(0), np.float32(0)
        for j in range(NQ):
            nt = w + j * nwd
            for e in range(4):
                p = math.exp(sc[j * 4 + e] - (m0 if e < 2 else m1)) if sc[j * 4 + e] != NEG else np.float32(0)
                sc[j * 4 + e] = p
                if e < 2:
                    l0 += p
                else:
                    l1 += p
            sp[g * PP + nt * 4 + tq] = pack_h2(sc[j * 4], sc[j * 4 + 1])
            sp[(g + 8) * PP + nt * 4 + tq] = pack_h2(sc[j * 4 + 2], sc[j * 4 + 3])
        l0 += shfl_xor(l0, 1)
        l0 += shfl_xor(l0, 2)
        l1 += shfl_xor(l1, 1)
        l1 += shfl_xor(l1, 2)
        if tq == 0:
            ssum[w, g], ssum[w, g + 8] = l0, l1
        o = cuda.local.array(OA, np.float32)
        for i in range(OA):
            o[i] = np.float32(0)
        vw = cuda.local.array(SV, np.uint32)
        col0 = hk * D + w * DS + 2 * g  # this lane's dim pair in each 16-dim slice of the warp's dims
        cuda.syncthreads()
        for j in range(BKV // 16):  # O += P V over this warp's dims, k16 steps over the cells
            p0, p1 = sp[g * PP + j * 8 + tq], sp[(g + 8) * PP + j * 8 + tq]
            p2, p3 = sp[g * PP + j * 8 + tq + 4], sp[(g + 8) * PP + j * 8 + tq + 4]
            for ci in range(4):  # the B rows of this lane: cells 2tq, 2tq+1, 2tq+8, 2tq+9 of the step
                cell = c0 + j * 16 + 2 * tq + (ci & 1) + 8 * (ci >> 1)
                for wp in range(VW):
                    vw[ci * VW + wp] = load_v(vq, vd, cell, col0 + 16 * wp, W, cell < n_kv)
            for dl in range(NDW):
                wp = dl // 2
                sel = U32(0x7632) if dl % 2 else U32(0x5410)  # the pair's second dim, or its first
                d0, d1, d2, d3 = mma_f16(p0, p1, p2, p3, prmt(vw[wp], vw[VW + wp], sel),
                                         prmt(vw[2 * VW + wp], vw[3 * VW + wp], sel), o[dl * 4], o[dl * 4 + 1],
                                         o[dl * 4 + 2], o[dl * 4 + 3])
                o[dl * 4], o[dl * 4 + 1], o[dl * 4 + 2], o[dl * 4 + 3] = d0, d1, d2, d3
        for rr in range(2):
            row = g + 8 * rr
            if row < G:
                b = ((z * H + hk * G + row) * n_parts + s)
                for dl in range(NDW):  # O column n of tile dl is dim w*DS + 16*(dl // 2) + 2n + dl % 2
                    d = w * DS + 16 * (dl // 2) + 4 * tq + dl % 2
                    part_o[b * D + d] = o[dl * 4 + 2 * rr]
                    part_o[b * D + d + 2] = o[dl * 4 + 2 * rr + 1]
                if w == 0 and tq == 0:
                    ll = np.float32(0)
                    for k in range(nwd):  # in warp order
                        ll += ssum[k, row]
                    part_ml[b * 2] = m0 if rr == 0 else m1
                    part_ml[b * 2 + 1] = ll

    _CACHE[key] = jit(kernel)
    return _CACHE[key]


WS_WARPS = 4  # warps per block of the warp-split kernel
TILE = 16  # cells per warp tile of the warp-split kernel: the k16 of one P V mma
TPW = 4  # tiles per warp and part: a part is nw * TILE * TPW cells
FUSE_PARTS = 4  # parts up to which the warp split's last block merges them (no combine launch)


def part_cells(nw: int, tpw: int = TPW) -> int:
    """Cells per part (per block over N_KV) of ``warp_split_kernel``."""
    return nw * TILE * tpw


def warp_split_kernel(D: int, k_q8: bool, v_q8: bool, nw: int = 4, tpw: int = TPW, fused: bool = False,
                      hoist: bool = False):
    """Flash-decoding split with independent warps, ``split_kernel``'s arguments and outputs (parts of
    ``part_cells(nw, tpw)`` cells) and then (out, xq, xa, counter, q8): grid (n_ctx / part, Hkv, T), block 32 * nw.

    ``fused``: the block that finishes a (token t0 + z, KV head hk) last (``counter[z * Hkv + hk]`` counts them,
    then goes back to 0) merges its parts 0 .. used-1 in that order and writes out (float32 [T, H*D]) and, with
    q8, its q8_1 copy xq / xa, as ``combine_kernel`` does. Meant for grids of a few parts (``FUSE_PARTS``):
    one block then reads every part. ``hoist``: a q8_0 side's cells of a tile are all fetched before any is
    widened (``q8_row_parts``); the same bits.

    Warp w of block s takes the 16-cell tiles s*part + 16*(w + nw*i), i < tpw, and keeps its own online softmax
    (m, l, O) in registers: per tile, K and V of all 16 cells are loaded at once (one memory round trip),
    S = Q K^T is two n8 tiles whose accumulators are already the A fragment of P V (P never leaves registers),
    and O += P V runs over D/8 n8 tiles. No barrier until the end, where the nw warps merge in warp order through
    shared memory. Lane (g, tq) loads dims tq*D/4 .. of K cells g and g+8 (16-byte loads; the head dim is summed
    in that permuted order, Q packed to match) and dims (D/8)*g .. (D/8)*g + D/8 - 1 of V cells 2tq, 2tq+1,
    2tq+8, 2tq+9 (O tile n, column c is dim (D/8)*c + n; two cells' words make a B register with one permute)."""
    hoist = hoist and (k_q8 or v_q8)
    key = ("wsplit", D, k_q8, v_q8, nw, tpw, fused, hoist)
    if key in _CACHE:
        return _CACHE[key]
    NKS, DPL, DV = D // 16, D // 4, D // 8  # k16 steps over the head dim; K dims per lane; V dims per lane
    KW, VW = DPL // 2, DV // 2  # K / V f16-pair words per lane and cell
    NT = DV  # n8 tiles of O (D dims)
    NT32, CH = 32 * nw, part_cells(nw, tpw)
    QA, OA, KA, VA = 4 * NKS, 4 * NT, 2 * KW, 4 * VW  # local array sizes (compile-time constants)
    SO = nw * MAX_GROUP * D  # per warp, per tile row: its unnormalised O

    load_k, load_v = row_loader(k_q8, DPL), row_loader(v_q8, DV)
    HK, HV = hoist and k_q8, hoist and v_q8  # which sides fetch a tile's cells first, then widen them
    fetch_k, widen_k, NQK, NSK = q8_row_parts(DPL)
    fetch_v, widen_v, NQV, NSV = q8_row_parts(DV)
    KRA, KSA, VRA, VSA = 2 * NQK, 2 * NSK, 4 * NQV, 4 * NSV  # their local array sizes
    merge_last = _merge_last(D, CH, nw)

    def kernel(q, kq, kd, vq, vd, posv, part_o, part_ml, H, Hkv, n_parts, scale, t0, out, xq, xa, counter, q8):
        grid_dep_wait()
        s, hk, z = cuda.blockIdx.x, cuda.blockIdx.y, cuda.blockIdx.z
        t = t0 + z
        n_kv = posv[0] + t + 1
        c0 = s * CH
        if c0 >= n_kv:
            return
        tid = cuda.threadIdx.x
        lane, w = tid & 31, tid // 32
        g, tq = lane >> 2, lane & 3
        G, W = H // Hkv, Hkv * D
        qa = cuda.local.array(QA, np.uint32)  # Q as the A operand: rows = the G heads, permuted dims
        for kk in range(NKS):
            for rr in range(2):
                row = g + 8 * rr
                lo, hi = U32(0), U32(0)
                if row < G:
                    b = (t * H + hk * G + row) * D + tq * DPL + 4 * kk
                    lo, hi = pack_h2(q[b] * scale, q[b + 1] * scale), pack_h2(q[b + 2] * scale, q[b + 3] * scale)
                qa[kk * 4 + rr], qa[kk * 4 + 2 + rr] = lo, hi
        o = cuda.local.array(OA, np.float32)  # [NT tiles][rows g, g+8 x columns 2tq, 2tq+1]
        for i in range(OA):
            o[i] = np.float32(0)
        kw = cuda.local.array(KA, np.uint32)  # [cells g, g+8][KW]
        vw = cuda.local.array(VA, np.uint32)  # [cells 2tq, 2tq+1, 2tq+8, 2tq+9][VW]
        sc = cuda.local.array(8, np.float32)  # [S tile][rows g, g+8 x cells 2tq, 2tq+1]
        kr, ks = cuda.local.array(KRA, np.uint32), cuda.local.array(KSA, np.float32)  # hoisted K: words, scales
        vr, vs = cuda.local.array(VRA, np.uint32), cuda.local.array(VSA, np.float32)  # ... and V's
        m0, m1, l0, l1 = NEG, NEG, np.float32(0), np.float32(0)
        for it in range(tpw):
            if c0 + it * nw * TILE < n_kv:  # block-uniform (warp helpers below); a warp past n_kv adds nothing
                b0 = c0 + (it * nw + w) * TILE
                for h2 in range(2):
                    cell = b0 + g + 8 * h2
                    if HK:
                        fetch_k(kq, kd, cell, hk * D + tq * DPL, W, cell < n_kv, kr, h2 * NQK, ks, h2 * NSK)
                    else:
                        load_k(kq, kd, cell, hk * D + tq * DPL, W, cell < n_kv, kw, h2 * KW)
                for ci in range(4):
                    cell = b0 + 2 * tq + (ci & 1) + 8 * (ci >> 1)
                    if HV:
                        fetch_v(vq, vd, cell, hk * D + DV * g, W, cell < n_kv, vr, ci * NQV, vs, ci * NSV)
                    else:
                        load_v(vq, vd, cell, hk * D + DV * g, W, cell < n_kv, vw, ci * VW)
                if HK:
                    for h2 in range(2):
                        widen_k(kr, h2 * NQK, ks, h2 * NSK, b0 + g + 8 * h2 < n_kv, kw, h2 * KW)
                if HV:
                    for ci in range(4):
                        cell = b0 + 2 * tq + (ci & 1) + 8 * (ci >> 1)
                        widen_v(vr, ci * NQV, vs, ci * NSV, cell < n_kv, vw, ci * VW)
                for h2 in range(2):  # S = Q K^T for cells b0 + 8*h2 ..
                    z0 = np.float32(0)
                    d0, d1, d2, d3 = z0, z0, z0, z0
                    for kk in range(NKS):
                        d0, d1, d2, d3 = mma_f16(qa[kk * 4], qa[kk * 4 + 1], qa[kk * 4 + 2], qa[kk * 4 + 3],
                                                 kw[h2 * KW + 2 * kk], kw[h2 * KW + 2 * kk + 1], d0, d1, d2, d3)
                    sc[h2 * 4], sc[h2 * 4 + 1], sc[h2 * 4 + 2], sc[h2 * 4 + 3] = d0, d1, d2, d3
                    for e in range(4):
                        if b0 + 8 * h2 + 2 * tq + (e & 1) >= n_kv:
                            sc[h2 * 4 + e] = NEG
                mt0 = max(max(sc[0], sc[1]), max(sc[4], sc[5]))
                mt1 = max(max(sc[2], sc[3]), max(sc[6], sc[7]))
                mt0 = max(mt0, shfl_xor(mt0, 1))  # the 4 lanes of a row quad
                mt0 = max(mt0, shfl_xor(mt0, 2))
                mt1 = max(mt1, shfl_xor(mt1, 1))
                mt1 = max(mt1, shfl_xor(mt1, 2))
                mn0, mn1 = max(m0, mt0), max(m1, mt1)  # -inf only while this warp has seen no valid cell
                a0 = math.exp(m0 - mn0) if mn0 != NEG else np.float32(1)  # 0 on the warp's first tile
                a1 = math.exp(m1 - mn1) if mn1 != NEG else np.float32(1)
                m0, m1 = mn0, mn1
                for e in range(8):
                    mm = m0 if (e & 2) == 0 else m1
                    sc[e] = math.exp(sc[e] - mm) if sc[e] != NEG else np.float32(0)
                l0 = l0 * a0 + ((sc[0] + sc[1]) + (sc[4] + sc[5]))
                l1 = l1 * a1 + ((sc[2] + sc[3]) + (sc[6] + sc[7]))
                p0, p1 = pack_h2(sc[0], sc[1]), pack_h2(sc[2], sc[3])  # the A fragment of P (rows g, g+8)
                p2, p3 = pack_h2(sc[4], sc[5]), pack_h2(sc[6], sc[7])
                for nt in range(NT):  # O = a * O + P V
                    wp = nt // 2
                    sel = U32(0x7632) if nt % 2 else U32(0x5410)  # the pair's second dim, or its first
                    d0, d1, d2, d3 = mma_f16(p0, p1, p2, p3, prmt(vw[wp], vw[VW + wp], sel),
                                             prmt(vw[2 * VW + wp], vw[3 * VW + wp], sel), o[nt * 4] * a0,
                                             o[nt * 4 + 1] * a0, o[nt * 4 + 2] * a1, o[nt * 4 + 3] * a1)
                    o[nt * 4], o[nt * 4 + 1], o[nt * 4 + 2], o[nt * 4 + 3] = d0, d1, d2, d3
        l0 += shfl_xor(l0, 1)
        l0 += shfl_xor(l0, 2)
        l1 += shfl_xor(l1, 1)
        l1 += shfl_xor(l1, 2)
        sm = cuda.shared.array((nw, MAX_GROUP), np.float32)
        sl = cuda.shared.array((nw, MAX_GROUP), np.float32)
        so = cuda.shared.array(SO, np.float32)
        flag = cuda.shared.array(1, np.int32)
        if tq == 0:
            sm[w, g], sm[w, g + 8], sl[w, g], sl[w, g + 8] = m0, m1, l0, l1
        for nt in range(NT):
            for e in range(4):
                row = g + 8 * (e >> 1)
                if row < G:
                    so[(w * MAX_GROUP + row) * D + DV * (2 * tq + (e & 1)) + nt] = o[nt * 4 + e]
        cuda.syncthreads()
        for idx in range(tid, G * D, NT32):  # the warps merged in warp order
            row, d = idx // D, idx % D
            mx = NEG
            for k in range(nw):
                mx = max(mx, sm[k, row])
            acc, ll = np.float32(0), np.float32(0)
            for k in range(nw):
                f = math.exp(sm[k, row] - mx) if sm[k, row] != NEG else np.float32(0)
                acc += f * so[(k * MAX_GROUP + row) * D + d]
                ll += f * sl[k, row]
            b = (z * H + hk * G + row) * n_parts + s
            part_o[b * D + d] = acc
            if d == 0:
                part_ml[b * 2] = mx
                part_ml[b * 2 + 1] = ll
        if fused:
            merge_last(part_o, part_ml, posv, out, xq, xa, counter, flag, so, H, Hkv, G, n_parts, t, z, hk, q8)

    _CACHE[key] = jit(kernel)
    return _CACHE[key]


def _merge_last(D: int, CH: int, nw: int):
    """The fused split's tail (a device function of the block): after a fence, thread 0 counts the block in; the
    last of the token's used parts to arrive resets the counter and merges every part in part order (fixed sums:
    the bits do not depend on which block came last), then its warps quantize the G heads' rows 32 values at a
    time. ``so`` (shared, >= G*D floats) holds the merged rows for the quantization."""
    NT32 = 32 * nw

    @device
    def merge(part_o, part_ml, posv, out, xq, xa, counter, flag, so, H, Hkv, G, n_parts, t, z, hk, q8):
        tid = cuda.threadIdx.x
        lane, w = tid & 31, tid // 32
        used = min((posv[0] + t + CH) // CH, n_parts)
        if not last_block(counter, z * Hkv + hk, used, flag):
            return
        for idx in range(tid, G * D, NT32):
            row, d = idx // D, idx % D
            b = (z * H + hk * G + row) * n_parts
            mx = NEG
            for p in range(used):
                mx = max(mx, part_ml[(b + p) * 2])
            acc, ll = np.float32(0), np.float32(0)
            for p in range(used):
                f = math.exp(part_ml[(b + p) * 2] - mx)
                acc += f * part_o[(b + p) * D + d]
                ll += f * part_ml[(b + p) * 2 + 1]
            val = acc / ll
            out[(t * H + hk * G) * D + idx] = val
            so[idx] = val
        cuda.syncthreads()
        if q8:  # a warp per q8_1 block of 32 values: lanes 0..7 quantize four each (all lanes call quant4)
            for blk in range(w, G * D // 32, nw):
                e = blk * 32 + 4 * (lane & 7)
                word, dq, sq = quant4(so[e], so[e + 1], so[e + 2], so[e + 3])
                o0 = (t * H + hk * G) * D + blk * 32
                if lane < 8:
                    xq[o0 // 4 + lane] = word
                    if lane == 0:
                        xa[o0 // 16] = dq
                        xa[o0 // 16 + 1] = sq

    return merge


def combine_kernel(D: int, split: int = BKV, nw: int = COMBINE_WARPS):
    """(part_o, part_ml, posv, out, xq, xa, H, n_parts, t0, q8): grid (H, D / 32, Tz), block 32 * nw;
    out float32 [T, H*D] rows t0 + z, and with q8 its q8_1 copy xq uint32 [T, H*D/4], xa float32 [T, H*D/32, 2].

    Block (head, 32 dims): the parts' maximum and weights exp(m_s - max) go to shared memory, warp r sums
    f_s * O_s over the parts s = r, r + nw, .. with eight loads in flight, then warp 0 adds the nw partial sums in
    order, normalises and quantizes its 32 values (one q8_1 block). Fixed orders throughout: the result does not
    depend on scheduling."""
    key = ("combine", D, split, nw)
    if key in _CACHE:
        return _CACHE[key]
    NT = 32 * nw

    def kernel(part_o, part_ml, posv, out, xq, xa, H, n_parts, t0, q8):
        grid_dep_wait()
        h, cb, z = cuda.blockIdx.x, cuda.blockIdx.y, cuda.blockIdx.z
        tid = cuda.threadIdx.x
        lane, r = tid & 31, tid // 32
        f = cuda.shared.array(MAX_PARTS, np.float32)
        fl = cuda.shared.array(MAX_PARTS, np.float32)
        red = cuda.shared.array((nw, 32), np.float32)
        t = t0 + z
        used = min((posv[0] + t + split) // split, n_parts)
        base = (z * H + h) * n_parts
        mx = NEG
        for s in range(tid, used, NT):  # (m, l) of the parts read once, kept by the thread that reads them
            m = part_ml[(base + s) * 2]
            f[s], fl[s] = m, part_ml[(base + s) * 2 + 1]
            mx = max(mx, m)
        mx = block_max(mx)
        ll = np.float32(0)
        for s in range(tid, used, NT):
            fs = math.exp(f[s] - mx)
            f[s] = fs
            ll += fs * fl[s]
        ll = block_sum(ll)  # its barrier also publishes f
        d = cb * 32 + lane
        o = cuda.local.array(8, np.float32)
        for i in range(8):
            o[i] = np.float32(0)
        s = r
        while s + 7 * nw < used:  # eight loads in flight per iteration
            for i in range(8):
                o[i] += f[s + i * nw] * part_o[(base + s + i * nw) * D + d]
            s += 8 * nw
        while s < used:
            o[0] += f[s] * part_o[(base + s) * D + d]
            s += nw
        red[r, lane] = ((o[0] + o[1]) + (o[2] + o[3])) + ((o[4] + o[5]) + (o[6] + o[7]))
        cuda.syncthreads()
        row = (t * H + h) * D + cb * 32
        if r == 0:
            tot = np.float32(0)
            for k in range(nw):
                tot += red[k, lane]
            val = tot / ll
            out[row + lane] = val
            red[0, lane] = val
        cuda.syncthreads()
        if q8:  # lanes 0..7 of warp 0 quantize four values each (every thread calls quant4: it shuffles)
            e = 4 * (lane & 7)
            word, dq, sq = quant4(red[0, e], red[0, e + 1], red[0, e + 2], red[0, e + 3])
            if r == 0 and lane < 8:
                xq[row // 4 + lane] = word
                if lane == 0:
                    xa[row // 16] = dq
                    xa[row // 16 + 1] = sq

    _CACHE[key] = jit(kernel)
    return _CACHE[key]
