"""MoE routing, grouping of routed rows by expert, and the weighted combine (NumPy twins in ``ref_ops``).

Dimension legend: T tokens, X experts, K experts per token, R = T*K routed rows in (token, slot) order,
E model width, G expert groups (bailingmoe2), Gk groups kept.
Top-k order is ik's: descending value, ties to the larger index; the slot order is that sorted order.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from sweepbench.cpu_kernels.threads import with_serial_twin


@njit(cache=True)
def _top_k(scores, k, out):
    """Indices of the k largest of scores [n] (ties -> larger index first), descending, into out [k]."""
    n = scores.shape[0]
    taken = np.zeros(n, np.bool_)
    for j in range(k):
        best = -1
        for i in range(n):
            if taken[i]:
                continue
            if best < 0 or scores[i] > scores[best] or (scores[i] == scores[best] and i > best):
                best = i
        taken[best] = True
        out[j] = best


@with_serial_twin
def route_softmax_topk(logits, k, norm, ids, weights):
    """logits f32 [T, X] -> ids int32 [T, K], weights f32 [T, K]: softmax (float64), top-k, renormalised."""
    t_n, x_n = logits.shape
    for t in prange(t_n):
        z = logits[t]
        mx = -np.inf
        for i in range(x_n):
            mx = max(mx, np.float64(z[i]))
        e = np.empty(x_n, np.float64)
        tot = 0.0
        for i in range(x_n):
            e[i] = math.exp(np.float64(z[i]) - mx)
            tot += e[i]
        probs = np.empty(x_n, np.float32)
        for i in range(x_n):
            probs[i] = np.float32(e[i] / tot)
        sel = np.empty(k, np.int64)
        _top_k(probs, k, sel)
        s = 0.0
        for j in range(k):
            s += np.float64(probs[sel[j]])
        inv = 1.0 / s if (norm and s > 0) else (0.0 if norm else 1.0)
        for j in range(k):
            ids[t, j] = sel[j]
            weights[t, j] = np.float32(np.float64(probs[sel[j]]) * inv)


@with_serial_twin
def route_sigmoid_topk(logits, bias, has_bias, k, n_groups, n_used, norm, norm_eps, scale, ids, weights):
    """BailingMoE2: selection on sigmoid + bias (grouped top-k when n_groups > 1), weights from the unbiased
    sigmoid, normalised by (sum + norm_eps), times scale when it differs from 1."""
    t_n, x_n = logits.shape
    per = x_n // n_groups
    for t in prange(t_n):
        probs = np.empty(x_n, np.float32)
        sel_s = np.empty(x_n, np.float32)
        for i in range(x_n):
            probs[i] = np.float32(1.0 / (1.0 + math.exp(-np.float64(logits[t, i]))))
            sel_s[i] = probs[i] + bias[i] if has_bias else probs[i]
        sel = np.empty(k, np.int64)
        if n_groups > 1 and k > per * n_used:  # ik's guard: the kept groups could not fill k slots
            for j in range(k):
                sel[j] = j
        elif n_groups > 1:
            gscore = np.empty(n_groups, np.float32)
            two = np.empty(2, np.int64)
            for gi in range(n_groups):
                grp = sel_s[gi * per : (gi + 1) * per]
                if per > 1:
                    _top_k(grp, 2, two)
                    gscore[gi] = grp[two[0]] + grp[two[1]]
                else:
                    gscore[gi] = grp[0]
            kept = np.empty(n_used, np.int64)
            _top_k(gscore, n_used, kept)
            masked = np.full(x_n, -np.inf, np.float32)
            for j in range(n_used):
                masked[kept[j] * per : (kept[j] + 1) * per] = sel_s[kept[j] * per : (kept[j] + 1) * per]
            _top_k(masked, k, sel)
        else:
            _top_k(sel_s, k, sel)
        w = np.empty(k, np.float64)
        s = 0.0
        for j in range(k):
            w[j] = np.float64(probs[sel[j]])
            s += w[j]
        for j in range(k):
            v = w[j] / (s + norm_eps) if norm else w[j]
            if abs(scale - 1.0) > 1e-5:
                v = v * scale
            ids[t, j] = sel[j]
            weights[t, j] = np.float32(v)


@njit(cache=True)
def group_rows(ids, n_expert, rows, xrows, offsets):
    """Counting sort of the R routed rows by expert, stable in (token, slot) order. Fills rows [R] (routed row
    index r = t*K + j), xrows [R] (its token t), offsets [X+1]; returns the active experts (count > 0)."""
    k = ids.shape[1]
    flat = ids.reshape(-1)
    counts = np.zeros(n_expert, np.int64)
    for r in range(flat.shape[0]):
        counts[flat[r]] += 1
    offsets[0] = 0
    for e in range(n_expert):
        offsets[e + 1] = offsets[e] + counts[e]
    fill = offsets[:-1].copy()
    for r in range(flat.shape[0]):
        e = flat[r]
        rows[fill[e]] = r
        xrows[fill[e]] = r // k
        fill[e] += 1
    n_active = 0
    for e in range(n_expert):
        n_active += counts[e] > 0
    active = np.empty(n_active, np.int64)
    a = 0
    for e in range(n_expert):
        if counts[e] > 0:
            active[a] = e
            a += 1
    return active


@njit(cache=True)
def combine_row(y, weights, t, out):
    """out [E] = sum_j w[t, j] y[t*K + j] over the slots j in order: y_0 w_0, then + y_j w_j, each rounded."""
    k = weights.shape[1]
    w0 = weights[t, 0]
    for i in range(out.shape[0]):
        out[i] = y[t * k, i] * w0
    for j in range(1, k):
        wj = weights[t, j]
        for i in range(out.shape[0]):
            out[i] = out[i] + y[t * k + j, i] * wj


@with_serial_twin
def combine(y, weights, out):
    """y f32 [R, E] rows (t, j), weights [T, K] -> out [T, E] = sum_j w[t, j] y[t*K + j], j in slot order
    (multiply then add, each rounded, as the twin)."""
    for t in prange(weights.shape[0]):
        combine_row(y, weights, t, out[t])
