"""Matrix products over the R8 layouts: per role one driver for the quantized kinds (``q_*``, a switch on
``kind``) and one for float weights (``f_*``, a switch on the format).

Quantized kinds take activation records X (``quant_act``); float kinds (F32, F16, BF16: ``kind >= K_F32``)
take float32 activations X and their weights as float32 or uint16 bits.

Roles (a dense matrix is a stack of one expert whose rows are all the tokens):
    mm        Y[yrows[i], :] = W_e . x_i                       for the rows i of each active expert e
    up_gate   H[i, :] = silu(G_e . x_i) * (U_e . x_i)           (fused: one quantized x, two matrices)
An expert's activation rows are contiguous (the caller gathers them), so a 4-token tile takes one row pointer.
Work items are (active expert, row group of 8 outputs); each walks its expert's rows 4 at a time (``t4``), then
one at a time (``t1``). Items write disjoint outputs, so there are no atomics and runs are bit-identical.

Dimension legend: X experts in the stack, G = N/8 row groups, QB/SB bytes per group, R rows routed,
K input width, N output width; ``offsets`` [X+1] delimit each expert's rows i in the sorted row order.
"""
from __future__ import annotations

from numba import njit, prange

from sweepbench.cpu_kernels.layouts import K_F32, K_IQ4_XS, K_Q4_0, K_Q4_K, K_Q5_K, K_Q6_K, K_Q8_0, K_Q8_F32
from sweepbench.cpu_kernels.qtiles import (
    iq4_t1, iq4_t4, q4_0_t1, q4_0_t4, q6_t1, q6_t4, q8_t1, q8_t4, qk_t1, qk_t4,
)
from sweepbench.cpu_kernels.simd import bcf, fadd, fma, ld1f, ldbf, ldf, ldh, silu_mul, stf, zf
from sweepbench.cpu_kernels.threads import with_serial_twin

# The caller hands items out CHUNK_ITEMS at a time (numba.set_parallel_chunksize; inside a kernel it would make
# the kernel uncacheable), not in one static half per thread: on a shared 2-core machine a preempted thread then
# delays a few items, not half of the product.
CHUNK_ITEMS = 4

# ------------------------------------------------------------------------------------------- float weights
# w [X, G, K*8]: element k of the 8 rows of group g side by side; fmt 0 = float32, 1 = f16 bits, 2 = bf16 bits.
# Four partial sums over k (k mod 4) keep four FMA chains in flight; they are added in a fixed order.


@njit(cache=True)
def _ldw(w, idx, fmt):
    if fmt == 0:
        return ldf(w, idx)
    if fmt == 1:
        return ldh(w, idx)
    return ldbf(w, idx)


@njit(cache=True)
def f_t1(w, g, K, X, r, fmt):
    base, xo = g * K * 8, r * K
    a0, a1, a2, a3 = zf(), zf(), zf(), zf()
    for k in range(0, K, 4):
        o = base + 8 * k
        xb = 4 * (xo + k)  # byte offset: unchecked scalar loads (Numba's wraparound check costs 3 instructions)
        a0 = fma(_ldw(w, o, fmt), bcf(ld1f(X, xb)), a0)
        a1 = fma(_ldw(w, o + 8, fmt), bcf(ld1f(X, xb + 4)), a1)
        a2 = fma(_ldw(w, o + 16, fmt), bcf(ld1f(X, xb + 8)), a2)
        a3 = fma(_ldw(w, o + 24, fmt), bcf(ld1f(X, xb + 12)), a3)
    return _sum4(a0, a1, a2, a3)


@njit(cache=True)
def _sum4(a0, a1, a2, a3):
    return fadd(fadd(a0, a1), fadd(a2, a3))


@njit(cache=True)
def f_t4(w, g, K, X, r, fmt):
    """Tokens r..r+3, 2 partial sums each (k even / odd)."""
    base, x0 = g * K * 8, 4 * r * K  # activation byte offsets
    x1, x2, x3 = x0 + 4 * K, x0 + 8 * K, x0 + 12 * K
    a0, a1, a2, a3 = zf(), zf(), zf(), zf()
    b0, b1, b2, b3 = zf(), zf(), zf(), zf()
    for k in range(0, K, 2):
        wa, wb = _ldw(w, base + 8 * k, fmt), _ldw(w, base + 8 * k + 8, fmt)
        o = 4 * k
        a0, b0 = fma(wa, bcf(ld1f(X, x0 + o)), a0), fma(wb, bcf(ld1f(X, x0 + o + 4)), b0)
        a1, b1 = fma(wa, bcf(ld1f(X, x1 + o)), a1), fma(wb, bcf(ld1f(X, x1 + o + 4)), b1)
        a2, b2 = fma(wa, bcf(ld1f(X, x2 + o)), a2), fma(wb, bcf(ld1f(X, x2 + o + 4)), b2)
        a3, b3 = fma(wa, bcf(ld1f(X, x3 + o)), a3), fma(wb, bcf(ld1f(X, x3 + o + 4)), b3)
    return fadd(a0, b0), fadd(a1, b1), fadd(a2, b2), fadd(a3, b3)


# ------------------------------------------------------------------------------------------- quantized


# The item loops below take their tiles as arguments (numba inlines a jitted function passed to an inlined one):
# ``_t1``/``_t4`` switch over the quantized kinds, ``_f1``/``_f4`` over the float formats. Why two: an array
# compiled through one switch over every kind compiled every tile for it, branches it can never take (float
# routers' arrays through the quantized tiles: ~28 s of a first run's compile; NOTES.md, CPU).


@njit(cache=True, inline="always")
def _f1(kind, w, g, K, X, r):
    return f_t1(w, g, K, X, r, kind - K_F32)


@njit(cache=True, inline="always")
def _f4(kind, w, g, K, X, r):
    return f_t4(w, g, K, X, r, kind - K_F32)


@njit(cache=True, inline="always")
def _t1(kind, qs, g, K, X, r):
    if kind == K_Q8_0 or kind == K_Q8_F32:
        return q8_t1(qs, g, K, X, r, kind == K_Q8_F32)
    if kind == K_Q4_0:
        return q4_0_t1(qs, g, K, X, r)
    if kind == K_Q4_K or kind == K_Q5_K:
        return qk_t1(qs, g, K, X, r, kind == K_Q5_K)
    if kind == K_Q6_K:
        return q6_t1(qs, g, K, X, r)
    return iq4_t1(qs, g, K, X, r)


@njit(cache=True, inline="always")
def _t4(kind, qs, g, K, X, r):
    if kind == K_Q8_0 or kind == K_Q8_F32:
        return q8_t4(qs, g, K, X, r, kind == K_Q8_F32)
    if kind == K_Q4_0:
        return q4_0_t4(qs, g, K, X, r)
    if kind == K_Q4_K or kind == K_Q5_K:
        return qk_t4(qs, g, K, X, r, kind == K_Q5_K)
    if kind == K_Q6_K:
        return q6_t4(qs, g, K, X, r)
    return iq4_t4(qs, g, K, X, r)


@njit(cache=True, nogil=True, inline="always")
def mm_item(t1, t4, kind, wq, n_groups, K, X, yrows, offsets, active, Y, item):
    """One work item of ``q_mm``: output rows group g of active expert e for all of e's rows (wq flattened;
    tiles t1, t4)."""
    n_out = n_groups * 8
    e, g = active[item // n_groups], item % n_groups
    gg = e * n_groups + g  # the group's index in the flattened stack (experts are contiguous)
    i, hi = offsets[e], offsets[e + 1]
    while i + 4 <= hi:
        a0, a1, a2, a3 = t4(kind, wq, gg, K, X, i)
        stf(Y, yrows[i] * n_out + 8 * g, a0)
        stf(Y, yrows[i + 1] * n_out + 8 * g, a1)
        stf(Y, yrows[i + 2] * n_out + 8 * g, a2)
        stf(Y, yrows[i + 3] * n_out + 8 * g, a3)
        i += 4
    while i < hi:
        stf(Y, yrows[i] * n_out + 8 * g, t1(kind, wq, gg, K, X, i))
        i += 1


@with_serial_twin
def q_mm(kind, qs, K, X, yrows, offsets, active, Y):
    """qs [X, G, GB] block records; X activation rows (records), expert e's in rows offsets[e]..offsets[e+1];
    row i's output goes to Y[yrows[i]] (flattened)."""
    n_groups = qs.shape[1]
    wq = qs.reshape(-1)  # once: a per-item qs[e].reshape(-1) is a helper call (0.4 ms of a decode step)
    for item in prange(active.shape[0] * n_groups):
        mm_item(_t1, _t4, kind, wq, n_groups, K, X, yrows, offsets, active, Y, item)


@with_serial_twin
def f_mm(kind, w, K, X, yrows, offsets, active, Y):
    """``q_mm`` of float weights: w [X, G, K*8] (float32 or f16/bf16 bits), X float32 rows [.., K]."""
    n_groups = w.shape[1]
    wf = w.reshape(-1)
    for item in prange(active.shape[0] * n_groups):
        mm_item(_f1, _f4, kind, wf, n_groups, K, X, yrows, offsets, active, Y, item)


@njit(cache=True, nogil=True, inline="always")
def up_gate_item(t1, t4, kind, gq, uq, n_groups, K, X, offsets, active, H, item):
    """One work item of ``q_up_gate`` (gq, uq flattened)."""
    n_out = n_groups * 8
    e, g = active[item // n_groups], item % n_groups
    gg = e * n_groups + g
    i, hi = offsets[e], offsets[e + 1]
    while i + 4 <= hi:
        g0, g1, g2, g3 = t4(kind, gq, gg, K, X, i)
        u0, u1, u2, u3 = t4(kind, uq, gg, K, X, i)
        stf(H, i * n_out + 8 * g, silu_mul(g0, u0))
        stf(H, (i + 1) * n_out + 8 * g, silu_mul(g1, u1))
        stf(H, (i + 2) * n_out + 8 * g, silu_mul(g2, u2))
        stf(H, (i + 3) * n_out + 8 * g, silu_mul(g3, u3))
        i += 4
    while i < hi:
        gv, uv = t1(kind, gq, gg, K, X, i), t1(kind, uq, gg, K, X, i)
        stf(H, i * n_out + 8 * g, silu_mul(gv, uv))
        i += 1


@njit(parallel=True, cache=True)
def q_up_gate(kind, gqs, uqs, K, X, offsets, active, H):
    """H f32 [R, F] (flattened), row i = silu(gate_e x_i) * (up_e x_i) for the rows i of each expert e."""
    n_groups = gqs.shape[1]
    gq, uq = gqs.reshape(-1), uqs.reshape(-1)
    for item in prange(active.shape[0] * n_groups):
        up_gate_item(_t1, _t4, kind, gq, uq, n_groups, K, X, offsets, active, H, item)


@njit(parallel=True, cache=True)
def f_up_gate(kind, gw, uw, K, X, offsets, active, H):
    """``q_up_gate`` of float weights (``f_mm``'s layouts)."""
    n_groups = gw.shape[1]
    gf, uf = gw.reshape(-1), uw.reshape(-1)
    for item in prange(active.shape[0] * n_groups):
        up_gate_item(_f1, _f4, kind, gf, uf, n_groups, K, X, offsets, active, H, item)


# ------------------------------------------------------------------------------------------- item ranges
# A range of items in one call, the weight kind dispatched once: each branch passes ``kind`` as a constant into
# the loop, inlined down to the tile switch (``mm_item``, ``_t1``, ``_t4`` are ``inline="always"``), which folds
# away. Why: inside the compiled decode step (``decode_step``, every kernel inlined into one function) an item
# loop over the generic ``mm_item`` streamed the expert down projection at 37-38 GB/s where the same loop over
# the Q8_0 tile reached 60 (2026-12-05, the host's fast memory state; NOTES.md, CPU); through these: down 43,
# up/gate 44 -> 50, O 42 -> 49. Float weights have their own driver, ``f_mm_items`` (the routers).


@njit(cache=True, nogil=True, inline="always")
def _mm_range(t1, t4, kind, wq, n_groups, K, X, yrows, offsets, active, Y, lo, hi):
    for item in range(lo, hi):
        mm_item(t1, t4, kind, wq, n_groups, K, X, yrows, offsets, active, Y, item)


@njit(cache=True, nogil=True, inline="always")
def _up_gate_range(kind, gq, uq, n_groups, K, X, offsets, active, H, lo, hi):
    for item in range(lo, hi):
        up_gate_item(_t1, _t4, kind, gq, uq, n_groups, K, X, offsets, active, H, item)


@njit(cache=True, nogil=True)
def mm_items(kind, wq, n_groups, K, X, yrows, offsets, active, Y, lo, hi):
    """Items lo..hi-1 of ``q_mm`` (``mm_item``)."""
    if kind == K_Q8_0:
        _mm_range(_t1, _t4, K_Q8_0, wq, n_groups, K, X, yrows, offsets, active, Y, lo, hi)
    elif kind == K_Q4_K:
        _mm_range(_t1, _t4, K_Q4_K, wq, n_groups, K, X, yrows, offsets, active, Y, lo, hi)
    elif kind == K_Q6_K:
        _mm_range(_t1, _t4, K_Q6_K, wq, n_groups, K, X, yrows, offsets, active, Y, lo, hi)
    elif kind == K_Q5_K:
        _mm_range(_t1, _t4, K_Q5_K, wq, n_groups, K, X, yrows, offsets, active, Y, lo, hi)
    elif kind == K_Q4_0:
        _mm_range(_t1, _t4, K_Q4_0, wq, n_groups, K, X, yrows, offsets, active, Y, lo, hi)
    elif kind == K_Q8_F32:
        _mm_range(_t1, _t4, K_Q8_F32, wq, n_groups, K, X, yrows, offsets, active, Y, lo, hi)
    else:
        _mm_range(_t1, _t4, K_IQ4_XS, wq, n_groups, K, X, yrows, offsets, active, Y, lo, hi)


@njit(cache=True, nogil=True)
def f_mm_items(kind, w, n_groups, K, X, yrows, offsets, active, Y, lo, hi):
    """Items lo..hi-1 of ``f_mm`` (float weights: the format stays a run-time switch, router-sized products)."""
    _mm_range(_f1, _f4, kind, w, n_groups, K, X, yrows, offsets, active, Y, lo, hi)


@njit(cache=True, nogil=True)
def up_gate_items(kind, gq, uq, n_groups, K, X, offsets, active, H, lo, hi):
    """Items lo..hi-1 of ``q_up_gate`` (``up_gate_item``)."""
    if kind == K_Q8_0:
        _up_gate_range(K_Q8_0, gq, uq, n_groups, K, X, offsets, active, H, lo, hi)
    elif kind == K_Q4_K:
        _up_gate_range(K_Q4_K, gq, uq, n_groups, K, X, offsets, active, H, lo, hi)
    elif kind == K_Q6_K:
        _up_gate_range(K_Q6_K, gq, uq, n_groups, K, X, offsets, active, H, lo, hi)
    elif kind == K_Q5_K:
        _up_gate_range(K_Q5_K, gq, uq, n_groups, K, X, offsets, active, H, lo, hi)
    elif kind == K_Q4_0:
        _up_gate_range(K_Q4_0, gq, uq, n_groups, K, X, offsets, active, H, lo, hi)
    elif kind == K_Q8_F32:
        _up_gate_range(K_Q8_F32, gq, uq, n_groups, K, X, offsets, active, H, lo, hi)
    else:
        _up_gate_range(K_IQ4_XS, gq, uq, n_groups, K, X, offsets, active, H, lo, hi)
