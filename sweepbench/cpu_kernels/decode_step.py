"""A whole one-token decode step of qwen3moe / bailingmoe2 as ONE compiled call per thread.

Why: the products of a step alone (49 calls with their inputs prepared) ran faster than ik's whole step, but the
step around them (Python per op, a dispatch per kernel, the second thread woken for each parallel launch, the
small ops with cold caches) added 3-5 ms a token (benchmarks/NOTES.md, CPU). Here every thread runs the
same program (``run_step``) over the layers; each product, and the attention's KV heads, are shared out as work
items (``_grab``: C[C_STATIC8] eighths in fixed shares, the rest from a shared counter; the KV heads all from
the counter), and a spinning barrier (``spin.barrier``) separates the phases that read what others wrote.
Small ops (norms, routing, quantizing an activation) are computed by every thread into its own buffers, so
they need no barrier. Thread 0 is the caller; the others are workers parked in ``worker_loop``. ``B.prof``
counts cycles per phase and thread (``benchmarks/cpu_profile.py`` prints them).

Same numbers as the op-by-op path: every value comes from the same row functions as the ops (``dense``, ``moe``,
``attention``, ``qmm``'s work items) in the same order, so the logits keep their bits; the split of items
between threads never changes an item's arithmetic, and no sum crosses threads (no atomics on data).

Phases of a layer (``|`` = barrier):
    norm (or residual + norm), quantize, QKV items | per KV head: k norm+RoPE+store, q norm+RoPE, attention |
    quantize, O items | residual + norm, quantize, router items | route, group rows, up/gate items (routed +
    shared/dense FFN) | quantize, down items | (next layer) ... residual + norm, quantize, head items |

Dimension legend: E model width, Nq = H*D, Nkv = Hkv*D, X experts, K used experts, F expert width, Fs shared or
dense FFN width, V vocabulary, n roles (threads).
"""
from __future__ import annotations

from collections import namedtuple

from numba import njit

from sweepbench.cpu_kernels import moe
from sweepbench.cpu_kernels.attention import attn_item, store_head
from sweepbench.cpu_kernels.dense import _rms_row, norm_rope_rows, residual_norm, rope_table
from sweepbench.cpu_kernels.qmm import f_mm_items, mm_items, up_gate_items
from sweepbench.cpu_kernels.quant_act import REC, quantize_row
from sweepbench.cpu_kernels.spin import (
    F_CMD, F_POS, F_STOP, LINE, atomic_add, atomic_load, barrier, cpu_relax, cycles,
)

# matrix slots of a layer (meta[il, slot]); the output head is meta[n_layer, QKV]
QKV, O, ROUTER, GATE_X, UP_X, DOWN_X, GATE_F, UP_F, DOWN_F = range(9)
N_SLOT = 9
M_KIND, M_K, M_GROUPS, M_IDX, M_FLOAT = range(5)  # meta fields (M_IDX into mats, or fmats when M_FLOAT)
N_META = 5
# vector slots of a layer (vmeta[il, slot] = index into vecs, -1 = absent); output norm: vmeta[n_layer, V_ATTN]
V_ATTN, V_QN, V_KN, V_FFN, V_BIAS = range(5)
N_VEC = 5
# C (int64) fields
(C_LAYERS, C_E, C_HEAD, C_HKV, C_D, C_ROT, C_NEXP, C_USED, C_SIGMOID, C_NGROUPS, C_GUSED, C_NORMW, C_KQ8,
 C_VQ8, C_MOE0, C_STATIC8) = range(16)
N_C = 16
# FC (float64) fields
FC_EPS, FC_BASE, FC_FSCALE, FC_NORM_EPS, FC_WSCALE = range(5)
N_FC = 5

# what the residual carries into the next norm: nothing, + the combine of (y, wts), or + an array
P_NONE, P_COMBINE, P_ARRAY = 0, 1, 2

_route_softmax = moe.route_softmax_topk.serial  # module globals: njit code calls a twin by its global name
_route_sigmoid = moe.route_sigmoid_topk.serial
_group_rows = moe.group_rows

# Buffers: shared ones are written by item shares (disjoint) and read after a barrier; per-role ones ([n, ...])
# are written and read by one thread. The shared outputs of a layer's phases have one copy per layer ([Lb, ...],
# layer il uses il % Lb; the engine allocates Lb = L): with one copy, a line one thread wrote was read by both and
# then written again a layer later, often by the other thread, and when the two vCPUs ran on different CCDs
# (this host's fast memory state) taking it back cost the down projection ~10% of its rate (NOTES.md, CPU).
Buffers = namedtuple("Buffers", [
    # shared
    "qkv",      # f32 [Lb, 1, Nq + 2 Nkv]  fused QKV output
    "qrot",     # f32 [1, Nq]          q normed + rotated (each role its KV heads' query heads)
    "krot",     # f32 [1, Nkv]         k normed + rotated
    "att",      # f32 [Lb, 1, Nq]      attention output
    "o",        # f32 [Lb, 1, E]       attention projection
    "rl",       # f32 [Lb, 1, X]       router logits
    "h",        # f32 [Lb, K, F]       expert hidden rows (expert order)
    "hs",       # f32 [Lb, 1, Fs]      shared / dense FFN hidden row
    "y",        # f32 [Lb, K, E]       expert outputs ((t, j) order)
    "ys",       # f32 [Lb, 1, E]       shared / dense FFN output
    "logits",   # f32 [1, V]
    "id_rows", "id_offs", "id_act",   # int64 [1], [2], [1]: the one-'expert' index arrays of a dense product
    # per role
    "x",        # f32 [n, 1, E]        residual stream
    "x2",       # f32 [n, 1, E]        the next residual value
    "a",        # f32 [n, 1, E]        normed row (attention input, FFN input, head input)
    "v",        # f32 [n, 1, E]        shared expert + combine (bailingmoe2)
    "xa",       # u8  [n, E/32*48]     a quantized
    "xa8",      # u8  [n, K * E/32*48] a quantized, once per routed row (the gathered expert input)
    "xo",       # u8  [n, Nq/32*48]    attention output quantized
    "hq",       # u8  [n, K * F/32*48] expert hidden rows quantized
    "hsq",      # u8  [n, Fs/32*48]    shared hidden row quantized
    "cs", "sn",  # f32 [n, 1, n_rot/2] RoPE table of this position
    "ids",      # i32 [n, 1, K]
    "wts",      # f32 [n, 1, K]
    "rows", "xrows",  # i64 [n, K]
    "offs",     # i64 [n, X + 1]
    "q8",       # i8  [n, 32]          KV q8_0 scratch
    "zbias",    # f32 [X]              zero selection bias (models without one)
    "prof",     # i64 [n, N_PHASE, 2]  cycle-counter ticks per phase: working, waiting at its barrier
    "ctr",      # i64 [(L+1) * N_PHASE * LINE]  work-item counters of every phase of a step (zeroed per step)
])

# phases of ``prof`` (cpu_profile.py prints them)
PHASES = ("norm", "qkv", "attention", "o", "router", "route", "up_gate", "down", "head")
PH_NORM, PH_QKV, PH_ATT, PH_O, PH_ROUTER, PH_ROUTE, PH_UPGATE, PH_DOWN, PH_HEAD = range(9)
N_PHASE = 9


@njit(cache=True, nogil=True)
def _tick(prof, phase, t0):
    """Adds the ticks since t0 to this role's phase; returns now."""
    t = cycles()
    prof[phase, 0] += t - t0
    return t


@njit(cache=True, nogil=True)
def _wait(sync, n_roles, prof, phase, t0):
    """The barrier that ends ``phase``, its work and its wait timed apart."""
    t = cycles()
    prof[phase, 0] += t - t0
    barrier(sync, n_roles)
    t1 = cycles()
    prof[phase, 1] += t1 - t
    return t1


@njit(cache=True, nogil=True)
def _share(n_items, role, n_roles):
    return n_items * role // n_roles, n_items * (role + 1) // n_roles


@njit(cache=True, nogil=True)
def _grab(role, n_roles, n, static, ctr, slot, st):
    """The next items [lo, hi) of a phase of n items for this role; st: 0 before the first call, 2 when done.

    First a fixed share of the first ``static`` items, then chunks taken from a shared counter until none are
    left: a thread that runs slower takes fewer chunks instead of making the other wait at the barrier (the
    second vCPU was once measured 5-15% slower in every phase; since the per-layer outputs the products run
    all in fixed shares, which streamed 2.5% faster when the vCPUs sat on different CCDs). Which thread
    computes an item never changes its bits."""
    if st == 0:
        lo, hi = _share(static, role, n_roles)
        return lo, hi, 1
    chunk = max(1, (n - static) // (8 * n_roles))
    lo = static + atomic_add(ctr, slot * LINE, chunk)
    if lo >= n:
        return n, n, 2
    return lo, min(lo + chunk, n), 1


@njit(cache=True, nogil=True)
def _static(n, n_roles, s8):
    """Items handed out in fixed shares: s8 eighths (C[C_STATIC8]), the rest by the counter (all on one thread)."""
    return n if n_roles == 1 else n * s8 // 8


@njit(cache=True, nogil=True)
def _quant_rows(x, out):
    """x f32 [T, K] -> out u8 [T*K/32*48] records (``QuantAct``'s bytes, flattened)."""
    rb = x.shape[1] // 32 * REC
    for t in range(x.shape[0]):
        quantize_row(x[t], out, t * rb)


@njit(cache=True, nogil=True)
def _dense_items(role, n_roles, meta, il, slot, mats, X, B, Y, cslot, s8):
    """A one-row product (``ops.matmul``) of matrix ``slot``: this role's items of its row groups."""
    kind, K, ng, idx = meta[il, slot, M_KIND], meta[il, slot, M_K], meta[il, slot, M_GROUPS], meta[il, slot, M_IDX]
    w, ctr, rows, offs, act = mats[idx], B.ctr, B.id_rows, B.id_offs, B.id_act  # once: no refcounts per item
    st = 0
    while st != 2:
        lo, hi, st = _grab(role, n_roles, ng, _static(ng, n_roles, s8), ctr, cslot, st)
        mm_items(kind, w, ng, K, X, rows, offs, act, Y, lo, hi)


@njit(cache=True, nogil=True)
def _residual(pend, x, parr, y, wts, w, eps, s_out, n_out):
    """The lazy ops' residual add (+ combine) and the norm that reads it (``dense.residual_norm``)."""
    if pend == P_COMBINE:
        residual_norm(x, x, y, wts, True, w, eps, True, s_out, n_out)
    else:
        residual_norm(x, parr, y, wts, False, w, eps, True, s_out, n_out)


@njit(cache=True, nogil=True)
def run_step(role, n_roles, sync, pos, C, FC, meta, vmeta, mats, fmats, vecs, kcs, vcs, vss, B):
    """This role's part of one decode step at position ``pos``; B.x[role] holds the token's embedding on entry,
    B.logits the logits on return (all roles return after the last barrier)."""
    n_layer, n_head, h_kv, D = C[C_LAYERS], C[C_HEAD], C[C_HKV], C[C_D]
    nq, nkv, g_n = n_head * D, h_kv * D, n_head // h_kv
    k_used, n_exp = C[C_USED], C[C_NEXP]
    eps = FC[FC_EPS]
    s8 = C[C_STATIC8]
    k_q8, v_q8 = C[C_KQ8] != 0, C[C_VQ8] != 0
    x, x2, a = B.x[role], B.x2[role], B.a[role]
    xa, cs, sn = B.xa[role], B.cs[role], B.sn[role]
    rope_table(pos, 1, C[C_ROT], FC[FC_BASE], FC[FC_FSCALE], cs, sn)
    pend = P_NONE
    parr = B.ys[0]
    prof, ctr, q8 = B.prof[role], B.ctr, B.q8[role]
    qrot, krot = B.qrot, B.krot
    id_rows, id_offs, id_act = B.id_rows, B.id_offs, B.id_act
    yp = B.y[0]  # the previous layer's expert outputs (what a pending combine adds)
    t = cycles()
    for il in range(n_layer):
        lb = il % B.y.shape[0]  # this layer's shared outputs (see Buffers)
        qkv, att, o, yl = B.qkv[lb], B.att[lb], B.o[lb], B.y[lb]
        v_all = qkv[:, nq + nkv : nq + 2 * nkv]
        # ---- attention input: norm (layer 0) or residual + norm
        wn = vecs[vmeta[il, V_ATTN]]
        if pend == P_NONE:
            _rms_row(x[0], wn, eps, a[0])
        else:
            _residual(pend, x, parr, yp, B.wts[role], wn, eps, x2, a)
            x, x2 = x2, x
        _quant_rows(a, xa)
        t = _tick(prof, PH_NORM, t)
        cs0 = il * N_PHASE
        _dense_items(role, n_roles, meta, il, QKV, mats, xa, B, qkv.reshape(-1), cs0 + PH_QKV, s8)
        t = _wait(sync, n_roles, prof, PH_QKV, t)
        # ---- per KV head: k norm + RoPE + store, its query heads' norm + RoPE, attention
        wq, wk = vecs[vmeta[il, V_QN]], vecs[vmeta[il, V_KN]]
        kc, vc, vs = kcs[il], vcs[il], vss[il]
        st = 0
        while st != 2:  # KV heads one at a time from the counter
            lo, hi, st = _grab(role, n_roles, h_kv, 0, ctr, cs0 + PH_ATT, st)
            for h in range(lo, hi):
                norm_rope_rows(qkv[:, nq + h * D : nq + (h + 1) * D], wk, True, eps, D, cs, sn,
                               krot[:, h * D : (h + 1) * D])
                store_head(krot, v_all, kc, vc, vs, pos, k_q8, v_q8, h, q8)
                norm_rope_rows(qkv[:, h * g_n * D : (h + 1) * g_n * D], wq, True, eps, D, cs, sn,
                               qrot[:, h * g_n * D : (h + 1) * g_n * D])
                attn_item(qrot, att, pos, n_head, kc, vc, vs, k_q8, v_q8, h)
        t = _wait(sync, n_roles, prof, PH_ATT, t)
        # ---- output projection
        xo = B.xo[role]
        _quant_rows(att, xo)
        _dense_items(role, n_roles, meta, il, O, mats, xo, B, o.reshape(-1), cs0 + PH_O, s8)
        t = _wait(sync, n_roles, prof, PH_O, t)
        # ---- FFN input: x + o, normed
        residual_norm(x, o, yp, B.wts[role], False, vecs[vmeta[il, V_FFN]], eps, True, x2, a)
        x, x2 = x2, x
        _quant_rows(a, xa)
        moe_layer = meta[il, GATE_X, M_IDX] >= 0
        ffn = meta[il, GATE_F, M_IDX] >= 0
        ids, wts, rows, xrows, offs = B.ids[role], B.wts[role], B.rows[role], B.xrows[role], B.offs[role]
        rl = B.rl[lb]
        rl1 = rl.reshape(-1)
        n_r = 0
        active = B.id_act
        if moe_layer:
            kind, K, ng, idx = (meta[il, ROUTER, M_KIND], meta[il, ROUTER, M_K], meta[il, ROUTER, M_GROUPS],
                                meta[il, ROUTER, M_IDX])
            lo, hi = _share(ng, role, n_roles)  # a few groups: fixed shares
            if meta[il, ROUTER, M_FLOAT]:
                f_mm_items(kind, fmats[idx], ng, K, a.reshape(-1), id_rows, id_offs, id_act, rl1, lo, hi)
            else:
                mm_items(kind, mats[idx], ng, K, xa, id_rows, id_offs, id_act, rl1, lo, hi)
            t = _wait(sync, n_roles, prof, PH_ROUTER, t)
            if C[C_SIGMOID]:
                bi = vmeta[il, V_BIAS]
                _route_sigmoid(rl, vecs[bi] if bi >= 0 else B.zbias, bi >= 0, k_used, C[C_NGROUPS], C[C_GUSED],
                               C[C_NORMW] != 0, FC[FC_NORM_EPS], FC[FC_WSCALE], ids, wts)
            else:
                _route_softmax(rl, k_used, C[C_NORMW] != 0, ids, wts)
            active = _group_rows(ids, n_exp, rows, xrows, offs)
            rb = xa.shape[0]
            xa8 = B.xa8[role]
            for r in range(k_used):  # the gathered expert input: row r is token xrows[r] = 0
                xa8[r * rb : (r + 1) * rb] = xa
            n_r = active.shape[0] * meta[il, GATE_X, M_GROUPS]
        t = _tick(prof, PH_ROUTE, t)
        # ---- up/gate: routed items, then the shared / dense FFN's (arrays fetched once: a typed-list item or a
        # reshape inside the loop is a reference count both threads update, a contended cache line per item)
        ngx, ngf = meta[il, GATE_X, M_GROUPS], meta[il, GATE_F, M_GROUPS]
        n_f = ngf if ffn else 0
        kx, kxk = meta[il, GATE_X, M_KIND], meta[il, GATE_X, M_K]
        kf, kfk = meta[il, GATE_F, M_KIND], meta[il, GATE_F, M_K]
        gx, ux = mats[max(0, meta[il, GATE_X, M_IDX])], mats[max(0, meta[il, UP_X, M_IDX])]
        gf, uf = mats[max(0, meta[il, GATE_F, M_IDX])], mats[max(0, meta[il, UP_F, M_IDX])]
        hl, hs = B.h[lb], B.hs[lb]
        h1, hs1, xa8 = hl.reshape(-1), hs.reshape(-1), B.xa8[role]
        n_all = n_r + n_f
        st = 0
        while st != 2:
            lo, hi, st = _grab(role, n_roles, n_all, _static(n_all, n_roles, s8), ctr, cs0 + PH_UPGATE, st)
            if lo < n_r:
                up_gate_items(kx, gx, ux, ngx, kxk, xa8, offs, active, h1, lo, min(hi, n_r))
            if hi > n_r:
                up_gate_items(kf, gf, uf, ngf, kfk, xa, id_offs, id_act, hs1, max(lo, n_r) - n_r, hi - n_r)
        t = _wait(sync, n_roles, prof, PH_UPGATE, t)
        # ---- down: routed items, then the shared / dense FFN's
        hq, hsq = B.hq[role], B.hsq[role]
        if moe_layer:
            _quant_rows(hl, hq)
        if ffn:
            _quant_rows(hs, hsq)
        ngx, ngf = meta[il, DOWN_X, M_GROUPS], meta[il, DOWN_F, M_GROUPS]
        n_r = active.shape[0] * ngx if moe_layer else 0
        n_f = ngf if ffn else 0
        kx, kxk = meta[il, DOWN_X, M_KIND], meta[il, DOWN_X, M_K]
        kf, kfk = meta[il, DOWN_F, M_KIND], meta[il, DOWN_F, M_K]
        dx, df = mats[max(0, meta[il, DOWN_X, M_IDX])], mats[max(0, meta[il, DOWN_F, M_IDX])]
        ys = B.ys[lb]
        y1, ys1 = yl.reshape(-1), ys.reshape(-1)
        n_all = n_r + n_f
        st = 0
        while st != 2:
            lo, hi, st = _grab(role, n_roles, n_all, _static(n_all, n_roles, s8), ctr, cs0 + PH_DOWN, st)
            if lo < n_r:
                mm_items(kx, dx, ngx, kxk, hq, rows, offs, active, y1, lo, min(hi, n_r))
            if hi > n_r:
                mm_items(kf, df, ngf, kfk, hsq, id_rows, id_offs, id_act, ys1, max(lo, n_r) - n_r, hi - n_r)
        t = _wait(sync, n_roles, prof, PH_DOWN, t)
        yp = yl
        # ---- what the next norm adds to the residual (the lazy ops' Sum / Combined)
        if moe_layer and ffn:  # bailingmoe2: v = shared + combine(y), then x + v
            v = B.v[role]
            residual_norm(ys, ys, yl, wts, True, B.zbias, 0.0, False, v, v)
            pend, parr = P_ARRAY, v
        elif moe_layer:
            pend = P_COMBINE
        else:
            pend, parr = P_ARRAY, ys
    # ---- head
    _residual(pend, x, parr, yp, B.wts[role], vecs[vmeta[n_layer, V_ATTN]], eps, x2, a)
    _quant_rows(a, xa)
    _dense_items(role, n_roles, meta, n_layer, QKV, mats, xa, B, B.logits.reshape(-1), n_layer * N_PHASE + PH_HEAD, s8)
    _wait(sync, n_roles, prof, PH_HEAD, t)


@njit(cache=True, nogil=True)
def worker_loop(role, n_roles, sync, seen, spin_cycles, C, FC, meta, vmeta, mats, fmats, vecs, kcs, vcs, vss, B):
    """A worker's life between Python returns: waits (spinning) for the next step command, runs its part of
    every step posted, returns 1 after ``spin_cycles`` without a command (the caller then sleeps) or 0 on stop.
    seen [1]: the last command this worker ran (kept across returns)."""
    t_idle = cycles()
    while True:
        cmd = atomic_load(sync, F_CMD * LINE)
        if cmd != seen[0]:
            seen[0] = cmd
            if atomic_load(sync, F_STOP * LINE) != 0:
                return 0
            run_step(role, n_roles, sync, atomic_load(sync, F_POS * LINE), C, FC, meta, vmeta, mats, fmats,
                     vecs, kcs, vcs, vss, B)
            t_idle = cycles()
        elif cycles() - t_idle > spin_cycles:
            return 1
        else:
            cpu_relax()
