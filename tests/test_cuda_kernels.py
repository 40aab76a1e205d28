"""GPU kernels against their NumPy twins, through the numba-cuda ops table, on irregular tiny shapes.

CI runs these in numba-cuda's simulator; ``SWEEPBENCH_CUDA_TESTS=gpu`` runs them on the device. Tolerances:
quantized GEMVs meet q8_1 activations, so they are checked against the exact dot of the dequantized weight with
the twin-quantized activation (float32 accumulation: rel 1e-5), and against the float reference loosely (1e-2).
"""
from __future__ import annotations

import numpy as np
import pytest
from cuda_sim import REAL_GPU, cuda_module
from cuda_twins import kv_batch, q8_1, rel, weight
from gguf import GGMLQuantizationType as Q

from sweepbench import ref_ops

cuda = cuda_module()

from cuda_kernels.memory import Act  # noqa: E402  (after the simulator is chosen)
from cuda_kernels.ops_table import CudaOps  # noqa: E402
from cuda_kernels.weights import DeviceKV, upload_vector  # noqa: E402

TYPES = [Q.Q8_0, Q.Q4_K, Q.Q6_K, Q.IQ4_XS, Q.F16, Q.F32]


@pytest.fixture
def ops():
    o = CudaOps(max_tokens=8, n_ctx=96)
    if not REAL_GPU:  # small blocks: the simulator runs one OS thread per CUDA thread
        o.att_nw, o.att_combine_nw, o.gemv_nw = 1, 2, 1
    return o


def act(ops, x: np.ndarray) -> Act:
    x = np.ascontiguousarray(x, np.float32)
    return Act(ops.pool, cuda.to_device(x.reshape(-1)), *x.shape)


def host(ops, a) -> np.ndarray:
    return ops.to_host(a)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda q: q.name)
def test_matmul_every_type(ops, qtype):
    rng = np.random.default_rng(int(qtype))
    t, n, k = 2, 7, 512
    w, wf = weight(qtype, n, k, rng)
    x = rng.standard_normal((t, k)).astype(np.float32)
    got = host(ops, ops.matmul(act(ops, x), w))
    exact = x if qtype in (Q.F16, Q.F32) else q8_1(x)[2]
    assert rel(got, exact.astype(np.float64) @ wf.T.astype(np.float64)) < 1e-5
    assert rel(got, ref_ops.matmul(x, wf)) < 2e-2


@pytest.mark.parametrize("qtype,k,wpr", [(Q.Q8_0, 4096, 4), (Q.F32, 2048, 2)], ids=["q8_0-4warps", "f32-2warps"])
def test_matmul_short_output_splits_rows_over_warps(ops, qtype, k, wpr):
    """The router / K / V shape: few output rows, each row's K split over several warps, summed in order."""
    from cuda_kernels import gemv

    ops.gemv_nw = 4
    rng = np.random.default_rng(30 + k)
    t, n = 2, 5
    w, wf = weight(qtype, n, k, rng)
    x = rng.standard_normal((t, k)).astype(np.float32)
    gemv._CACHE.pop(("dense", w.kind, 4, wpr, False, False), None)
    got = host(ops, ops.matmul(act(ops, x), w))
    assert ("dense", w.kind, 4, wpr, False, False) in gemv._CACHE  # the split variant ran
    exact = x if qtype == Q.F32 else q8_1(x)[2]
    assert rel(got, exact.astype(np.float64) @ wf.T.astype(np.float64)) < 1e-5
    again = host(ops, ops.matmul(act(ops, x), w))
    assert np.array_equal(got, again)


@pytest.mark.parametrize("qtype,n,k", [(Q.Q8_0, 9, 128), (Q.F16, 5, 96), (Q.F32, 3, 4096)],
                         ids=["q8_0", "f16", "f32-split"])
def test_one_token_gemv_with_the_l2_prefetch_gives_the_same_bits(ops, qtype, n, k):
    """SWEEPBENCH_CUDA_PREFETCH: the blocks ask L2 for their rows before the grid-dependency wait; the product
    (one token, irregular N, a row split over warps for the short f32 output) is bit for bit the plain one."""
    from cuda_kernels import gemv

    rng = np.random.default_rng(70 + n)
    w, _ = weight(qtype, n, k, rng)
    x = act(ops, rng.standard_normal((1, k)).astype(np.float32))
    got = []
    for pf in (False, True):
        ops.gemv_prefetch = pf
        got.append(host(ops, ops.matmul(x, w)))
    assert any(key[0] == "dense" and key[-1] for key in gemv._CACHE)  # the prefetching variant ran
    assert np.array_equal(got[0], got[1])


@pytest.mark.parametrize("t", [1, 3])
def test_fused_qkv_parts_equal_separate_products(ops, t):
    """q, k, v stacked on the device at load: one product, then views (T = 1) or column copies (T > 1)."""
    from cuda_kernels.weights import fuse_rows

    rng = np.random.default_rng(40 + t)
    ws = [weight(Q.Q8_0, n, 96, rng)[0] for n in (8, 4, 4)]
    x = act(ops, rng.standard_normal((t, 96)).astype(np.float32))
    separate = [host(ops, ops.matmul(x, w)) for w in ws]
    parts = fuse_rows(ws)
    assert [p.n_rows for p in parts] == [8, 4, 4] and parts[0].whole is parts[2].whole
    fused = [host(ops, ops.matmul(x, p)) for p in parts]
    for a, b in zip(fused, separate):
        assert a.shape == b.shape and rel(a, b) < 1e-6


def test_quantize_matches_twin(ops):
    x = np.random.default_rng(1).standard_normal((3, 96)).astype(np.float32) * 3
    a = act(ops, x)
    xq, xa = ops.q8(a)
    tq, ta, _ = q8_1(x)
    assert np.array_equal(xq.copy_to_host(), tq) and np.allclose(xa.copy_to_host(), ta, rtol=1e-6)


def test_rms_norm_fused_with_residual_add(ops):
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((3, 160)).astype(np.float32), rng.standard_normal((3, 160)).astype(np.float32)
    w = (1 + 0.1 * rng.standard_normal(160)).astype(np.float32)
    s = ops.add(act(ops, x), act(ops, y))
    out = ops.rms_norm(s, upload_vector(w), 1e-6)
    assert rel(host(ops, out), ref_ops.rms_norm(x + y, w, 1e-6)) < 1e-6
    assert rel(host(ops, s), x + y) == 0  # the residual sum was written by the same kernel
    assert np.array_equal(out.q8[0].copy_to_host(), q8_1(host(ops, out))[0])


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.F16], ids=lambda q: q.name)
def test_one_token_gemv_adds_the_residual_and_runs_the_next_norm(ops, qtype):
    """matmul -> add -> rms_norm of one token: the GEMV's last block adds the residual and computes the norm and
    its q8_1 copy (one launch); the values those of the separate kernels (``norm_tails`` off) within rounding."""
    rng = np.random.default_rng(13)
    n, k = 96, 64
    w, wf = weight(qtype, n, k, rng)
    x = rng.standard_normal((1, k)).astype(np.float32)
    resid = rng.standard_normal((1, n)).astype(np.float32)
    gamma = upload_vector((1 + 0.1 * rng.standard_normal(n)).astype(np.float32))
    xin = act(ops, x)
    ops.q8(xin)  # quantized up front: the launches counted below are the GEMV's
    outs = []
    for tails in (True, False):
        ops.norm_tails = tails
        n0 = ops.n_launches
        s = ops.add(act(ops, resid), ops.matmul(xin, w))
        out = ops.rms_norm(s, gamma, 1e-6)
        assert ops.n_launches - n0 == (1 if tails else 2)
        exact = resid + (x if qtype == Q.F16 else q8_1(x)[2]).astype(np.float64) @ wf.T.astype(np.float64)
        assert rel(host(ops, s), exact) < 1e-5
        got = host(ops, out)
        assert rel(got, ref_ops.rms_norm(exact.astype(np.float32), gamma.copy_to_host(), 1e-6)) < 1e-5
        assert np.array_equal(out.q8[0].copy_to_host(), q8_1(got)[0])
        outs.append(got)
    assert rel(outs[0], outs[1]) < 1e-6


@pytest.mark.parametrize("n_rot", [64, 32])
def test_norm_and_rope(ops, n_rot):
    rng = np.random.default_rng(3)
    t, h, d, pos0 = 3, 2, 64, 37
    x = rng.standard_normal((t, h * d)).astype(np.float32)
    w = (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)
    ops.begin(np.zeros(t, np.int64), pos0)
    out = ops.rope_neox(ops.rms_norm_heads(act(ops, x), upload_vector(w), 1e-6, d), pos0, d, n_rot, 1e6, 1.0)
    ref = ref_ops.rope_neox(ref_ops.rms_norm_heads(x, w, 1e-6, d), pos0, d, n_rot, 1e6, 1.0)
    assert rel(host(ops, out), ref) < 1e-5


def test_embed_q8_0(ops):
    rng = np.random.default_rng(4)
    w, wf = weight(Q.Q8_0, 40, 96, rng)
    tokens = np.array([3, 39, 0, 3])
    ops.begin(tokens, 0)
    assert rel(host(ops, ops.embed(w, tokens)), wf[tokens]) == 0


def _logits(rng, t, x, ties=False):
    z = rng.standard_normal((t, x)).astype(np.float32)
    if ties:
        z[:, 5] = z[:, 9]  # an exact tie: the larger index must win, as on ik's CPU
        z[:, 20] = z[:, 9]
    return z


@pytest.mark.parametrize("n_expert,k", [(8, 2), (40, 8)])
def test_route_softmax(ops, n_expert, k):
    rng = np.random.default_rng(5)
    z = _logits(rng, 3, n_expert, ties=n_expert > 20)
    ids, w = ops.route_softmax_topk(act(ops, z), k, True)
    rid, rw = ref_ops.route_softmax_topk(z, k, True)
    assert np.array_equal(ids.buf.copy_to_host().reshape(3, k), rid)
    assert rel(w.buf.copy_to_host().reshape(3, k), rw) < 1e-5


@pytest.mark.parametrize("groups,used,k", [(1, 1, 4), (4, 2, 3), (8, 4, 8), (4, 1, 12)])
def test_route_sigmoid_grouped(ops, groups, used, k):
    rng = np.random.default_rng(6 + groups)
    x = 64
    z = _logits(rng, 2, x)
    bias = (0.01 * rng.standard_normal(x)).astype(np.float32)
    ids, w = ops.route_sigmoid_topk(act(ops, z), upload_vector(bias), k, groups, used, True, 1e-20, 2.5)
    rid, rw = ref_ops.route_sigmoid_topk(z, bias, k, groups, used, True, 1e-20, 2.5)
    assert np.array_equal(ids.buf.copy_to_host().reshape(2, k), rid)  # (4, 1, 12): ik's degenerate guard
    assert rel(w.buf.copy_to_host().reshape(2, k), rw) < 1e-5


@pytest.mark.parametrize("sigmoid", [False, True])
def test_routing_of_nan_logits_names_valid_experts(ops, sigmoid):
    """A token whose router logits are NaN (a poisoned hidden state) still gets k distinct ids in [0, X): the
    expert kernels index weights with them, and an id of -1 was an illegal address on the device."""
    x, k = 40, 8
    z = _logits(np.random.default_rng(9), 2, x)
    z[0] = np.nan
    z[1, ::3] = np.nan  # a partly poisoned token: its finite logits still compete
    if sigmoid:
        ids, _ = ops.route_sigmoid_topk(act(ops, z), upload_vector(np.zeros(x, np.float32)), k, 4, 2, True, 1e-20, 1.0)
    else:
        ids, _ = ops.route_softmax_topk(act(ops, z), k, True)
    got = ids.buf.copy_to_host().reshape(2, k)
    assert got.min() >= 0 and got.max() < x, got
    assert len(set(got[0])) == k, got


@pytest.mark.parametrize("offset_threads,r", [(256, 300), (5, 2100), (1, 300)])
def test_group_rows_is_a_stable_counting_sort(ops, offset_threads, r):
    """Irregular: R not a multiple of a pass of the rows kernel (1024 rows: 300 = a part of one, 2100 = two and a
    part), experts with no rows; the offsets kernel's scan with a thread per expert and with several experts a
    thread (5 threads: 3, 3, 3, 3 and 0 experts; 1: no scan)."""
    from cuda_kernels.routing import group_rows

    rng = np.random.default_rng(7)
    x, bm = 12, 4
    ids = rng.integers(0, x - 2, r).astype(np.int32)  # experts 10 and 11 get nothing
    rows, offsets = cuda.device_array(r, np.int32), cuda.device_array(x + 2, np.int32)
    tiles, counts = cuda.device_array(2 * (r // bm + x), np.int32), cuda.device_array(x, np.int32)
    group_rows(lambda k, g, b, *a: k[g, b](*a), cuda.to_device(ids), r, x, bm, counts, rows, offsets, tiles,
               offset_threads)
    ref = ref_ops.group_rows_by_expert(ids.reshape(-1, 5), x)
    off = offsets.copy_to_host()
    assert np.array_equal(rows.copy_to_host(), ref.rows) and np.array_equal(off[: x + 1], ref.offsets)
    tl = tiles.copy_to_host().reshape(-1, 2)[: off[x + 1]]
    want = [(e, off[e] + m) for e in range(x) for m in range(0, off[e + 1] - off[e], bm)]
    assert [tuple(p) for p in tl] == want


@pytest.mark.parametrize("qtype,k", [(Q.Q8_0, 2), (Q.F16, 2), (Q.Q8_0, 9)], ids=["Q8_0", "F16", "Q8_0-9-slots"])
def test_moe_pipeline(ops, qtype, k):
    """route -> group -> fused up/gate -> down + weighted combine, against the reference ops. 9 slots: more
    than a down/combine block has warps (the all-experts warmup), so warps take several slots."""
    rng = np.random.default_rng(8 + k)
    t, e, f, x = (2, 32, 32, 5) if qtype == Q.Q8_0 else (1, 32, 32, 4)
    x = max(x, k + 1)
    if k > 8:
        t = 1
    wg, wgf = weight(qtype, f, e, rng, x)
    wu, wuf = weight(qtype, f, e, rng, x)
    wd, wdf = weight(qtype, e, f, rng, x)
    xin = rng.standard_normal((t, e)).astype(np.float32)
    z = _logits(rng, t, x)
    ids, w = ops.route_softmax_topk(act(ops, z), k, True)
    groups = ops.group_rows_by_expert(ids, x)
    out = ops.combine(ops.expert_down(ops.expert_up_gate(act(ops, xin), wg, wu, groups), wd, groups), w)
    rid, rw = ref_ops.route_softmax_topk(z, k, True)
    g = ref_ops.group_rows_by_expert(rid, x)
    def stack(full):  # the dequantized weights as an F32 expert stack of the reference engine
        return ref_ops.ExpertStack(full.view(np.uint8), Q.F32, full.shape[1], x, True)

    sg, su, sd = stack(wgf), stack(wuf), stack(wdf)
    h = ref_ops.expert_up_gate(xin, sg, su, g)
    ref = ref_ops.combine(ref_ops.expert_down(h, sd, g), rw)
    assert rel(host(ops, out), ref) < (3e-2 if qtype == Q.Q8_0 else 1e-5)
    if qtype == Q.F16:  # + the shared expert's output: added by the down/combine kernel itself
        shexp = rng.standard_normal((t, e)).astype(np.float32)
        out = ops.combine(ops.expert_down(ops.expert_up_gate(act(ops, xin), wg, wu, groups), wd, groups), w)
        n0 = ops.n_launches
        total = ops.add(out, act(ops, shexp))
        assert rel(host(ops, total), ref + shexp) < 1e-5
        assert ops.n_launches - n0 == 1
        # ... + the residual, then the next RMSNorm: the down/combine kernel's last block (one token)
        ops.norm_tails = True
        resid = rng.standard_normal((t, e)).astype(np.float32)
        gamma = (1 + 0.1 * rng.standard_normal(e)).astype(np.float32)
        out = ops.combine(ops.expert_down(ops.expert_up_gate(act(ops, xin), wg, wu, groups), wd, groups), w)
        n0 = ops.n_launches
        s = ops.add(act(ops, resid), ops.add(out, act(ops, shexp)))
        normed = ops.rms_norm(s, upload_vector(gamma), 1e-6)
        assert ops.n_launches - n0 == 1
        assert rel(host(ops, s), resid + ref + shexp) < 1e-5
        assert rel(host(ops, normed), ref_ops.rms_norm(resid + ref + shexp, gamma, 1e-6)) < 1e-5
        assert np.array_equal(normed.q8[0].copy_to_host(), q8_1(host(ops, normed))[0])


@pytest.mark.parametrize("sigmoid", [False, True], ids=["softmax", "sigmoid-grouped"])
def test_one_token_router_gemv_routes_in_its_last_block(ops, sigmoid):
    """matmul -> route of one token: the router GEMV's last block routes (no routing launch); logits, ids and
    weights bit-identical to the GEMV followed by the routing kernel."""
    rng = np.random.default_rng(14)
    e, x, k = 64, 8, 3
    wr, _ = weight(Q.F32, x, e, rng)
    xin = act(ops, rng.standard_normal((1, e)).astype(np.float32))
    bias = upload_vector((0.1 * rng.standard_normal(x)).astype(np.float32))
    got = []
    for tails in (True, False):
        ops.route_tails = tails
        n0 = ops.n_launches
        logits = ops.matmul(xin, wr)
        if sigmoid:
            ids, w = ops.route_sigmoid_topk(logits, bias, k, 4, 2, True, 1e-20, 2.5)
        else:
            ids, w = ops.route_softmax_topk(logits, k, True)
        out = (ids.buf.copy_to_host(), w.buf.copy_to_host(), host(ops, logits))
        got.append((ops.n_launches - n0, *out))
    assert [g[0] for g in got] == [1, 2]
    for a, b in zip(got[0][1:], got[1][1:]):
        assert np.array_equal(a, b)
    assert len(set(got[0][1].tolist())) == k


@pytest.mark.parametrize("sigmoid", [False, True], ids=["softmax", "sigmoid-grouped"])
def test_up_gate_that_routes_itself_equals_routing_then_up_gate(ops, sigmoid):
    """The decode step's fused up/gate (each warp routes its token, block (0, slot 0) writes ids and weights):
    ids, weights and h bit-identical to the routing launch followed by the plain up/gate, one launch fewer."""
    rng = np.random.default_rng(12)
    t, e, f, x, k = 2, 32, 4, 8, 2  # few up/gate blocks: the simulator runs the routing in each
    wg, _ = weight(Q.Q8_0, f, e, rng, x)
    wu, _ = weight(Q.Q8_0, f, e, rng, x)
    xin, z = rng.standard_normal((t, e)).astype(np.float32), _logits(rng, t, x)
    bias = upload_vector((0.1 * rng.standard_normal(x)).astype(np.float32))
    got = []
    for fused in (False, True):
        ops.fuse_route = fused
        ops.begin(np.zeros(t, np.int64), 0)
        if sigmoid:
            ids, w = ops.route_sigmoid_topk(act(ops, z), bias, k, 4, 2, True, 1e-20, 2.5)
        else:
            ids, w = ops.route_softmax_topk(act(ops, z), k, True)
        n0 = ops.n_launches
        h = ops.expert_up_gate(act(ops, xin), wg, wu, ops.group_rows_by_expert(ids, x))
        got.append((ops.n_launches - n0, host(ops, h), ids._buf.copy_to_host(), w._buf.copy_to_host()))
    (n_plain, *plain), (n_fused, *fused_out) = got
    assert n_fused == n_plain - 1
    for a, b in zip(plain, fused_out):
        assert np.array_equal(a, b)


# the simulator emulates every mma (seconds a block): one mixed pair there covers both cache types' paths
KV_PAIRS = [("f16", "f16"), ("q8_0", "q8_0"), ("q8_0", "f16")] if REAL_GPU else [("q8_0", "f16")]


@pytest.mark.parametrize("split", ["warp", "tile"])
@pytest.mark.parametrize("tk,tv", KV_PAIRS)
def test_attention_prefill_then_decode(ops, tk, tv, split):
    """Flash-decoding over several 64-cell parts (n_ctx 96), GQA; the combine also writes the output's q8_1 copy.
    Both split kernels: the engine's (warp) and the staged-P one kept for A/B runs (tile)."""
    ops.att_split = split
    rng = np.random.default_rng(9)
    h, hkv, d, n_ctx = (4, 2, 64, 96) if REAL_GPU else (2, 1, 32, 96)
    ours = DeviceKV(1, n_ctx, hkv * d, tk, tv)
    ref = ref_ops.KVCache.allocate(1, n_ctx, hkv * d, tk, tv)
    fill = [(p, 8, False) for p in range(5, 61, 8)] + [(61, 5, False)]  # cells 5 .. 65, no attention
    first = [(0, 3, True), (3, 1, True), (4, 1, True)] if REAL_GPU else [(0, 5, True)]
    for pos0, t, attend in first + fill + [(66, 2, True), (68, 1, True)]:
        q = kv_batch(ops, act, ours, ref, rng, pos0, t, h, hkv, d)
        if not attend:
            continue
        out = ops.attention(act(ops, q), ours, 0, pos0, h, hkv, d)
        got = host(ops, out)
        # q and the softmax weights enter the tensor cores as f16 (as in ik_llama.cpp's CUDA flash attention)
        assert rel(got, ref_ops.attention(q, ref, 0, pos0, h, hkv, d)) < 2e-3, (pos0, t)
        assert np.array_equal(out.q8[0].copy_to_host(), q8_1(got)[0])


WS_CASES = ([(32, "q8_0", "f16"), (96, "f16", "q8_0"), (128, "q8_0", "q8_0")] if REAL_GPU
            else [(96, "f16", "q8_0"), (32, "q8_0", "f16")])  # V: a scale per word; K: one scale per cell


@pytest.mark.parametrize("fuse_parts", [0, 2] if REAL_GPU else [2])  # 2: both paths (the simulator's positions)
@pytest.mark.parametrize("d,tk,tv", WS_CASES)
def test_warp_split_decode_merges_warps_and_parts(ops, d, tk, tv, fuse_parts):
    """The warp-split decode kernel with 2 warps of 1 tile (16-cell tiles, 32-cell parts): positions where the
    second warp, or a tile's tail, lies past the last cell; head dims whose lane slices do not fill 16-byte loads;
    G = 3 query heads per KV head (rows 3..15 of the mma tile are zero). With fuse_parts 2, tokens spanning up to
    two parts are merged by the split's last block (no combine launch) and longer ones by the combine; the q8_1
    copy is the output's either way. Fetching a q8_0 side's cells before widening them (``hoist``, the default)
    gives the same bits as widening each cell right after its loads (``inline``)."""
    ops.att_split, ops.att_ws_nw, ops.att_tpw, ops.att_fuse_parts = "warp", 2, 1, fuse_parts
    ops.q8_decode = "hoist"
    rng = np.random.default_rng(11)
    h, hkv, n_ctx = (6, 2, 96) if REAL_GPU else (3, 1, 96)  # the simulator: one KV head (G = 3 all the same)
    ours = DeviceKV(1, n_ctx, hkv * d, tk, tv)
    ref = ref_ops.KVCache.allocate(1, n_ctx, hkv * d, tk, tv)
    k, v = (rng.standard_normal((n_ctx, hkv * d)).astype(np.float32) for _ in range(2))
    for p0 in range(0, n_ctx, 8):  # the ops table takes up to 8 rows a step
        ops.begin(np.zeros(8, np.int64), p0)
        ops.kv_store(ours, 0, act(ops, k[p0:p0 + 8]), act(ops, v[p0:p0 + 8]), p0)
    ref_ops.kv_store(ref, 0, k, v, 0)
    for pos0, t in ((9, 1), (70, 1)) if not REAL_GPU else ((0, 1), (9, 1), (16, 2), (50, 1), (94, 2)):
        q = rng.standard_normal((t, h * d)).astype(np.float32)
        ops.begin(np.zeros(t, np.int64), pos0)
        n0 = ops.n_launches
        out = ops.attention(act(ops, q), ours, 0, pos0, h, hkv, d)
        got = host(ops, out)
        merged = pos0 + t <= 32 * fuse_parts
        assert ops.n_launches - n0 == (1 if merged else 2), (pos0, t)
        assert rel(got, ref_ops.attention(q, ref, 0, pos0, h, hkv, d)) < 2e-3, (pos0, t)
        xq, xa, _ = q8_1(got)
        assert np.array_equal(out.q8[0].copy_to_host(), xq) and np.allclose(out.q8[1].copy_to_host(), xa), (pos0, t)
        # a graph captures the kernels of its deepest position (graph_parts: a shallow graph's): the same bits
        ops.capturing, ops.graph_parts = True, (fuse_parts if merged else None)
        try:
            again = host(ops, ops.attention(act(ops, q), ours, 0, pos0, h, hkv, d))
        finally:
            ops.capturing, ops.graph_parts = False, None
        assert np.array_equal(got, again), (pos0, t)
        ops.q8_decode = "inline"  # ``got`` came from the hoisted loads
        try:
            inline = host(ops, ops.attention(act(ops, q), ours, 0, pos0, h, hkv, d))
        finally:
            ops.q8_decode = "hoist"
        assert np.array_equal(got, inline), (pos0, t)


@pytest.mark.parametrize("tk,tv", KV_PAIRS)
def test_rope_store_fused_with_attention(ops, tk, tv):
    """rope_neox(q), rope_neox(k), kv_store, attention as the models call them: one launch norms and rotates q and
    k and stores k and v; the cache holds exactly what the separate kernels store."""
    rng = np.random.default_rng(10)
    h, hkv, d, n_ctx = (8, 2, 64, 96) if REAL_GPU else (2, 1, 32, 64)
    wq, wk = ((1 + 0.1 * rng.standard_normal(d)).astype(np.float32) for _ in range(2))
    fused, plain = DeviceKV(1, n_ctx, hkv * d, tk, tv), DeviceKV(1, n_ctx, hkv * d, tk, tv)
    ref = ref_ops.KVCache.allocate(1, n_ctx, hkv * d, tk, tv)
    rope = dict(head_dim=d, n_rot=d // 2, base=1e6, freq_scale=1.0)
    ops.att_fuse_parts = 4
    for pos0, t in ((0, 2), (2, 1)):
        q, k, v = (rng.standard_normal((t, n * d)).astype(np.float32) for n in (h, hkv, hkv))
        ops.begin(np.zeros(t, np.int64), pos0)
        ql = ops.rope_neox(ops.rms_norm_heads(act(ops, q), upload_vector(wq), 1e-6, d), pos0, **rope)
        kl = ops.rope_neox(ops.rms_norm_heads(act(ops, k), upload_vector(wk), 1e-6, d), pos0, **rope)
        n0 = ops.n_launches
        ops.kv_store(fused, 0, kl, act(ops, v), pos0)
        got = host(ops, ops.attention(ql, fused, 0, pos0, h, hkv, d))
        assert ops.n_launches - n0 == 2  # rope+store, split (one part: its block merges, no combine launch)
        ops.kv_store(plain, 0, ops.act(ops.rope_neox(ops.rms_norm_heads(act(ops, k), upload_vector(wk), 1e-6, d),
                                                     pos0, **rope)), act(ops, v), pos0)
        for a, b in ((fused.kq[0], plain.kq[0]), (fused.vq[0], plain.vq[0]), (fused.kd[0], plain.kd[0]),
                     (fused.vd[0], plain.vd[0])):
            n = (pos0 + t) * (a.size // n_ctx)  # the cells written so far
            assert np.array_equal(a.copy_to_host()[:n], b.copy_to_host()[:n])
        qr = ref_ops.rope_neox(ref_ops.rms_norm_heads(q, wq, 1e-6, d), pos0, **rope)
        ref_ops.kv_store(ref, 0, ref_ops.rope_neox(ref_ops.rms_norm_heads(k, wk, 1e-6, d), pos0, **rope), v, pos0)
        assert rel(got, ref_ops.attention(qr, ref, 0, pos0, h, hkv, d)) < 2e-3, (pos0, t)


def test_tails_switch_reads_the_environment(monkeypatch):
    """SWEEPBENCH_CUDA_TAILS=on: the merged attention, the norm and the routing tails all on (off by default: no
    faster on the device; A/B through the CLI); a bad value is a one-line usage error, raised when the engine
    makes its ops (before any weight loads)."""
    from sweepbench.errors import UsageError

    monkeypatch.setenv("SWEEPBENCH_CUDA_TAILS", "on")
    o = CudaOps(max_tokens=1, n_ctx=64)
    assert o.att_fuse_parts > 0 and o.norm_tails and o.route_tails and o.shallow_cells() > 0
    monkeypatch.setenv("SWEEPBENCH_CUDA_TAILS", "sometimes")
    with pytest.raises(UsageError, match="SWEEPBENCH_CUDA_TAILS=sometimes"):
        CudaOps(max_tokens=1, n_ctx=64)
    monkeypatch.delenv("SWEEPBENCH_CUDA_TAILS")
    o = CudaOps(max_tokens=1, n_ctx=64)
    assert (o.att_fuse_parts, o.norm_tails, o.route_tails, o.shallow_cells()) == (0, False, False, 0)
