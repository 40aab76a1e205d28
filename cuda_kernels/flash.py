"""Flash attention for prefill on the tensor cores (FlashAttention-2 style, f16 operands, f32 accumulators).

Block (query tile of BQ = 128 rows, head h; 32 in the simulator): 8 warps of 16 query rows (a staged K/V tile
serves 128 rows). Q stays in registers as mma A fragments (scaled by log2(e)/sqrt(D)). Per tile of BKV = 64 cache
cells: K is staged in shared memory as [cell][dim] f16 pairs (exactly the B layout S = Q K^T needs), and so is V
in the default ``ex2-wide-trans``, its B fragments read through ldmatrix.trans (``ex2`` and a q8_0 cache staged
per tile take V transposed, [dim][cell pair], the B layout of O += P V); the next tile's loads in flight
meanwhile; S goes through an online softmax in base 2 in registers (row max and sum over the 4 lanes of a row
quad) and its f16 copy is the A fragment of P V directly (the accumulator layout of two adjacent n8 tiles is the A
layout of one k16 step).
Causal: query row t at position pos0 + t sees cells 0 .. pos0 + t. q8_0 caches are first converted to f16 as a
whole (``q8_to_f16_kernel``, the default), or dequantized while staged (the same bits;
``SWEEPBENCH_CUDA_Q8_PREFILL``). Never materialises the T x N_KV score matrix.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from cuda_kernels.env import (SIM, device, ex2, grid_dep_wait, jit, ldg4, ldsm4, ldsm4t, mma_f16, pack_h2, prmt,
                              shfl_xor, smem_base, sts4)
from cuda_kernels.tiles import q8_pair

# query rows, cache cells per tile; the simulator runs a block's threads as OS threads and emulates each mma, so
# its blocks take 2 warps of query rows (the same code, a quarter of the threads)
BQ, BKV = (32 if SIM else 128), 64
THREADS = 32 * (BQ // 16)
NEG = np.float32(-np.inf)
ALIGN = None if SIM else 16  # the staged tiles' alignment (ldmatrix rows); the simulator refuses the argument
U32 = np.uint32
_CACHE: dict = {}


PAD = 4  # words added to each staged row: the mma fragment reads of a warp hit 32 different banks


def tile_pitches(D: int) -> tuple[int, int]:
    """Row lengths (uint32 words) of the staged K tile [cell][dim pair] and V^T tile [dim][cell pair]."""
    return D // 2 + PAD, BKV // 2 + PAD


@device
def _stage_words(xq, xd, q8, cell, col, W, valid):
    """Two f16 pair words: dims col .. col+3 of a cache row (W values), or zeros."""
    if not valid:
        return U32(0), U32(0)
    if q8:
        w, d = xq[cell * (W // 4) + col // 4], xd[cell * (W // 32) + col // 32]
        return q8_pair(w, 0, d), q8_pair(w, 2, d)
    return xq[cell * (W // 2) + col // 2], xq[cell * (W // 2) + col // 2 + 1]


VARIANTS = ("ex2", "ex2-wide-trans")  # SWEEPBENCH_CUDA_FLASH (ops_table)
LOG2E = np.float32(1.4426950408889634)


def tile_movers(D: int):
    """(load, store, KR, VR) over 4-dim items, for any cache (q8_0 cells dequantized on the way) and head dim:
    ``load`` fetches a tile's K and V words into registers (kr: 2 words per K item, vr: 4 per V cell-pair item)
    and ``store`` puts them into shared memory: K as [cell][dim] f16 pairs (the B layout of S = Q K^T), V
    transposed as [dim][cell pair] (the B layout of O += P V). A tile's loads are issued before the previous
    tile's mma work and stored after it: their latency hides behind the compute instead of stalling every warp
    of the block between two barriers (H100, qwen3 -ub 2048 at N_KV 14336: 5354 against 6612 us per layer for
    the kernel that staged each tile between barriers, benchmarks/NOTES.md)."""
    DQ = D // 4  # 4-dim items per cache row
    NK, NV = BKV * DQ // THREADS, (BKV // 2) * DQ // THREADS  # K items, V cell-pair items per thread
    KP, VP = tile_pitches(D)

    @device
    def load(kq, kd, vq, vd, k_q8, v_q8, c0, n_valid, col0, W, kr, vr, tid):
        for i in range(NK):
            cc, dq = (tid + i * THREADS) // DQ, (tid + i * THREADS) % DQ
            kr[2 * i], kr[2 * i + 1] = _stage_words(kq, kd, k_q8, c0 + cc, col0 + 4 * dq, W, c0 + cc < n_valid)
        for i in range(NV):
            cc, dq = (tid + i * THREADS) // DQ, (tid + i * THREADS) % DQ
            c = c0 + 2 * cc
            vr[4 * i], vr[4 * i + 1] = _stage_words(vq, vd, v_q8, c, col0 + 4 * dq, W, c < n_valid)
            vr[4 * i + 2], vr[4 * i + 3] = _stage_words(vq, vd, v_q8, c + 1, col0 + 4 * dq, W, c + 1 < n_valid)

    @device
    def store(kr, vr, sk, sv, skb, svb, tid):
        for i in range(NK):
            cc, dq = (tid + i * THREADS) // DQ, (tid + i * THREADS) % DQ
            sk[cc * KP + 2 * dq] = kr[2 * i]
            sk[cc * KP + 2 * dq + 1] = kr[2 * i + 1]
        for i in range(NV):
            cc, dq = (tid + i * THREADS) // DQ, (tid + i * THREADS) % DQ
            sv[(4 * dq) * VP + cc] = prmt(vr[4 * i], vr[4 * i + 2], U32(0x5410))
            sv[(4 * dq + 1) * VP + cc] = prmt(vr[4 * i], vr[4 * i + 2], U32(0x7632))
            sv[(4 * dq + 2) * VP + cc] = prmt(vr[4 * i + 1], vr[4 * i + 3], U32(0x5410))
            sv[(4 * dq + 3) * VP + cc] = prmt(vr[4 * i + 1], vr[4 * i + 3], U32(0x7632))

    return load, store, 2 * NK, 4 * NV


def wide_fits(D: int) -> bool:
    """Whether ``wide_movers`` serve head dim D: every thread keeps one 8-dim column of the tile, and the K
    cells and V cell pairs split evenly over the threads."""
    return THREADS % (D // 8) == 0 and (BKV // 2) * (D // 8) % THREADS == 0


def wide_movers(D: int):
    """``tile_movers`` for f16 caches with 16-byte items, staging both tiles as [cell][dim] rows: a thread takes
    dims 8j .. 8j+7 of its cells (one ``ldg4`` per cell, the same column every tile, so the addresses are a
    multiply-add per item) and stores them 16 bytes at a time (``sts4``); V's mma B fragments then come through
    ldmatrix.trans. A tile whole below the last cell (every tile but the last) takes plain loads; the last one
    clamps each cell to the last valid one and keeps zeros past it (a select, no branch around the load).
    Why, measured on H100s (benchmarks/NOTES.md): the 4-dim items' loads each sat in a branch with their own
    address arithmetic (1376 instructions per warp and tile, 948 with 16-byte loads); and V staged transposed by
    4-byte stores hit one bank from 16 lanes (a lane's 8-dim column spans 8 x VP = 288 words, 0 mod 32): 10 shared
    wavefronts per store, 41% of the L1 data pipe's peak; untransposed, the kernel ran 33-40% faster."""
    DQ8 = D // 8  # 8-dim items per cache row
    NK, NV = BKV * DQ8 // THREADS, (BKV // 2) * DQ8 // THREADS  # K cells, V cell pairs per thread
    STEP = THREADS // DQ8  # rows between a thread's items
    KP, VP = tile_pitches(D)
    Z = U32(0)

    @device
    def load(kq, kd, vq, vd, k_q8, v_q8, c0, n_valid, col0, W, kr, vr, tid):
        row, w0, last = tid // DQ8, (col0 + 8 * (tid % DQ8)) // 2, n_valid - 1
        if c0 + BKV <= n_valid:  # written out: a helper shared with the clamped path below cost the machine
            for i in range(NK):  # code 14 instructions per tile (750 -> 764) and its registers
                b = 4 * i
                kr[b], kr[b + 1], kr[b + 2], kr[b + 3] = ldg4(kq, (c0 + row + i * STEP) * (W // 2) + w0)
            for i in range(NV):
                c = c0 + 2 * (row + i * STEP)
                for e in range(2):
                    b = 8 * i + 4 * e
                    vr[b], vr[b + 1], vr[b + 2], vr[b + 3] = ldg4(vq, (c + e) * (W // 2) + w0)
            return
        for i in range(NK):
            c = c0 + row + i * STEP
            a0, a1, a2, a3 = ldg4(kq, min(c, last) * (W // 2) + w0)
            ok = c < n_valid
            kr[4 * i], kr[4 * i + 1] = (a0, a1) if ok else (Z, Z)
            kr[4 * i + 2], kr[4 * i + 3] = (a2, a3) if ok else (Z, Z)
        for i in range(NV):
            c = c0 + 2 * (row + i * STEP)
            for e in range(2):  # the pair's two cells
                a0, a1, a2, a3 = ldg4(vq, min(c + e, last) * (W // 2) + w0)
                ok = c + e < n_valid
                vr[8 * i + 4 * e], vr[8 * i + 4 * e + 1] = (a0, a1) if ok else (Z, Z)
                vr[8 * i + 4 * e + 2], vr[8 * i + 4 * e + 3] = (a2, a3) if ok else (Z, Z)

    @device
    def store(kr, vr, sk, sv, skb, svb, tid):
        row, j8 = tid // DQ8, tid % DQ8
        # quarter warps write 8 consecutive 16-byte groups of a row (pitch KP = 4 mod 32): no bank conflict
        for i in range(NK):
            b = 4 * i
            sts4(sk, skb, (row + i * STEP) * KP + 4 * j8, kr[b], kr[b + 1], kr[b + 2], kr[b + 3])
        for i in range(NV):
            for e in range(2):
                b = 8 * i + 4 * e
                sts4(sv, svb, (2 * (row + i * STEP) + e) * KP + 4 * j8, vr[b], vr[b + 1], vr[b + 2], vr[b + 3])

    return load, store, 4 * NK, 8 * NV


@device
def split_range(n_cells, first_lim, z, S):
    """Cells [start, end) of KV part z of S for a query tile over n_cells cells whose first row sees cells up to
    first_lim: whole tiles of ceil(n_cells / S) cells, the last part that starts at or below first_lim running to
    n_cells (so every row of the tile sees its part's first cell: the online softmax never starts from an empty
    row), the parts after it empty (start == end)."""
    chunk = (n_cells + S * BKV - 1) // (S * BKV) * BKV
    z_last = min(S - 1, first_lim // chunk)
    if z > z_last:
        return 0, 0
    return z * chunk, (n_cells if z == z_last else z * chunk + chunk)


def prefill_kernel(D: int, k_q8: bool, v_q8: bool, variant: str, split: bool = False, yh: bool = False):
    """(q, kq, kd, vq, vd, posv, out, T, H, Hkv, scale): grid (ceil(T / BQ), H), block THREADS; out float32 [T, H*D].

    ``yh`` (unsplit only): out holds f16 pairs instead, uint32 [T, H*D/2], each rounded as ``pack_h2`` rounds
    where a GEMM stages float32 rows: what the output projection reads with f16 activations (the same bits).

    ``split``: grid (ceil(T / BQ), H, S); block z takes KV part z (``split_range``) and writes its unnormalized O
    rows with their row maximum (base 2) and sum, out [S, T, H, D + 2], for ``split_combine_kernel``: S times
    the blocks where a ubatch's query tiles and heads leave SMs idle (one block per SM: 248 registers x 256).

    ``variant``: ``ex2`` takes ``tile_movers`` (4-byte items, any cache, V staged transposed, fragments read by
    LDS), ``ex2-wide-trans`` ``wide_movers`` where they fit (f16 caches, head dims ``wide_fits``), with the mma B
    fragments of both products read by ldmatrix.x4 (``env.ldsm4``, ``.trans`` for V; over ``tile_movers``' layout
    the plain one where the head dim is a multiple of 32) and O rescaled only for a thread whose row maximum
    moved (at depth most tiles move none: a factor of exactly 1 otherwise, so the same bits). Either way the next
    tile's loads are in flight during this tile's mma work, only the tiles that a warp's causal edge or the last
    cell cuts are masked, and the softmax runs in base 2 on the special-function unit (Q pre-scaled by log2 e,
    one MUFU.EX2 per score instead of a precise expf, no -inf tests: every row sees the first cell of its range,
    cell 0 or its part's first, so a row maximum is finite from the first tile on). Both give the same bits.
    The intermediate variants of the H100 A/Bs (``ex2-wide``, ``ex2-wide-ldsm``, ``ex2-wide-ldsm-lean``) are
    retired; ``git show 9866145:cuda_kernels/flash.py`` has them."""
    if variant not in VARIANTS:
        raise ValueError(f"prefill_kernel: variant {variant!r} is not one of {VARIANTS}")
    key = (D, k_q8, v_q8, variant, split, yh)
    if key in _CACHE:
        return _CACHE[key]
    KP, VP = tile_pitches(D)
    NKS = D // 16  # k16 steps over the head dim
    NDT = D // 8  # n8 tiles over the head dim
    PLAIN = variant == "ex2"  # 4-byte movers, LDS fragment reads, O rescaled on every tile
    # V as [cell][dim] rows, read through ldmatrix.trans (wide_fits implies a head dim multiple of 32)
    TRANS = not PLAIN and not (k_q8 or v_q8) and wide_fits(D)
    LDSM = not PLAIN and D % 32 == 0  # fragment pairs through ldmatrix: k16 steps of S, n8 tiles of O
    load_tile, store_tile, KR, VR = wide_movers(D) if TRANS else tile_movers(D)
    SK, SV, QA, OA = BKV * KP, (BKV * KP if TRANS else D * VP), 4 * (D // 16), 4 * (D // 8)

    def kernel(q, kq, kd, vq, vd, posv, out, T, H, Hkv, scale):
        grid_dep_wait()
        tid = cuda.threadIdx.x
        lane, w = tid & 31, tid // 32
        g, tq = lane >> 2, lane & 3
        h, q0 = cuda.blockIdx.y, cuda.blockIdx.x * BQ
        hk = h // (H // Hkv)
        W = Hkv * D
        pos0 = posv[0]
        sk = cuda.shared.array(SK, np.uint32, alignment=ALIGN)  # 16-byte rows for ldmatrix
        sv = cuda.shared.array(SV, np.uint32, alignment=ALIGN)
        kr = cuda.local.array(KR, np.uint32)
        vr = cuda.local.array(VR, np.uint32)
        qa = cuda.local.array(QA, np.uint32)
        o = cuda.local.array(OA, np.float32)
        s = cuda.local.array(32, np.float32)
        r0 = q0 + 16 * w + g  # this thread's two query rows: r0 and r0 + 8
        # ldmatrix rows this lane names: K cell (lane & 7), 4 dim-pair words per matrix; V^T dim (lane & 7) of
        # the n8 tile pair's (lane >> 4)-th tile, cell-pair words 4 ((lane >> 3) & 1) on
        ka = (lane & 7) * KP + 4 * (lane >> 3)
        va = (lane & 7) * VP + 4 * ((lane >> 3) & 1) + 8 * VP * (lane >> 4)
        # trans: V cell 8 ((lane >> 3) & 1) + (lane & 7) of the k16 step, dims of the pair's (lane >> 4)-th n8 tile
        vt = ((lane & 7) + 8 * ((lane >> 3) & 1)) * KP + 4 * (lane >> 4)
        skb, svb = smem_base(sk), smem_base(sv)
        qs = scale * LOG2E  # scores in base-2 units
        for kk in range(NKS):
            for rr in range(2):
                t = min(r0 + 8 * rr, T - 1)
                b = (t * H + h) * D + kk * 16 + 2 * tq
                qa[kk * 4 + rr] = pack_h2(q[b] * qs, q[b + 1] * qs)
                qa[kk * 4 + 2 + rr] = pack_h2(q[b + 8] * qs, q[b + 9] * qs)
        for i in range(OA):
            o[i] = np.float32(0)
        m0, m1, l0, l1 = NEG, NEG, np.float32(0), np.float32(0)
        n_cells = pos0 + min(q0 + BQ, T)
        c_start, c_end = 0, n_cells
        if split:
            c_start, c_end = split_range(n_cells, pos0 + q0, cuda.blockIdx.z, cuda.gridDim.z)
            if c_start == c_end:
                return
        load_tile(kq, kd, vq, vd, k_q8, v_q8, c_start, n_cells, hk * D, W, kr, vr, tid)
        for c0 in range(c_start, c_end, BKV):
            store_tile(kr, vr, sk, sv, skb, svb, tid)
            cuda.syncthreads()
            if c0 + BKV < c_end:  # the next tile's loads, in flight during this tile's mma work
                load_tile(kq, kd, vq, vd, k_q8, v_q8, c0 + BKV, n_cells, hk * D, W, kr, vr, tid)
            for nt in range(8):  # S = Q K^T, 16 rows x 64 cells per warp
                z = np.float32(0)
                d0, d1, d2, d3 = z, z, z, z
                if LDSM:
                    for k2 in range(NKS // 2):  # k16 steps 2 k2, 2 k2 + 1: their B words in one ldmatrix
                        b0, b1, b2, b3 = ldsm4(sk, skb, ka + nt * 8 * KP + k2 * 16)
                        kk = 2 * k2
                        d0, d1, d2, d3 = mma_f16(qa[kk * 4], qa[kk * 4 + 1], qa[kk * 4 + 2], qa[kk * 4 + 3],
                                                 b0, b1, d0, d1, d2, d3)
                        d0, d1, d2, d3 = mma_f16(qa[kk * 4 + 4], qa[kk * 4 + 5], qa[kk * 4 + 6], qa[kk * 4 + 7],
                                                 b2, b3, d0, d1, d2, d3)
                else:
                    for kk in range(NKS):
                        kb = (nt * 8 + g) * KP + kk * 8 + tq  # B fragment: cell nt*8+g, dim pairs kk*8+tq, +4
                        d0, d1, d2, d3 = mma_f16(qa[kk * 4], qa[kk * 4 + 1], qa[kk * 4 + 2], qa[kk * 4 + 3],
                                                 sk[kb], sk[kb + 4], d0, d1, d2, d3)
                s[nt * 4], s[nt * 4 + 1], s[nt * 4 + 2], s[nt * 4 + 3] = d0, d1, d2, d3
            # the warp's rows see cells up to pos0 + q0 + 16 w at least: tiles below that edge need no mask
            if c0 + BKV - 1 > pos0 + q0 + 16 * w or c0 + BKV > n_cells:
                for nt in range(8):
                    for e in range(4):
                        cell = c0 + nt * 8 + 2 * tq + (e & 1)
                        lim = pos0 + r0 + 8 * (e >> 1)  # causal: the row's own position
                        if cell > lim or cell >= n_cells:
                            s[nt * 4 + e] = NEG
            mx0, mx1 = NEG, NEG
            for nt in range(8):
                mx0 = max(mx0, max(s[nt * 4], s[nt * 4 + 1]))
                mx1 = max(mx1, max(s[nt * 4 + 2], s[nt * 4 + 3]))
            mx0 = max(mx0, shfl_xor(mx0, 1))
            mx0 = max(mx0, shfl_xor(mx0, 2))
            mx1 = max(mx1, shfl_xor(mx1, 1))
            mx1 = max(mx1, shfl_xor(mx1, 2))
            n0, n1 = max(m0, mx0), max(m1, mx1)
            a0, a1 = ex2(m0 - n0), ex2(m1 - n1)  # n0, n1 finite (cell 0); ex2(-inf) = 0: first m, masked s
            m0, m1 = n0, n1
            l0, l1 = l0 * a0, l1 * a1
            for nt in range(8):
                for e in range(4):
                    mm = m0 if e < 2 else m1
                    p = ex2(s[nt * 4 + e] - mm)
                    s[nt * 4 + e] = p
                    if e < 2:
                        l0 += p
                    else:
                        l1 += p
            if PLAIN or a0 != 1 or a1 != 1:  # else O waits for a row whose maximum moved (x 1 keeps the bits)
                for dt in range(NDT):
                    o[dt * 4] *= a0
                    o[dt * 4 + 1] *= a0
                    o[dt * 4 + 2] *= a1
                    o[dt * 4 + 3] *= a1
            for j in range(4):  # O += P V, k16 steps over cells
                p0 = pack_h2(s[8 * j], s[8 * j + 1])
                p1 = pack_h2(s[8 * j + 2], s[8 * j + 3])
                p2 = pack_h2(s[8 * j + 4], s[8 * j + 5])
                p3 = pack_h2(s[8 * j + 6], s[8 * j + 7])
                if LDSM:
                    for dp in range(NDT // 2):  # n8 tiles 2 dp, 2 dp + 1: their B words in one ldmatrix
                        if TRANS:
                            b0, b1, b2, b3 = ldsm4t(sv, svb, vt + j * 16 * KP + dp * 8)
                        else:
                            b0, b1, b2, b3 = ldsm4(sv, svb, va + dp * 16 * VP + j * 8)
                        i0, i1 = 8 * dp, 8 * dp + 4
                        o[i0], o[i0 + 1], o[i0 + 2], o[i0 + 3] = mma_f16(p0, p1, p2, p3, b0, b1, o[i0], o[i0 + 1],
                                                                         o[i0 + 2], o[i0 + 3])
                        o[i1], o[i1 + 1], o[i1 + 2], o[i1 + 3] = mma_f16(p0, p1, p2, p3, b2, b3, o[i1], o[i1 + 1],
                                                                         o[i1 + 2], o[i1 + 3])
                else:
                    for dt in range(NDT):
                        vb = (dt * 8 + g) * VP + j * 8 + tq  # B fragment: dim dt*8+g, cell pairs j*8+tq, +4
                        d0, d1, d2, d3 = mma_f16(p0, p1, p2, p3, sv[vb], sv[vb + 4], o[dt * 4], o[dt * 4 + 1],
                                                 o[dt * 4 + 2], o[dt * 4 + 3])
                        o[dt * 4], o[dt * 4 + 1], o[dt * 4 + 2], o[dt * 4 + 3] = d0, d1, d2, d3
            cuda.syncthreads()
        l0 += shfl_xor(l0, 1)
        l0 += shfl_xor(l0, 2)
        l1 += shfl_xor(l1, 1)
        l1 += shfl_xor(l1, 2)
        for rr in range(2):
            t = r0 + 8 * rr
            if t < T and split:  # unnormalized, with the row's maximum and sum
                b = ((cuda.blockIdx.z * T + t) * H + h) * (D + 2)
                for dt in range(NDT):
                    out[b + dt * 8 + 2 * tq] = o[dt * 4 + 2 * rr]
                    out[b + dt * 8 + 2 * tq + 1] = o[dt * 4 + 2 * rr + 1]
                if tq == 0:
                    out[b + D], out[b + D + 1] = (m0, l0) if rr == 0 else (m1, l1)
            elif t < T:
                inv = np.float32(1) / (l0 if rr == 0 else l1)
                for dt in range(NDT):
                    b = (t * H + h) * D + dt * 8 + 2 * tq
                    if yh:
                        out[b // 2] = pack_h2(o[dt * 4 + 2 * rr] * inv, o[dt * 4 + 2 * rr + 1] * inv)
                    else:
                        out[b] = o[dt * 4 + 2 * rr] * inv
                        out[b + 1] = o[dt * 4 + 2 * rr + 1] * inv

    _CACHE[key] = jit(kernel)
    return _CACHE[key]


def split_combine_kernel(D: int, yh: bool = False):
    """(part, out, posv, T, H, S): the S KV parts of ``prefill_kernel(split=True)`` merged in a fixed order (no
    atomics: the same bits every run): out [T, H*D] = sum_z O_z 2^(m_z - M) / sum_z l_z 2^(m_z - M), M the
    largest m_z. One part alone gives the unsplit kernel's bits (O times the reciprocal of its sum).
    grid (T, H), block D (``yh``: D / 2 threads of two dims, out as f16 pairs, as ``prefill_kernel``'s)."""
    key = ("combine", D, yh)
    P = 2 if yh else 1  # dims per thread

    if key not in _CACHE:
        @device
        def merged(part, nz, mx, t, h, d, T, H):
            """Dim d of row t, head h: the parts' O merged and normalized."""
            b = (t * H + h) * (D + 2)
            acc, tot = part[b + d], part[b + D + 1]
            if nz > 1:
                acc, tot = np.float32(0), np.float32(0)
                for z in range(nz):
                    b = ((z * T + t) * H + h) * (D + 2)
                    f = ex2(part[b + D] - mx)
                    acc += part[b + d] * f
                    tot += part[b + D + 1] * f
            return acc * (np.float32(1) / tot)

        def kernel(part, out, posv, T, H, S):
            grid_dep_wait()
            t, h, d = cuda.blockIdx.x, cuda.blockIdx.y, P * cuda.threadIdx.x
            q0 = t // BQ * BQ
            n_cells, first = posv[0] + min(q0 + BQ, T), posv[0] + q0
            nz = 0
            mx = NEG
            for z in range(S):
                c_start, c_end = split_range(n_cells, first, z, S)
                if c_start < c_end:
                    nz = z + 1
                    mx = max(mx, part[((z * T + t) * H + h) * (D + 2) + D])
            if yh:
                v0, v1 = merged(part, nz, mx, t, h, d, T, H), merged(part, nz, mx, t, h, d + 1, T, H)
                out[((t * H + h) * D + d) // 2] = pack_h2(v0, v1)
            else:
                out[(t * H + h) * D + d] = merged(part, nz, mx, t, h, d, T, H)

        _CACHE[key] = jit(kernel)
    return _CACHE[key]


def q8_to_f16_kernel():
    """(xq, xd, out, n_words): the first n_words words of a q8_0 cache (4 int8 values each, scale xd[i // 8])
    as an f16 cache, out[2i], out[2i + 1]: the f16 pairs ``tile_movers`` would stage (the same ``q8_pair``, so the
    same bits). grid (ceil(n_words / 256),), block 256.

    Why: the prefill kernel stages a KV tile once per query tile and query head, so a q8_0 cell is dequantized
    16 x 32 = 512 times in a 2048-token qwen3 ubatch, in the latency chain of the tile; a conversion pass costs a
    read of the q8_0 cells and a write of f16 ones (~50 MB per qwen3 layer at 16k cells: ~15 us at the H200's
    copy bandwidth, against ~15 ms of the prefill kernel there)."""
    if "q8_to_f16" not in _CACHE:
        def kernel(xq, xd, out, n_words):
            grid_dep_wait()
            i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
            if i < n_words:
                w, d = xq[i], xd[i // 8]
                out[2 * i] = q8_pair(w, 0, d)
                out[2 * i + 1] = q8_pair(w, 2, d)

        _CACHE["q8_to_f16"] = jit(kernel)
    return _CACHE["q8_to_f16"]
