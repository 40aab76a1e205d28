"""The NumPy twins (``sweepbench.ref_ops``) against brute-force loops written straight from the formulas.

Irregular shapes throughout (odd token counts, head counts that are not powers of two, GQA groups of 3).
Tolerances: float32 storage against float64 loops, so 1e-5 relative unless stated.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from sweepbench import ref_ops
from sweepbench.quants import quantize_rows

RTOL = 1e-5


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_rms_norm_matches_the_formula():
    x = _rng().normal(size=(5, 37)).astype(np.float32)
    w = _rng(1).normal(size=37).astype(np.float32)
    expected = [[x[t, i] / math.sqrt(sum(v * v for v in x[t].astype(float)) / 37 + 1e-6) * w[i] for i in range(37)]
                for t in range(5)]
    np.testing.assert_allclose(ref_ops.rms_norm(x, w, 1e-6), expected, rtol=RTOL)


def test_rms_norm_heads_normalises_each_head_separately():
    x = _rng().normal(size=(3, 5 * 12)).astype(np.float32)
    w = _rng(2).normal(size=12).astype(np.float32)
    out = ref_ops.rms_norm_heads(x, w, 1e-5, 12)
    for h in range(5):
        np.testing.assert_allclose(out[:, 12 * h : 12 * h + 12], ref_ops.rms_norm(x[:, 12 * h : 12 * h + 12], w, 1e-5))


@pytest.mark.parametrize("n_rot", [10, 6])  # whole head, and partial rotary (Ling: n_rot = head_dim / 2)
def test_rope_neox_rotates_half_split_pairs_of_the_first_n_rot_dims(n_rot):
    t, h, d, pos0, base, fs = 3, 2, 10, 7, 600000.0, 0.5
    x = _rng().normal(size=(t, h * d)).astype(np.float32)
    out = ref_ops.rope_neox(x, pos0, d, n_rot, base, fs).reshape(t, h, d)
    xh = x.reshape(t, h, d)
    half = n_rot // 2
    for ti in range(t):
        for hi in range(h):
            for i in range(half):
                theta = fs * (pos0 + ti) * base ** (-2 * i / n_rot)
                x0, x1 = float(xh[ti, hi, i]), float(xh[ti, hi, i + half])
                assert out[ti, hi, i] == pytest.approx(x0 * math.cos(theta) - x1 * math.sin(theta), rel=1e-5, abs=1e-6)
                assert out[ti, hi, i + half] == pytest.approx(x0 * math.sin(theta) + x1 * math.cos(theta), rel=1e-5, abs=1e-6)
            np.testing.assert_array_equal(out[ti, hi, n_rot:], xh[ti, hi, n_rot:])  # pass-through dims


def test_matmul_and_swiglu_use_ggml_row_convention():
    x = _rng().normal(size=(3, 7)).astype(np.float32)
    wg, wu = _rng(1).normal(size=(5, 7)).astype(np.float32), _rng(2).normal(size=(5, 7)).astype(np.float32)
    wd = _rng(3).normal(size=(7, 5)).astype(np.float32)
    np.testing.assert_allclose(ref_ops.matmul(x, wg), [[sum(x[t] * wg[n]) for n in range(5)] for t in range(3)], rtol=RTOL)
    g, u = x @ wg.T, x @ wu.T
    expected = (g / (1 + np.exp(-g)) * u) @ wd.T
    np.testing.assert_allclose(ref_ops.swiglu_ffn(x, wg, wu, wd), expected, rtol=1e-5)


@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
def test_attention_is_causal_gqa_over_the_cache(kv_type):
    n_head, n_head_kv, d, pos0, t = 6, 2, 32, 5, 3  # groups of 3 query heads per KV head
    rng = _rng()
    cache = ref_ops.KVCache.allocate(1, 16, n_head_kv * d, kv_type, kv_type)
    k_all = rng.normal(size=(pos0 + t, n_head_kv * d)).astype(np.float32)
    v_all = rng.normal(size=(pos0 + t, n_head_kv * d)).astype(np.float32)
    ref_ops.kv_store(cache, 0, k_all[:pos0], v_all[:pos0], 0)
    ref_ops.kv_store(cache, 0, k_all[pos0:], v_all[pos0:], pos0)
    q = rng.normal(size=(t, n_head * d)).astype(np.float32)
    out = ref_ops.attention(q, cache, 0, pos0, n_head, n_head_kv, d).reshape(t, n_head, d)

    def stored(a):  # what the cache type keeps of a row
        if kv_type == "f16":
            return a.astype(np.float16).astype(np.float64)
        return ref_ops.dequantize(quantize_rows(a, Q.Q8_0), Q.Q8_0, a.shape[1]).astype(np.float64)

    k, v = stored(k_all).reshape(-1, n_head_kv, d), stored(v_all).reshape(-1, n_head_kv, d)
    for ti in range(t):
        n_visible = pos0 + ti + 1
        for h in range(n_head):
            kv = h // (n_head // n_head_kv)
            s = [float(q[ti, h * d : (h + 1) * d] @ k[c, kv]) / math.sqrt(d) for c in range(n_visible)]
            p = np.exp(np.array(s) - max(s))
            p /= p.sum()
            np.testing.assert_allclose(out[ti, h], p @ v[:n_visible, kv], rtol=1e-4, atol=1e-5)


def test_top_k_breaks_ties_towards_the_larger_index():
    scores = np.array([[0.5, 0.9, 0.5, 0.9, 0.1], [1, 1, 1, 1, 1]], np.float32)
    np.testing.assert_array_equal(ref_ops.top_k_desc(scores, 3), [[3, 1, 2], [4, 3, 2]])


def test_softmax_routing_by_brute_force():
    logits = _rng().normal(size=(4, 11)).astype(np.float32)
    ids, w = ref_ops.route_softmax_topk(logits, 3, norm=True)
    for t in range(4):
        p = np.exp(logits[t].astype(float) - logits[t].max())
        p /= p.sum()
        best = sorted(range(11), key=lambda e: (-p[e], -e))[:3]
        assert list(ids[t]) == best
        np.testing.assert_allclose(w[t], p[best] / p[best].sum(), rtol=1e-6)
    _, w_raw = ref_ops.route_softmax_topk(logits, 3, norm=False)
    assert np.all(w_raw.sum(axis=1) < 1)


def test_sigmoid_routing_selects_on_biased_scores_but_weighs_unbiased():
    logits = np.array([[0.0, 0.1, 0.2, 0.3]], np.float32)
    bias = np.array([1.0, 0.0, 0.0, 0.0], np.float32)  # expert 0 wins only through its bias
    ids, w = ref_ops.route_sigmoid_topk(logits, bias, 2, 1, 1, True, 1e-20, 2.5)
    assert list(ids[0]) == [0, 3]
    s = 1 / (1 + np.exp(-logits[0].astype(float)))
    np.testing.assert_allclose(w[0], 2.5 * s[[0, 3]] / (s[0] + s[3] + 1e-20), rtol=1e-6)


def test_grouped_top_k_keeps_the_groups_with_the_best_top2_sums():
    # 3 groups of 3. Group sums of the top 2: g0 = 0.9+0.1, g1 = 0.6+0.5, g2 = 0.8+0.0 -> keep g1, g0
    sel = np.array([[0.9, 0.1, 0.0, 0.6, 0.5, 0.4, 0.8, 0.0, 0.0]], np.float32)
    np.testing.assert_array_equal(ref_ops.grouped_top_k(sel, 3, 3, 2), [[0, 3, 4]])  # 0.8 (group 2) is masked
    np.testing.assert_array_equal(ref_ops.top_k_desc(sel, 3), [[0, 6, 3]])  # plain top-k would take it
    np.testing.assert_array_equal(ref_ops.grouped_top_k(sel, 7, 3, 2), [[0, 1, 2, 3, 4, 5, 6]])  # k > kept experts


def test_grouped_top_k_brute_force_random():
    rng = _rng(5)
    for _ in range(20):
        sel = rng.random((3, 12)).astype(np.float32)
        ids = ref_ops.grouped_top_k(sel, 4, 4, 2)
        for t in range(3):
            groups = sel[t].reshape(4, 3)
            score = [sorted(g)[-1] + sorted(g)[-2] for g in groups]
            kept = sorted(range(4), key=lambda g: (-score[g], -g))[:2]
            cands = [e for e in range(12) if e // 3 in kept]
            assert list(ids[t]) == sorted(cands, key=lambda e: (-sel[t, e], -e))[:4]


def test_group_rows_by_expert_is_a_stable_counting_sort():
    ids = np.array([[2, 0], [0, 2], [1, 0]], np.int32)  # rows r = t*K + j: 0:(0,0)=2 1:(0,1)=0 2:(1,0)=0 ...
    g = ref_ops.group_rows_by_expert(ids, 4)
    np.testing.assert_array_equal(g.offsets, [0, 3, 4, 6, 6])
    np.testing.assert_array_equal(g.rows_of(0), [1, 2, 5])
    np.testing.assert_array_equal(g.rows_of(1), [4])
    np.testing.assert_array_equal(g.rows_of(2), [0, 3])
    assert g.rows_of(3).size == 0


def test_expert_pipeline_matches_a_per_token_loop():
    rng = _rng(3)
    t, e_dim, f, x_count, k = 5, 32, 24, 6, 2
    x = rng.normal(size=(t, e_dim)).astype(np.float32)
    mats = {n: rng.normal(size=(x_count, rows, cols)).astype(np.float32)
            for n, rows, cols in (("gate", f, e_dim), ("up", f, e_dim), ("down", e_dim, f))}
    stacks = {n: ref_ops.ExpertStack(quantize_rows(m.reshape(-1, m.shape[2]), Q.F32), Q.F32, m.shape[2], x_count, True)
              for n, m in mats.items()}
    ids = np.array([[0, 5], [5, 0], [2, 3], [3, 2], [5, 1]], np.int32)
    weights = rng.random((t, k)).astype(np.float32)
    groups = ref_ops.group_rows_by_expert(ids, x_count)
    h = ref_ops.expert_up_gate(x, stacks["gate"], stacks["up"], groups)
    out = ref_ops.combine(ref_ops.expert_down(h, stacks["down"], groups), weights)
    for ti in range(t):
        acc = np.zeros(e_dim)
        for j in range(k):
            e = ids[ti, j]
            g, u = mats["gate"][e] @ x[ti], mats["up"][e] @ x[ti]
            acc += weights[ti, j] * (mats["down"][e] @ (g / (1 + np.exp(-g)) * u))
        np.testing.assert_allclose(out[ti], acc, rtol=1e-4, atol=1e-5)


def test_split_and_rows():
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    a, b, c = ref_ops.split(x, (3, 2, 1))
    np.testing.assert_array_equal(a, x[:, :3])
    np.testing.assert_array_equal(c, x[:, 5:])
    assert b.flags.c_contiguous
    np.testing.assert_array_equal(ref_ops.rows(x, [1]), x[1:])
