"""MMVQ-style GEMVs for a few activation rows (token generation): a warp per output row, lanes over 32-value
chunks, one warp reduction per (row, activation row).

    dense        y [T, N] = x [T, K] @ W[N, K]^T; short N splits each row's K over wpr warps (more warps in flight)
    expert       y [R, N] = x[r // div] @ W[ids[r]]^T per routed row r (div = K for inputs per token, 1 per row)
    up_gate      h [R, F] = silu(x_t @ Wg[e]^T) * (x_t @ Wu[e]^T), t = r // k, e = ids[r]  (fused, seed #861/#864)
    down_combine y [T, E] = sum_j w[t, j] * (h[t*k + j] @ Wd[ids[t*k+j]]^T), j in slot order (deterministic):
                 a warp per output value over all (slot, chunk) pairs of its row, one reduction

Decode is latency-bound: a warp's chain of dependent loads is what a GEMV costs once its grid is a single wave.
So every row loop handles two chunks per lane and iteration with a clamped second index (no branch), which lets
the compiler issue both chunks' loads before the first multiply (``row_dot``, ``row_dot2``).

Expert ids are read on the device, so one CUDA graph serves every token. Weights: ``layout``'s flat qs / hdr;
stacks keep expert e in rows e*N .. e*N+N-1. Activations: q8_1 (xq, xa) for quantized weights, float32 xf for
f16 / f32 weights (``qdot``).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from cuda_kernels import routing
from cuda_kernels.elementwise import last_block, norm_tail
from cuda_kernels.env import device, grid_dep_wait, jit, prefetch_l2, warp_sum
from cuda_kernels.qdot import DOTS

GEMV_WARPS = 4  # warps per block by default
GEMV_MAX_WARPS = 32  # the most warps a dense block has (shared partials)
_CACHE: dict = {}


def _cached(key, make):
    if key not in _CACHE:
        _CACHE[key] = jit(make())
    return _CACHE[key]


def _row_dots(dot):
    """Device functions over one row for a chunk loop c0, c0 + step, ... < K/32, two chunks per iteration:
    row_dot -> one weight's dot; row_dot2 -> two weights' dots (gate and up) from the same activation row."""

    @device
    def row_dot(qs, hdr, row, K, xq, xa, xf, t, c0, step):
        nc = K // 32
        acc = np.float32(0)
        c = c0
        while c < nc:
            c2 = c + step
            ok = c2 < nc
            a = dot(qs, hdr, row, c, K, xq, xa, xf, t)
            b = dot(qs, hdr, row, c2 if ok else c, K, xq, xa, xf, t)
            acc += a + (b if ok else np.float32(0))
            c += 2 * step
        return acc

    @device
    def row_dot2(qs, hdr, qs2, hdr2, row, K, xq, xa, xf, t, c0, step):
        nc = K // 32
        acc, acc2 = np.float32(0), np.float32(0)
        c = c0
        while c < nc:
            c2 = c + step
            ok = c2 < nc
            cb = c2 if ok else c
            a = dot(qs, hdr, row, c, K, xq, xa, xf, t)
            b = dot(qs, hdr, row, cb, K, xq, xa, xf, t)
            a2 = dot(qs2, hdr2, row, c, K, xq, xa, xf, t)
            b2 = dot(qs2, hdr2, row, cb, K, xq, xa, xf, t)
            acc += a + (b if ok else np.float32(0))
            acc2 += a2 + (b2 if ok else np.float32(0))
            c += 2 * step
        return acc, acc2

    return row_dot, row_dot2


def dense(kind: str, nw: int = GEMV_WARPS, wpr: int = 1, tail: bool = False, prefetch: bool = False):
    """(qs, hdr, xq, xa, xf, y, N, K, T, *TAIL): grid (ceil(N / (nw // wpr))), block 32 * nw. Warp w computes row
    blockIdx.x * (nw // wpr) + w // wpr over K-slice w % wpr; the wpr slices are summed in order.
    TAIL = (a, res, w, out, oq, oa, eps, counter): with ``tail`` (T == 1), the last block also runs
    ``elementwise.norm_tail`` on y (the residual add and the next RMSNorm); without it they are not read.
    ``prefetch``: before its grid-dependency wait the block asks L2 for its rows (``prefetch_rows``)."""
    return _cached(("dense", kind, nw, wpr, tail, prefetch), lambda: _dense_fn(kind, nw, wpr, tail, prefetch))


@device
def _prefetch_span(a, r0, n_rows, N):
    per_row = a.shape[0] // N  # 0 for the unused 1-element hdr of f16 / f32 weights
    if per_row > 0:
        end = min(r0 + n_rows, N) * per_row
        i = r0 * per_row + cuda.threadIdx.x * 32
        while i < end:
            prefetch_l2(a, i)
            i += cuda.blockDim.x * 32


@device
def prefetch_rows(qs, hdr, r0, n_rows, N):
    """L2 prefetch of rows r0 .. r0+n_rows-1 (clipped to N) of a weight in the flat row-major device layout (qs and
    hdr, 4-byte elements), a 128-byte line per thread and step. Weights are never written by a kernel, so this may
    run before the grid-dependency wait: in a graph with programmatic edges the block is resident while its
    predecessor still runs, and its weight bytes then stream in under that kernel instead of after it."""
    _prefetch_span(qs, r0, n_rows, N)
    _prefetch_span(hdr, r0, n_rows, N)


def _dense_fn(kind: str, nw: int, wpr: int, tail: bool, prefetch: bool = False):
    """``dense``'s kernel as a Python function (``dense_routed`` calls it as a device function)."""
    rpb = nw // wpr
    row_dot, _ = _row_dots(DOTS[kind])

    def kernel(qs, hdr, xq, xa, xf, y, N, K, T, ta, tres, tw, tout, toq, toa, teps, counter):
        if prefetch:
            prefetch_rows(qs, hdr, cuda.blockIdx.x * rpb, rpb, N)
        grid_dep_wait()
        flag = cuda.shared.array(1, np.int32)
        part = cuda.shared.array(GEMV_MAX_WARPS, np.float32)
        w, lane = cuda.threadIdx.x // 32, cuda.threadIdx.x & 31
        n = cuda.blockIdx.x * rpb + w // wpr
        sl = w % wpr
        for t in range(T):
            acc = np.float32(0)
            if n < N:
                acc = row_dot(qs, hdr, n, K, xq, xa, xf, t, sl * 32 + lane, 32 * wpr)
            acc = warp_sum(acc)
            if wpr == 1:
                if lane == 0 and n < N:
                    y[t * N + n] = acc
            else:
                if lane == 0:
                    part[w] = acc
                cuda.syncthreads()
                if lane == 0 and sl == 0 and n < N:
                    tot = np.float32(0)
                    for i in range(wpr):
                        tot += part[w + i]
                    y[t * N + n] = tot
                cuda.syncthreads()
        if tail:
            norm_tail(y, ta, tres, tw, tout, toq, toa, N, teps, counter, flag)

    return kernel


def dense_routed(kind: str, nw: int, wpr: int, n_expert: int, n_groups: int, sigmoid: bool, prefetch: bool = False):
    """``dense`` for one token's router logits whose last block routes the token: (qs, hdr, xq, xa, xf, y, N, K, T,
    bias, has_bias, ids, w, k, norm, n_groups_used, eps, scale, counter). Once every block has written its logits
    (``counter[0]`` counts them, back to 0 after), warp 0 of the last block runs the routing kernels' own device
    function on y (softmax top-k, or sigmoid + bias, grouped when n_groups > 1) and writes ids / w: the same bits
    as the routing launch it saves."""

    def make():
        X, RW = n_expert, routing.ROUTE_WARPS
        route_sm = routing.softmax_router(n_expert)
        route_sg = routing.sigmoid_router(n_expert, n_groups)
        body = device(_dense_fn(kind, nw, wpr, False))
        rpb = nw // wpr

        def kernel(qs, hdr, xq, xa, xf, y, N, K, T, bias, has_bias, ids, w, k, norm, n_groups_used, eps, scale,
                   counter):
            if prefetch:
                prefetch_rows(qs, hdr, cuda.blockIdx.x * rpb, rpb, N)
            grid_dep_wait()
            flag = cuda.shared.array(1, np.int32)
            sel_sh = cuda.shared.array((RW, X), np.float32)
            body(qs, hdr, xq, xa, xf, y, N, K, T, y, y, y, y, ids, y, np.float32(0), counter)
            if last_block(counter, 0, cuda.gridDim.x, flag) and cuda.threadIdx.x < 32:
                if sigmoid:
                    route_sg(y, bias, has_bias, 0, True, sel_sh, ids, w, k, n_groups_used, norm, eps, scale, True, 0)
                else:
                    route_sm(y, 0, True, ids, w, k, norm, True, 0)

        return kernel

    return _cached(("dense_routed", kind, nw, wpr, n_expert, n_groups, sigmoid, prefetch), make)


def expert(kind: str, nw: int = GEMV_WARPS):
    """(qs, hdr, xq, xa, xf, ids, y, N, K, div): grid (ceil(N / nw), R)."""
    def make():
        row_dot, _ = _row_dots(DOTS[kind])

        def kernel(qs, hdr, xq, xa, xf, ids, y, N, K, div):
            grid_dep_wait()
            r = cuda.blockIdx.y
            n = cuda.blockIdx.x * nw + cuda.threadIdx.x // 32
            lane = cuda.threadIdx.x & 31
            acc = np.float32(0)
            if n < N:
                acc = row_dot(qs, hdr, ids[r] * N + n, K, xq, xa, xf, r // div, lane, 32)
            acc = warp_sum(acc)
            if lane == 0 and n < N:
                y[r * N + n] = acc

        return kernel

    return _cached(("expert", kind, nw), make)


def _up_gate_body(kind: str, nw: int):
    """Device function (gq, gh, uq, uh, xq, xa, xf, h, F, K, k, e): block (x, r) of an up/gate grid computes
    h[r, n] = silu(x_t . Wg[e, n]) * (x_t . Wu[e, n]) for its nw rows n (a warp each), t = r // k."""
    key = ("up_gate_body", kind, nw)
    if key not in _CACHE:
        _, row_dot2 = _row_dots(DOTS[kind])

        @device
        def body(gq, gh, uq, uh, xq, xa, xf, h, F, K, k, e):
            r = cuda.blockIdx.y
            n = cuda.blockIdx.x * nw + cuda.threadIdx.x // 32
            lane = cuda.threadIdx.x & 31
            g, u = np.float32(0), np.float32(0)
            if n < F:
                g, u = row_dot2(gq, gh, uq, uh, e * F + n, K, xq, xa, xf, r // k, lane, 32)
            g = warp_sum(g)
            u = warp_sum(u)
            if lane == 0 and n < F:
                h[r * F + n] = g / (np.float32(1) + math.exp(-g)) * u

        _CACHE[key] = body
    return _CACHE[key]


def up_gate(kind: str, nw: int = GEMV_WARPS):
    """(gq, gh, uq, uh, xq, xa, xf, ids, h, F, K, k): grid (ceil(F / nw), R)."""
    def make():
        body = _up_gate_body(kind, nw)

        def kernel(gq, gh, uq, uh, xq, xa, xf, ids, h, F, K, k):
            grid_dep_wait()
            body(gq, gh, uq, uh, xq, xa, xf, h, F, K, k, ids[cuda.blockIdx.y])

        return kernel

    return _cached(("up_gate", kind, nw), make)


def up_gate_routed(kind: str, nw: int, n_expert: int, n_groups: int, sigmoid: bool):
    """``up_gate`` that routes its token itself: (gq, gh, uq, uh, xq, xa, xf, logits, bias, has_bias, ids, w, h, F,
    K, k, norm, n_groups_used, eps, scale), grid (ceil(F / nw), R). Each block runs its token's routing (softmax or
    sigmoid top-k, ``routing``) on the router logits and takes the expert of its slot; block (0, slot 0) also
    writes the token's ids and weights for the down projection. Saves the routing launch of a decode step.
    Warp 0 alone routes: with a routing in every warp (6k per qwen3 layer, ~700 instructions each, ~4 us of issue
    time) the sweep of 2026-12-05 05:18 UTC lost 4-11% of its shallow TG. Opt-in (``CudaOps.fuse_route``)."""
    if nw > routing.ROUTE_WARPS:
        raise ValueError(f"up_gate_routed: {nw} warps per block, the routers' shared rows hold {routing.ROUTE_WARPS}")

    def make():
        body = _up_gate_body(kind, nw)
        X, RW = n_expert, routing.ROUTE_WARPS
        route_sm = routing.softmax_router(n_expert)
        route_sg = routing.sigmoid_router(n_expert, n_groups)

        def kernel_softmax(gq, gh, uq, uh, xq, xa, xf, logits, bias, has_bias, ids, w, h, F, K, k, norm,
                           n_groups_used, eps, scale):
            grid_dep_wait()
            r = cuda.blockIdx.y
            sh = cuda.shared.array(1, np.int32)
            if cuda.threadIdx.x < 32:  # warp 0 routes; the block reads its slot's expert from shared memory
                write = cuda.blockIdx.x == 0 and r % k == 0
                e = route_sm(logits, r // k, True, ids, w, k, norm, write, r % k)
                if cuda.threadIdx.x == 0:
                    sh[0] = e
            cuda.syncthreads()
            body(gq, gh, uq, uh, xq, xa, xf, h, F, K, k, sh[0])

        def kernel_sigmoid(gq, gh, uq, uh, xq, xa, xf, logits, bias, has_bias, ids, w, h, F, K, k, norm,
                           n_groups_used, eps, scale):
            grid_dep_wait()
            r = cuda.blockIdx.y
            sh = cuda.shared.array(1, np.int32)
            sel_sh = cuda.shared.array((RW, X), np.float32)
            if cuda.threadIdx.x < 32:
                write = cuda.blockIdx.x == 0 and r % k == 0
                e = route_sg(logits, bias, has_bias, r // k, True, sel_sh, ids, w, k, n_groups_used, norm, eps,
                             scale, write, r % k)
                if cuda.threadIdx.x == 0:
                    sh[0] = e
            cuda.syncthreads()
            body(gq, gh, uq, uh, xq, xa, xf, h, F, K, k, sh[0])

        return kernel_sigmoid if sigmoid else kernel_softmax

    return _cached(("up_gate_routed", kind, nw, n_expert, n_groups, sigmoid), make)


def down_combine(kind: str, nw: int = GEMV_WARPS, tail: bool = False):
    """(qs, hdr, hq, ha, hf, ids, w, y, E, F, k, z, add, *TAIL): grid (ceil(E / nw), T), block 32 * nw. A warp per
    output value runs over all k * F/32 (slot, chunk) pairs of its row, two per lane and iteration, each dot scaled
    by its slot's weight: one warp reduction at the end, no chain over the slots, a fixed order (deterministic).
    With add, y = that sum + z (float32 [T, E]: the shared expert's output). TAIL as in ``dense`` (T == 1)."""

    def make():
        dot = DOTS[kind]

        def kernel(qs, hdr, hq, ha, hf, ids, w, y, E, F, k, z, add, ta, tres, tw, tout, toq, toa, teps, counter):
            grid_dep_wait()
            flag = cuda.shared.array(1, np.int32)
            n = cuda.blockIdx.x * nw + cuda.threadIdx.x // 32
            t, lane = cuda.blockIdx.y, cuda.threadIdx.x & 31
            nc = F // 32
            total = k * nc
            acc = np.float32(0)
            if n < E:
                c = lane
                while c < total:
                    c2 = c + 32
                    ok = c2 < total
                    cb = c2 if ok else c
                    r, r2 = t * k + c // nc, t * k + cb // nc
                    a = dot(qs, hdr, ids[r] * E + n, c % nc, F, hq, ha, hf, r)
                    b = dot(qs, hdr, ids[r2] * E + n, cb % nc, F, hq, ha, hf, r2)
                    acc += w[r] * a + (w[r2] * b if ok else np.float32(0))
                    c += 64
            acc = warp_sum(acc)
            if lane == 0 and n < E:
                y[t * E + n] = acc + z[t * E + n] if add else acc
            if tail:
                norm_tail(y, ta, tres, tw, tout, toq, toa, E, teps, counter, flag)

        return kernel

    return _cached(("down_combine", kind, nw, tail), make)
