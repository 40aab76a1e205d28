"""numba-cpu kernels against their NumPy twins (``sweepbench.ref_ops``) on irregular shapes.

Tolerances: integer-dot kernels are compared with the twin fed the SAME quantized activations (dequantized),
so only float summation order differs (rel 1e-5); float kernels rel 1e-5; routing ids and groupings exactly;
combine bit-exactly (same float operations in the same order).
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from sweepbench import ref_ops
from sweepbench.engines import cpu_lazy as lazy
from sweepbench.engines.numba_cpu import CpuOps, _prepare  # noqa: F401  (initialises the threading layer)
from sweepbench.cpu_kernels import attention, qmm
from sweepbench.cpu_kernels.quant_act import QuantAct
from sweepbench.quants import dequantize, random_rows

QUANT = [Q.Q8_0, Q.Q4_0, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.IQ4_XS, Q.MXFP4]
FLOAT = [Q.F32, Q.F16, Q.BF16]


class _T:
    """A GGUFTensor stand-in: raw rows, type, row length."""

    def __init__(self, raw, qtype, row_len):
        self.raw, self.qtype, self.row_len = raw, qtype, row_len


def _rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


def _x_seen(ops, x, qtype):
    """The activation the kernel really multiplies: quantized for integer dots, x itself for float weights."""
    return x if qtype in FLOAT else QuantAct(x).dequantize()


@pytest.mark.parametrize("repack", [True, False], ids=["R8", "plain"])
@pytest.mark.parametrize("qtype", QUANT + FLOAT, ids=lambda q: q.name)
def test_matmul_every_type(qtype, repack):
    rng = np.random.default_rng(int(qtype))
    n, k, t = 40, 512, 7  # 5 row groups; 7 tokens = one 4-token tile + 3 single-token tiles
    raw = random_rows(qtype, n, k, rng)
    w = _prepare(_T(raw, qtype, k), 1, repack)
    x = rng.standard_normal((t, k)).astype(np.float32)
    ops = CpuOps()
    y = ops.matmul(x, w)
    ref = ref_ops.matmul(_x_seen(ops, x, qtype).astype(np.float64), dequantize(raw, qtype, k).astype(np.float64))
    assert y.shape == (t, n) and _rel(y, ref) < 1e-5


def test_rows_not_a_multiple_of_8_keep_the_plain_layout():
    rng = np.random.default_rng(2)
    raw = random_rows(Q.Q8_0, 12, 256, rng)
    w = _prepare(_T(raw, Q.Q8_0, 256), 1, True)
    assert type(w).__name__ == "Plain"
    x = rng.standard_normal((3, 256)).astype(np.float32)
    ref = QuantAct(x).dequantize().astype(np.float64) @ dequantize(raw, Q.Q8_0, 256).T
    assert _rel(CpuOps().matmul(x, w), ref) < 1e-5


def test_activation_quantization_matches_a_numpy_twin():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((5, 96)) * np.array([1, 0, 1e-3, 30, 1])[:, None]).astype(np.float32)
    q, d, s32, s_lo, s_hi = QuantAct(x).fields()
    blocks = x.reshape(5, 3, 32)
    d_ref = np.abs(blocks).max(axis=-1) / np.float32(127)
    inv = np.where(d_ref > 0, np.float32(1) / np.where(d_ref > 0, d_ref, 1), 0).astype(np.float32)
    q_ref = np.rint(blocks * inv[..., None]).astype(np.int8)
    assert np.array_equal(q, q_ref.reshape(5, 96)) and np.array_equal(d, d_ref)
    halves = q_ref.reshape(5, 3, 2, 16).astype(np.int64).sum(-1)  # [T, B, 2]
    assert np.allclose(s_lo, halves[..., 0] * d_ref) and np.allclose(s_hi, halves[..., 1] * d_ref)
    assert np.allclose(s32, halves.sum(-1) * d_ref, rtol=1e-6)
    assert np.all(q[1] == 0) and np.all(d[1] == 0)  # an all-zero row quantizes to zeros, no NaN


def _groups(rng, t, k, x_n):
    ids = np.stack([rng.choice(x_n, k, replace=False) for _ in range(t)]).astype(np.int32)
    ids[0, 0] = x_n - 1  # make the last expert active, leave others idle
    return ids


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_K, Q.Q6_K, Q.F16], ids=lambda q: q.name)
@pytest.mark.parametrize("repack", [True, False], ids=["R8", "plain"])
def test_experts_up_gate_down_combine(qtype, repack):
    rng = np.random.default_rng(7)
    x_n, k, t, e_n, f_n = 6, 3, 9, 256, 256  # uneven expert loads (some 0, some not a multiple of 4)
    ids = _groups(rng, t, k, x_n)
    shapes = {"gate": (f_n, e_n), "up": (f_n, e_n), "down": (e_n, f_n)}  # (rows, row length) per expert
    raws = {name: random_rows(qtype, x_n * rows, cols, rng) for name, (rows, cols) in shapes.items()}
    ws = {name: _prepare(_T(raws[name], qtype, cols), x_n, repack) for name, (_, cols) in shapes.items()}
    stacks = {name: ref_ops.ExpertStack(raws[name], qtype, cols, x_n, keep=True) for name, (_, cols) in shapes.items()}
    ops = CpuOps()
    x = rng.standard_normal((t, e_n)).astype(np.float32)
    groups = ops.group_rows_by_expert(ids, x_n)
    ref_groups = ref_ops.group_rows_by_expert(ids, x_n)
    assert np.array_equal(groups.rows, ref_groups.rows) and np.array_equal(groups.offsets, ref_groups.offsets)
    h = ops.expert_up_gate(x, ws["gate"], ws["up"], groups)
    h_ref = ref_ops.expert_up_gate(_x_seen(ops, x, qtype), stacks["gate"], stacks["up"], ref_groups)
    assert _rel(h.routed(), h_ref) < 1e-5
    y = ops.expert_down(h, ws["down"], groups)
    y_ref = ref_ops.expert_down(_x_seen(ops, h.routed(), qtype), stacks["down"], ref_groups)
    assert _rel(y, y_ref) < 1e-5
    weights = rng.random((t, k)).astype(np.float32)
    assert np.array_equal(ops.combine(y, weights), ref_ops.combine(y, weights))  # same ops, same order


@pytest.mark.parametrize("qtype", QUANT + FLOAT, ids=lambda q: q.name)
def test_item_ranges_give_the_per_item_drivers_bits(qtype):
    """qmm.mm_items / up_gate_items (the kind dispatched once per range, as the decode step calls them; float
    weights: f_mm_items, the routers' driver) against q_mm / q_up_gate (f_mm; the generic item per prange
    iteration): the same bits for every kind, over ranges split at irregular points, with an idle expert, one-row
    experts and one expert that takes a 4-token tile. (The decode step multiplies float weights by f_mm_items
    only: their up/gate has no range driver.)"""
    rng = np.random.default_rng(11)
    x_n, k, f = 5, 256, 48
    rows_per = [1, 0, 5, 1, 2]
    offsets = np.concatenate([[0], np.cumsum(rows_per)]).astype(np.int64)
    active = np.array([e for e in range(x_n) if rows_per[e]], np.int64)
    t, ng = int(offsets[-1]), f // 8
    yrows = rng.permutation(t).astype(np.int64)
    w = {n: _prepare(_T(random_rows(qtype, x_n * f, k, rng), qtype, k), x_n, True) for n in ("gate", "up", "down")}
    x = rng.standard_normal((t, k)).astype(np.float32)
    xin = x.reshape(-1) if qtype in FLOAT else QuantAct(x).x.reshape(-1)
    splits = ((0, 5), (5, 17), (17, active.shape[0] * ng))
    want, got = np.zeros(t * f, np.float32), np.full(t * f, np.nan, np.float32)
    floats = qtype in FLOAT
    (qmm.f_mm if floats else qmm.q_mm)(w["down"].kind, w["down"].qs, k, xin, yrows, offsets, active, want)
    items = qmm.f_mm_items if floats else qmm.mm_items
    for lo, hi in splits:
        items(w["down"].kind, w["down"].qs.reshape(-1), ng, k, xin, yrows, offsets, active, got, lo, hi)
    assert np.array_equal(got, want)
    if floats:
        return
    want, got = np.zeros(t * f, np.float32), np.full(t * f, np.nan, np.float32)
    gq, uq = w["gate"].qs, w["up"].qs
    qmm.q_up_gate(w["gate"].kind, gq, uq, k, xin, offsets, active, want)
    for lo, hi in splits:
        qmm.up_gate_items(w["gate"].kind, gq.reshape(-1), uq.reshape(-1), ng, k, xin, offsets, active, got, lo, hi)
    assert np.array_equal(got, want)


def _probe_llvm(kind, t1, t4, w, x, folded: bool) -> tuple[set, int]:
    """A fresh compile of one item range (``qmm._mm_range``) with the kind a constant (folded) or an argument:
    the functions its LLVM module defines, and its instruction count (callees inlined or not)."""
    import re

    from numba import njit

    @njit
    def probe(w, x, yrows, offsets, active, y, k):
        qmm._mm_range(t1, t4, kind if folded else k, w, 1, 32, x, yrows, offsets, active, y, 0, 1)

    i64 = np.zeros(1, np.int64)
    probe(w, x, i64, np.zeros(2, np.int64), i64, np.zeros(8, np.float32), kind)
    text = probe.inspect_llvm(probe.signatures[0])
    return set(re.findall(r"define [^@]*@(\S+?)\(", text)), sum(ln.startswith("  ") for ln in text.splitlines())


@pytest.mark.parametrize("family", ["quantized", "float"])
def test_tiles_passed_as_arguments_are_inlined_and_the_kind_folds(family):
    """mm_item takes its tile switch as an argument (qmm: one switch per family). The switch must still be inlined
    and folded for a constant kind, as when it was a global name: a compile of the range loop defines no
    switch, item or range function of its own, and no tile of another kind; and it is under 3/4 of the same
    compile with the kind a run-time argument, which holds every tile of the family (whether LLVM inlines a tile
    or keeps it a function of its own depends on the CPU it compiles for)."""
    if family == "quantized":
        args = (0, qmm._t1, qmm._t4, np.zeros(4096, np.uint8), np.zeros(4096, np.uint8))
        never = ("6qtiles5qk_t4", "6qtiles5q6_t4", "6qtiles6iq4_t4", "3qmm4f_t4")
    else:
        args = (qmm.K_F32, qmm._f1, qmm._f4, np.zeros(256, np.float32), np.zeros(64, np.float32))
        never = ("6qtiles5q8_t4", "6qtiles5qk_t4", "6qtiles5q6_t4", "6qtiles6iq4_t4")
    never += ("3qmm3_t1", "3qmm3_t4", "3qmm3_f1", "3qmm3_f4", "3qmm7mm_item", "3qmm9_mm_range")
    (names, size), (_, size_any) = _probe_llvm(*args, True), _probe_llvm(*args, False)
    assert not [n for n in never if n in " ".join(names)], sorted(names)
    assert size < 0.75 * size_any, (size, size_any)


@pytest.mark.parametrize("kv", ["f16", "q8_0"])
def test_flash_attention_prefill_then_decode(kv):
    rng = np.random.default_rng(11)
    h, h_kv, d, n_ctx = 6, 2, 64, 80  # G = 3 query heads per KV head: rows not a multiple of 4
    cache = attention.KVCache(1, n_ctx, h_kv, d, kv, kv)
    ref_cache = ref_ops.KVCache.allocate(1, n_ctx, h_kv * d, kv, kv)
    ops = CpuOps()
    pos = 0
    for t in (37, 6, 1, 1):  # a prefill crossing chunk boundaries, a small batch, two decodes
        q = rng.standard_normal((t, h * d)).astype(np.float32)
        k = rng.standard_normal((t, h_kv * d)).astype(np.float32)
        v = rng.standard_normal((t, h_kv * d)).astype(np.float32)
        ops.kv_store(cache, 0, k, v, pos)
        ref_ops.kv_store(ref_cache, 0, k, v, pos)
        out = ops.attention(q, cache, 0, pos, h, h_kv, d)
        ref = ref_ops.attention(q, ref_cache, 0, pos, h, h_kv, d)
        tol = 2e-5 if kv == "f16" else 2e-2  # q8_0 K: the query is quantized to int8 as ik does
        assert _rel(out, ref) < tol, (kv, t, pos)
        pos += t


def test_kv_store_q8_0_blocks_match_ggml_reference_quantizer():
    rng = np.random.default_rng(5)
    k = rng.standard_normal((3, 64)).astype(np.float32)
    cache = attention.KVCache(1, 32, 1, 64, "q8_0", "q8_0")
    ops = CpuOps()
    ops.kv_store(cache, 0, k, k, 4)
    ref = ref_ops.KVCache.allocate(1, 32, 64, "q8_0", "q8_0")
    ref_ops.kv_store(ref, 0, k, k, 4)
    blocks = ref.v[0][4:7].reshape(3, 2, 34)
    assert np.array_equal(cache.vs[0][0, 4:7].view(np.uint8).reshape(3, 2, 2), blocks[..., :2])
    assert np.array_equal(cache.v[0][0, 4:7].view(np.uint8).reshape(3, 2, 32), blocks[..., 2:])


def test_routing_softmax_and_sigmoid_grouped_match_the_twins():
    rng = np.random.default_rng(13)
    ops = CpuOps()
    logits = rng.standard_normal((17, 32)).astype(np.float32)
    logits[3, [4, 9]] = logits[3, 1]  # exact ties: the larger index goes first
    ids, w = ops.route_softmax_topk(logits, 8, True)
    rids, rw = ref_ops.route_softmax_topk(logits, 8, True)
    assert np.array_equal(ids, rids) and np.allclose(w, rw, rtol=1e-6)
    bias = (rng.standard_normal(32) * 0.1).astype(np.float32)
    for groups, used, k in ((1, 1, 8), (8, 4, 8), (4, 2, 3), (8, 1, 8)):  # the last trips ik's degenerate guard
        ids, w = ops.route_sigmoid_topk(logits, bias, k, groups, used, True, 1e-20, 2.5)
        rids, rw = ref_ops.route_sigmoid_topk(logits, bias, k, groups, used, True, 1e-20, 2.5)
        assert np.array_equal(ids, rids), (groups, used, k)
        assert np.allclose(w, rw, rtol=1e-6)
    ids, w = ops.route_sigmoid_topk(logits, None, 4, 1, 1, False, 0.0, 1.0)
    rids, rw = ref_ops.route_sigmoid_topk(logits, None, 4, 1, 1, False, 0.0, 1.0)
    assert np.array_equal(ids, rids) and np.allclose(w, rw, rtol=1e-6)


def test_norms_rope_add_match_the_twins():
    rng = np.random.default_rng(17)
    ops = CpuOps()
    x = rng.standard_normal((5, 6 * 64)).astype(np.float32) * 3
    w = rng.standard_normal(6 * 64).astype(np.float32)
    assert _rel(ops.rms_norm(x, w, 1e-6), ref_ops.rms_norm(x, w, 1e-6)) < 1e-6
    wh = rng.standard_normal(64).astype(np.float32)
    assert _rel(ops.rms_norm_heads(x, wh, 1e-6, 64), ref_ops.rms_norm_heads(x, wh, 1e-6, 64)) < 1e-6
    for n_rot in (64, 32):
        args = (1234, 64, n_rot, 6e5, 1.0)
        assert _rel(ops.rope_neox(x, *args), ref_ops.rope_neox(x, *args)) < 1e-6
    assert np.array_equal(ops.add(x, x), ref_ops.add(x, x))


def test_kernels_are_deterministic():
    rng = np.random.default_rng(19)
    raw = random_rows(Q.Q4_K, 64, 512, rng)
    w = _prepare(_T(raw, Q.Q4_K, 512), 1, True)
    x = rng.standard_normal((13, 512)).astype(np.float32)
    first = [CpuOps().matmul(x, w) for _ in range(3)]
    assert all(np.array_equal(first[0], f) for f in first[1:])


def test_decode_path_gives_the_prefill_path_bits():
    """A decode step (at most SMALL_ROWS rows) runs the small ops' serial twins (``with_serial_twin``) and fuses
    neighbours (``engines.cpu_lazy``: norm+rope, combine+add, add+norm, k's norm+rope+store); a prefill runs the
    parallel kernels one op at a time. Row by row (decode path) and in one batch of 9 (prefill path) must agree
    bit for bit, the KV cache included."""
    rng = np.random.default_rng(23)
    ops = CpuOps()
    x = rng.standard_normal((9, 4 * 64)).astype(np.float32) * 3
    w, wh = rng.standard_normal(4 * 64).astype(np.float32), rng.standard_normal(64).astype(np.float32)
    y, wk = rng.standard_normal((9 * 8, 4 * 64)).astype(np.float32), rng.random((9, 8)).astype(np.float32)
    logits = rng.standard_normal((9, 32)).astype(np.float32)
    bias = (rng.standard_normal(32) * 0.1).astype(np.float32)
    rope = dict(head_dim=64, n_rot=32, base=1e6, freq_scale=1.0)

    def combined(r):
        return ops.combine(y[8 * r.start : 8 * r.stop], wk[r])

    def residual_then_norm(r):
        s = ops.add(x[r], combined(r))
        n = ops.rms_norm(s, w, 1e-6)
        return np.hstack([lazy.materialize(s), n])

    cases = {
        "rms_norm": lambda r: ops.rms_norm(x[r], w, 1e-6),
        "rms_norm_heads": lambda r: ops.rms_norm_heads(x[r], wh, 1e-6, 64),
        "rope_neox": lambda r: ops.rope_neox(x[r], 77 + r.start, **rope),
        "norm_then_rope": lambda r: ops.rope_neox(ops.rms_norm_heads(x[r], wh, 1e-6, 64), 77 + r.start, **rope),
        "add": lambda r: ops.add(x[r], x[r][:, ::-1].copy()),
        "combine": combined,
        "combine_plus_shared": lambda r: ops.add(combined(r), x[r]),
        "residual_then_norm": residual_then_norm,
        "route_softmax": lambda r: np.hstack(ops.route_softmax_topk(logits[r], 8, True)),
        "route_sigmoid": lambda r: np.hstack(ops.route_sigmoid_topk(logits[r], bias, 8, 8, 4, True, 1e-20, 2.5)),
        "quantize": lambda r: QuantAct(x[r]).x,
    }
    for name, run in cases.items():
        batch = lazy.materialize(run(slice(0, 9)))
        rows = np.vstack([lazy.materialize(run(slice(t, t + 1))) for t in range(9)])
        assert not isinstance(batch, lazy.LAZY) and np.array_equal(batch, rows), name
    for qt, mm in ((Q.Q8_0, qmm.q_mm), (Q.F32, qmm.f_mm)):  # router-sized matrices (real routers are F32)
        small = _prepare(_T(random_rows(qt, 32, 256, rng), qt, 256), 1, True)
        xin = x[:1].reshape(-1) if qt in FLOAT else QuantAct(x[:1]).x.reshape(-1)
        parallel = np.empty(32, np.float32)
        mm(small.kind, small.qs, 256, xin, np.zeros(1, np.int64), np.array([0, 1]), np.zeros(1, np.int64), parallel)
        assert np.array_equal(ops.matmul(x[:1], small)[0], parallel), qt  # one decode row runs the .serial twin
    for kv in ("f16", "q8_0"):  # k normed, rotated and stored by one call per decode step
        caches = [attention.KVCache(1, 32, 2, 64, kv, kv) for _ in range(2)]
        k, v = x[:, :128], x[:, 128:]
        store = lambda c, r: ops.kv_store(c, 0, ops.rope_neox(ops.rms_norm_heads(k[r], wh, 1e-6, 64), 3 + r.start,
                                                              **rope), v[r], 3 + r.start)
        store(caches[0], slice(0, 9))
        for t in range(9):
            store(caches[1], slice(t, t + 1))
        for a, b in zip((caches[0].k, caches[0].v, caches[0].vs), (caches[1].k, caches[1].v, caches[1].vs)):
            assert np.array_equal(a[0], b[0]), kv
