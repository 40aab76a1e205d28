"""Expert routing on the device (one warp per token, no host round-trip), and the stable grouping of routed rows.

Selection order follows ik's CPU code, the ground truth: top-k by (value, index) descending, so ties go to the
larger index; grouped routing keeps the Gk groups with the largest sum of their top-2 biased scores (ties: larger
group index), then takes the top-k among the kept groups' experts. A lane holds experts lane, lane+32, ...

    route_softmax   logits [T, X] -> ids int32 [T, K], w float32 [T, K]   softmax, top-k, optional renormalise
    route_sigmoid   sigmoid gating; selection on sigmoid + bias (grouped when G > 1), weights unbiased,
                    w / (sum + eps) if norm, times scale
    group_rows      ids [R] -> rows int32 [R] grouped by expert, stable in (token, slot) order (a counting sort:
                    no atomics), offsets int32 [X+1], and the GEMM tile list (expert, first row) per BM rows
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from cuda_kernels.env import (device, grid_dep_wait, jit, warp_argmax, warp_barrier, warp_max, warp_prefix_count,
                              warp_sum)

NEG = np.float32(-np.inf)
ROUTE_WARPS = 4  # tokens per block
_CACHE: dict = {}


def softmax_router(n_expert: int):
    """Device function route(logits, t, ok, ids, w, k, norm, write, want) for X = n_expert: the calling warp
    routes token t (a lane holds ceil(X/32) logits), writes ids / w of the token from lane 0 when ``write``, and
    returns the expert of slot ``want`` (on every lane)."""
    key = ("softmax_fn", n_expert)
    if key in _CACHE:
        return _CACHE[key]
    X, XPL = n_expert, (n_expert + 31) // 32

    @device
    def route(logits, t, ok, ids, w, k, norm, write, want):
        lane = cuda.threadIdx.x & 31
        p = cuda.local.array(XPL, np.float32)
        mx = NEG
        for i in range(XPL):
            e = lane + 32 * i
            p[i] = logits[t * X + e] if ok and e < X else NEG
            mx = max(mx, p[i])
        mx = warp_max(mx)
        s = np.float32(0)
        for i in range(XPL):
            p[i] = math.exp(p[i] - mx) if p[i] != NEG else np.float32(0)
            s += p[i]
        s = warp_sum(s)
        for i in range(XPL):
            p[i] = p[i] / s if lane + 32 * i < X and s > 0 else NEG
        tot = np.float32(0)
        mine = np.int32(0)
        for r in range(k):
            bv, bi = NEG, np.int32(-1)
            for i in range(XPL):
                if p[i] >= bv and p[i] != NEG:  # later (larger) index wins a tie
                    bv, bi = p[i], np.int32(lane + 32 * i)
            bv, bi = warp_argmax(bv, bi)
            if bi < 0:  # no finite candidate (NaN logits): a valid id all the same, never an index out of the weights
                bv, bi = np.float32(0), np.int32(r)
            for i in range(XPL):  # the owner retires the winner (a loop, so p stays in registers)
                if lane + 32 * i == bi:
                    p[i] = NEG
            tot += bv
            if r == want:
                mine = bi
            if write and lane == 0:
                ids[t * k + r] = bi
                w[t * k + r] = bv
        if write and lane == 0 and norm:
            inv = np.float32(1) / tot if tot > 0 else np.float32(0)
            for r in range(k):
                w[t * k + r] = w[t * k + r] * inv
        return mine

    _CACHE[key] = route
    return route


def route_softmax(n_expert: int):
    """Kernel (logits, ids, w, T, k, norm): a warp per token (``softmax_router``)."""
    key = ("softmax", n_expert)
    if key in _CACHE:
        return _CACHE[key]
    route = softmax_router(n_expert)

    def kernel(logits, ids, w, T, k, norm):
        grid_dep_wait()
        t = cuda.blockIdx.x * ROUTE_WARPS + cuda.threadIdx.x // 32
        ok = t < T
        route(logits, t, ok, ids, w, k, norm, ok, 0)

    _CACHE[key] = jit(kernel)
    return _CACHE[key]


def sigmoid_router(n_expert: int, n_groups: int):
    """Device function route(logits, bias, has_bias, t, ok, sel_sh, ids, w, k, n_groups_used, norm, eps, scale,
    write, want) for X experts in G groups: the calling warp (row warp-index of sel_sh, a shared float32
    [ROUTE_WARPS, X]) routes token t, writes ids / w from lane 0 when
    ``write`` and returns the expert of slot ``want``."""
    key = ("sigmoid_fn", n_expert, n_groups)
    if key in _CACHE:
        return _CACHE[key]
    X, XPL, G = n_expert, (n_expert + 31) // 32, n_groups
    P = X // G  # experts per group

    @device
    def route(logits, bias, has_bias, t, ok, sel_sh, ids, w, k, n_groups_used, norm, eps, scale, write, want):
        lane, wi = cuda.threadIdx.x & 31, cuda.threadIdx.x // 32
        prob = cuda.local.array(XPL, np.float32)
        sel = cuda.local.array(XPL, np.float32)
        for i in range(XPL):
            e = lane + 32 * i
            if ok and e < X:
                prob[i] = np.float32(1) / (np.float32(1) + math.exp(-logits[t * X + e]))
                sel[i] = prob[i] + bias[e] if has_bias else prob[i]
                sel_sh[wi, e] = sel[i]
            else:
                prob[i], sel[i] = np.float32(0), NEG
        warp_barrier()  # sel_sh row wi is this warp's own
        degenerate = G > 1 and k > P * n_groups_used  # ik's guard: the kept groups cannot hold k experts
        if G > 1 and not degenerate:
            gs = NEG  # lane g < G: sum of the two largest scores of group g
            if lane < G and ok:
                a, b = NEG, NEG
                for q in range(P):
                    v = sel_sh[wi, lane * P + q]
                    if v > a:
                        a, b = v, a
                    elif v > b:
                        b = v
                gs = a + b if P > 1 else a
            gs_i = np.int32(lane) if lane < G else np.int32(-1)
            kept = np.uint32(0)
            for r in range(n_groups_used):
                bv, bi = warp_argmax(gs, gs_i)
                kept |= np.uint32(1) << np.uint32(bi)
                if bi == lane:
                    gs = NEG
            for i in range(XPL):
                e = lane + 32 * i
                if e < X and (kept >> np.uint32(e // P)) & np.uint32(1) == 0:
                    sel[i] = NEG
        tot = np.float32(0)
        mine = np.int32(0)
        for r in range(k):
            if degenerate:
                bi = np.int32(r)
                bp = np.float32(-1)
                for i in range(XPL):
                    if lane + 32 * i == r:
                        bp = prob[i]
                bp = warp_max(bp)  # the one lane that holds expert r
            else:
                bv, bi, bp = NEG, np.int32(-1), np.float32(0)
                for i in range(XPL):
                    if sel[i] >= bv and sel[i] != NEG:
                        bv, bi, bp = sel[i], np.int32(lane + 32 * i), prob[i]
                bv, bi = warp_argmax(bv, bi)
                bi = bi if bi >= 0 else np.int32(r)  # NaN scores: a valid id all the same (as the softmax router)
                bp = np.float32(-1)
                for i in range(XPL):
                    if lane + 32 * i == bi:
                        bp = prob[i]
                        sel[i] = NEG
                bp = warp_max(bp)  # the owner's unbiased probability, on every lane
            tot += bp
            if r == want:
                mine = bi
            if write and lane == 0:
                ids[t * k + r] = bi
                w[t * k + r] = bp
        if write and lane == 0:
            inv = np.float32(1) / (tot + eps) if norm else np.float32(1)
            for r in range(k):
                v = w[t * k + r] * inv if norm else w[t * k + r]
                w[t * k + r] = v * scale if abs(scale - np.float32(1)) > np.float32(1e-5) else v
        return mine

    _CACHE[key] = route
    return route


def route_sigmoid(n_expert: int, n_groups: int):
    """Kernel (logits, bias, has_bias, ids, w, T, k, n_groups_used, norm, eps, scale): a warp per token
    (``sigmoid_router``)."""
    key = ("sigmoid", n_expert, n_groups)
    if key in _CACHE:
        return _CACHE[key]
    route = sigmoid_router(n_expert, n_groups)
    X = n_expert

    def kernel(logits, bias, has_bias, ids, w, T, k, n_groups_used, norm, eps, scale):
        grid_dep_wait()
        t = cuda.blockIdx.x * ROUTE_WARPS + cuda.threadIdx.x // 32
        ok = t < T
        sel_sh = cuda.shared.array((ROUTE_WARPS, X), np.float32)
        route(logits, bias, has_bias, t, ok, sel_sh, ids, w, k, n_groups_used, norm, eps, scale, ok, 0)

    _CACHE[key] = jit(kernel)
    return _CACHE[key]


GROUP_THREADS, GROUP_WARPS = 256, 8  # threads per expert block of the grouping kernels


@jit
def expert_counts(ids, R, counts):
    """Block e (grid X): counts[e] = number of routed rows sent to expert e (integer sums: order-free)."""
    grid_dep_wait()
    part = cuda.shared.array(GROUP_THREADS, np.int32)
    e, tid = cuda.blockIdx.x, cuda.threadIdx.x
    c = 0
    for r in range(tid, R, GROUP_THREADS):
        if ids[r] == e:
            c += 1
    part[tid] = c
    cuda.syncthreads()
    if tid == 0:
        tot = 0
        for i in range(GROUP_THREADS):
            tot += part[i]
        counts[e] = tot


OFFSET_THREADS = 256  # the most threads of expert_offsets' one block (its scan's shared arrays)


@jit
def expert_offsets(counts, X, bm, offsets, tiles):
    """One block of up to OFFSET_THREADS threads: offsets [X+2] (expert e owns rows[offsets[e]:offsets[e+1]],
    offsets[X+1] = number of tiles) and tiles [max_tiles, 2] = (expert, first index into rows) per GEMM tile of at
    most bm rows. Thread i takes experts [i p, i p + p) (p = ceil(X / threads)): their row and tile totals, an
    exclusive scan of those over the block (shared memory, log2(threads) steps), then its experts' offsets and
    tiles in expert order. Integer sums: the values of a serial loop over the experts, in any order. (A serial
    loop in one thread waited on each count's load in turn: ~0.1-0.3 us an expert.)"""
    grid_dep_wait()
    nr_sh = cuda.shared.array((2, OFFSET_THREADS), np.int32)  # [buffer, thread]: rows, inclusive scan
    nt_sh = cuda.shared.array((2, OFFSET_THREADS), np.int32)  # [buffer, thread]: tiles, inclusive scan
    tid, nth = cuda.threadIdx.x, cuda.blockDim.x
    p = (X + nth - 1) // nth
    e0, e1 = min(tid * p, X), min(tid * p + p, X)
    nr, nt = 0, 0
    for e in range(e0, e1):
        c = counts[e]
        nr += c
        nt += (c + bm - 1) // bm
    nr_sh[0, tid] = nr
    nt_sh[0, tid] = nt
    cuda.syncthreads()
    src, d = 0, 1
    while d < nth:  # Hillis-Steele: read one buffer, write the other, a barrier between steps
        a, b = nr_sh[src, tid], nt_sh[src, tid]
        if tid >= d:
            a += nr_sh[src, tid - d]
            b += nt_sh[src, tid - d]
        nr_sh[1 - src, tid] = a
        nt_sh[1 - src, tid] = b
        src, d = 1 - src, 2 * d
        cuda.syncthreads()
    run, t0 = nr_sh[src, tid] - nr, nt_sh[src, tid] - nt
    for e in range(e0, e1):
        c = counts[e]
        offsets[e] = run
        for m0 in range(0, c, bm):
            tiles[2 * t0] = e
            tiles[2 * t0 + 1] = run + m0
            t0 += 1
        run += c
    if tid == nth - 1:
        offsets[X] = nr_sh[src, tid]
        offsets[X + 1] = nt_sh[src, tid]


ROWS_PER_THREAD = 4  # consecutive rows a thread of expert_rows tests per pass (1024 rows a pass)


@jit
def expert_rows(ids, R, offsets, rows):
    """Block e (grid X): the rows of expert e in increasing row (= (token, slot)) order, so the grouping is a
    stable counting sort and every GEMM sums its rows in the same order on every run (no atomics). Each pass
    takes 1024 rows, 4 consecutive ones a thread: a row's place is the hits of the lanes below it (one ballot
    per row of the four), of the warps below it (shared memory) and of its thread's earlier rows. (One row a
    thread made 64 passes of two barriers each for a 2048-token ubatch of 8 slots.)"""
    grid_dep_wait()
    warp_tot = cuda.shared.array(GROUP_WARPS, np.int32)
    e, tid = cuda.blockIdx.x, cuda.threadIdx.x
    w = tid // 32
    at = offsets[e]
    for r0 in range(0, R, GROUP_THREADS * ROWS_PER_THREAD):
        r = r0 + ROWS_PER_THREAD * tid
        mask, below, total = 0, 0, 0
        for j in range(ROWS_PER_THREAD):
            hit = r + j < R and ids[r + j] == e
            b, n = warp_prefix_count(hit)
            below += b
            total += n
            if hit:
                mask |= 1 << j
        if tid % 32 == 0:
            warp_tot[w] = total
        cuda.syncthreads()
        k = at + below
        for i in range(w):
            k += warp_tot[i]
        for j in range(ROWS_PER_THREAD):
            if mask & (1 << j):
                rows[k] = r + j
                k += 1
        for i in range(GROUP_WARPS):
            at += warp_tot[i]
        cuda.syncthreads()


def group_rows(launch, ids, R: int, X: int, bm: int, counts, rows, offsets, tiles,
               offset_threads: int = OFFSET_THREADS) -> None:
    """Routed rows grouped by expert on the device: three launches (counts, offsets + tiles, rows), each block
    reading the R ids from L2; ``launch(kernel, grid, block, *args)`` enqueues one kernel. ``offset_threads``
    (at most OFFSET_THREADS): the offsets kernel's block (tests use fewer threads than experts)."""
    launch(expert_counts, X, GROUP_THREADS, ids, R, counts)
    launch(expert_offsets, 1, offset_threads, counts, X, bm, offsets, tiles)
    launch(expert_rows, X, GROUP_THREADS, ids, R, offsets, rows)
