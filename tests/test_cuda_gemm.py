"""Prompt-processing paths (more than GEMV_MAX_T activation rows): tensor-core GEMMs with f16 tiles, the float32
GEMM for float32 weights, the expert GEMMs over device-grouped rows. Against the NumPy twins (sweepbench.ref_ops).

f16 operands round both inputs to 11 bits, so the tolerance is 4e-3 of the largest output (float32 weights: 1e-5).
"""
from __future__ import annotations

import numpy as np
import pytest
from cuda_sim import REAL_GPU, cuda_module
from cuda_twins import kv_batch, rel, weight
from gguf import GGMLQuantizationType as Q

from sweepbench import ref_ops

cuda = cuda_module()

from cuda_kernels.memory import Act  # noqa: E402
from cuda_kernels.ops_table import CudaOps  # noqa: E402
from cuda_kernels.weights import DeviceKV  # noqa: E402


@pytest.fixture
def ops():
    o = CudaOps(max_tokens=128 if REAL_GPU else 32, n_ctx=200 if REAL_GPU else 64)
    if not REAL_GPU:
        o.att_nw, o.att_combine_nw, o.gemv_nw = 1, 2, 1
    return o


def act(ops, x):
    x = np.ascontiguousarray(x, np.float32)
    return Act(ops.pool, cuda.to_device(x.reshape(-1)), *x.shape)


ALL = [Q.Q8_0, Q.Q4_K, Q.Q6_K, Q.IQ4_XS, Q.F16, Q.F32]


@pytest.mark.parametrize("qtype", ALL, ids=lambda q: q.name)
def test_tile_dequantizers(qtype):
    """Each 16-value f16 tile the GEMM stages (its raw loads, then their conversion) equals the dequantized weights
    rounded to f16 (scales rounded too)."""
    from cuda_kernels.tiles import H16, RAW

    rng = np.random.default_rng(40 + int(qtype))
    n, k = 3, 512
    w, wf = weight(qtype, n, k, rng)
    load, conv = H16[w.kind]

    @cuda.jit
    def tiles(qs, hdr, out, n_rows, K):
        i = cuda.grid(1)
        raw = cuda.local.array(RAW, np.uint32)
        words = cuda.local.array(8, np.uint32)
        if i < n_rows * (K // 16):
            row, c, half = i // (K // 16), (i % (K // 16)) // 2, i % 2
            load(qs, hdr, row, c, half, K, raw)
            conv(raw, c, half, words)
            for j in range(8):
                out[i * 8 + j] = words[j]

    out = cuda.device_array(n * k // 2, np.uint32)
    tiles[(n * k // 16 + 31) // 32, 32](w.qs, w.hdr, out, n, k)
    got = out.copy_to_host().view(np.float16).astype(np.float32).reshape(n, k)
    assert np.allclose(got, wf, rtol=2e-3, atol=1e-3 * np.abs(wf).max())


@pytest.mark.parametrize("qtype", ALL if REAL_GPU else [Q.Q4_K, Q.F32], ids=lambda q: q.name)
def test_dense_gemm(ops, qtype):
    rng = np.random.default_rng(20 + int(qtype))
    t, n, k = ops.gemv_max_t + 10, 70 if REAL_GPU else 40, 256
    w, wf = weight(qtype, n, k, rng)
    x = rng.standard_normal((t, k)).astype(np.float32)
    got = ops.to_host(ops.matmul(act(ops, x), w))
    assert rel(got, ref_ops.matmul(x, wf)) < (1e-5 if qtype == Q.F32 else 4e-3)


def test_float32_gemm_parts_cover_k_in_whole_steps():
    """footprint.sgemm_parts (the router GEMM's split of K): whole 32-wide steps, at least 4 a part, every part
    non-empty and K covered once; few tiles get more parts (the shapes of the qwen3 and ling routers)."""
    from cuda_kernels.footprint import SGEMM_BLOCKS, sgemm_parts

    for m in (9, 64, 65, 300, 512, 2048, 4096):
        for n in (33, 128, 256):
            for k in (96, 416, 2048, 4096):
                parts, k_len = sgemm_parts(m, n, k)
                assert k_len % 32 == 0 and (parts - 1) * k_len < k <= parts * k_len
                assert parts == 1 or (k_len >= 128 and -(-m // 64) * -(-n // 64) * parts <= SGEMM_BLOCKS)
    assert sgemm_parts(512, 128, 2048) == (8, 256) and sgemm_parts(2048, 128, 2048) == (2, 1024)
    assert sgemm_parts(2048, 256, 2048) == (1, 2048) and sgemm_parts(9, 33, 416) == (3, 160)


@pytest.mark.parametrize("m,n,k,parts", [(9, 33, 416, 3), (70, 130, 96, 1)]
                         + ([(512, 128, 2048, 8), (2048, 256, 2048, 1), (333, 200, 1024, 5)] if REAL_GPU else []),
                         ids=lambda v: str(v))
def test_float32_gemm_on_irregular_shapes(ops, m, n, k, parts):
    """The router GEMM (float32 weights): edge tiles past M and N, K split into parts added in order (9 x 33:
    parts of 5, 5 and 3 steps) or not; within 1e-5 of a float64 product, and a rerun gives the same bits."""
    from cuda_kernels.footprint import sgemm_parts

    assert sgemm_parts(m, n, k)[0] == parts
    rng = np.random.default_rng(m + n + k)
    w, wf = weight(Q.F32, n, k, rng)
    x = rng.standard_normal((m, k)).astype(np.float32)
    got = ops.to_host(ops.matmul(act(ops, x), w))
    assert rel(got, x.astype(np.float64) @ wf.astype(np.float64).T) < 1e-5
    assert np.array_equal(got, ops.to_host(ops.matmul(act(ops, x), w)))


def test_float32_gemm_refuses_rows_it_cannot_step_through(ops):
    """Float32 rows stay float32 at any length (layout.repack), but the GEMM steps through K 32 at a time: a
    length that is no multiple of 32 is a clear error, not a product that leaves the tail out."""
    rng = np.random.default_rng(5)
    w, _ = weight(Q.F32, 4, 40, rng)
    with pytest.raises(ValueError, match="not a multiple of 32"):
        ops.matmul(act(ops, rng.standard_normal((ops.gemv_max_t + 1, 40))), w)


def test_dense_swiglu(ops):
    rng = np.random.default_rng(30)
    t, e, f = ops.gemv_max_t + 3, 32, 64
    (wg, wgf), (wu, wuf), (wd, wdf) = weight(Q.Q8_0, f, e, rng), weight(Q.Q8_0, f, e, rng), weight(Q.Q8_0, e, f, rng)
    x = rng.standard_normal((t, e)).astype(np.float32)
    got = ops.to_host(ops.swiglu_ffn(act(ops, x), wg, wu, wd))
    assert rel(got, ref_ops.swiglu_ffn(x, wgf, wuf, wdf)) < 4e-3


def test_expert_gemms_over_grouped_rows(ops):
    rng = np.random.default_rng(31)
    t, e, f, x, k = ops.gemv_max_t + 4, 32, 32, 3, 2
    (wg, wgf), (wu, wuf), (wd, wdf) = (weight(Q.Q8_0, n, kk, rng, x) for n, kk in ((f, e), (f, e), (e, f)))
    xin = rng.standard_normal((t, e)).astype(np.float32)
    z = rng.standard_normal((t, x)).astype(np.float32)
    ids, w = ops.route_softmax_topk(act(ops, z), k, True)
    groups = ops.group_rows_by_expert(ids, x)
    assert groups.rows is not None  # the batched path
    out = ops.combine(ops.expert_down(ops.expert_up_gate(act(ops, xin), wg, wu, groups), wd, groups), w)
    rid, rw = ref_ops.route_softmax_topk(z, k, True)
    g = ref_ops.group_rows_by_expert(rid, x)

    def stack(full):
        return ref_ops.ExpertStack(full.view(np.uint8), Q.F32, full.shape[1], x, True)

    h = ref_ops.expert_up_gate(xin, stack(wgf), stack(wuf), g)
    ref = ref_ops.combine(ref_ops.expert_down(h, stack(wdf), g), rw)
    assert rel(ops.to_host(out), ref) < 4e-3


@pytest.mark.parametrize("qtype", ALL if REAL_GPU else [Q.Q8_0], ids=lambda q: q.name)
def test_gemm_variants_same_bits(ops, qtype):
    """SWEEPBENCH_CUDA_GEMM: ``late`` (a step's loads kept raw and converted after the next mma) and ``late-swz``
    (staged by 16-byte stores into swizzled rows; on the GPU also capped at 128 registers) give early's bits in
    the fused gate/up expert GEMM over grouped rows (tiles cut by their row count and by N = 40), and on the GPU
    also in the dense GEMM and the grouped down projection, over several k steps: a conversion with the wrong
    step's scales, a lost edge row or a chunk swizzled differently by its store and its read would change them.
    (The simulator takes 2 s per block and k step.)"""
    rng = np.random.default_rng(32 + int(qtype))
    t, x, k = ops.gemv_max_t + 5, 3 if REAL_GPU else 2, 2
    e, f = (256, 256) if REAL_GPU else (64, 40)  # K = e: 8 steps over one k-quant super-block, or q8_0's 2
    (wg, _), (wu, _) = (weight(qtype, f, e, rng, x) for _ in range(2))
    xin = rng.standard_normal((t, e)).astype(np.float32)
    groups = ops.group_rows_by_expert(ops.route_softmax_topk(act(ops, rng.standard_normal((t, x))), k, True)[0], x)
    got, default = {}, (ops.gemm, ops.gemm_regs)
    for variant in ("early", "late", "late-swz") + (("late-swz+r128",) if REAL_GPU else ()):
        ops.gemm, _, regs = variant.partition("+r")
        ops.gemm_regs = int(regs or 0)
        h = ops.expert_up_gate(act(ops, xin), wg, wu, groups)
        got[variant] = [ops.to_host(h)]
        if REAL_GPU:
            got[variant].append(ops.to_host(ops.expert_down(h, weight(qtype, e, f, np.random.default_rng(1), x)[0],
                                                            groups)))
            got[variant].append(ops.to_host(ops.matmul(act(ops, xin),
                                                       weight(qtype, 70, e, np.random.default_rng(2))[0])))
    ops.gemm, ops.gemm_regs = default
    for variant in got:
        for early, other in zip(got["early"], got[variant]):
            assert np.abs(early).max() > 0 and np.array_equal(early, other), variant


def test_f16_activations_same_bits(ops):
    """SWEEPBENCH_CUDA_GEMM_X=f16: the RMSNorm before a GEMM also writes its rows as f16 pairs, the fused expert
    gate/up GEMM reads those and writes its output as f16 pairs, and the down projection reads them. Both round
    to nearest even where the float32 path rounds as it stages, so: the pairs are the float32 rows rounded, and
    the down projection's output has the float32 path's bits. (Two k steps, N one block in the simulator.)"""
    rng = np.random.default_rng(40)
    t, x, k = ops.gemv_max_t + 5, 3 if REAL_GPU else 2, 2
    e, f = (512, 256) if REAL_GPU else (64, 64)  # k-quant rows: whole 256-value super-blocks
    (wg, _), (wu, _), (wd, _) = (weight(Q.Q4_K if REAL_GPU else Q.Q8_0, n, kk, rng, x) for n, kk in
                                 ((f, e), (f, e), (e, f)))
    xin = act(ops, 3 * rng.standard_normal((t, e)))
    norm_w = cuda.to_device(rng.uniform(0.5, 1.5, e).astype(np.float32))
    groups = ops.group_rows_by_expert(ops.route_softmax_topk(act(ops, rng.standard_normal((t, x))), k, True)[0], x)
    got, default = {}, ops.gemm_x
    try:
        for mode in ("f32", "f16"):
            ops.gemm_x = mode
            xn = ops.rms_norm(xin, norm_w, 1e-6)
            assert (xn.h16 is not None, xn.q8 is None) == (mode == "f16",) * 2
            h = ops.expert_up_gate(xn, wg, wu, groups)
            assert (h.f is None) == (mode == "f16")
            pairs = xn.h16.copy_to_host().view(np.float16) if mode == "f16" else None
            got[mode] = (ops.to_host(xn), pairs, ops.to_host(h), ops.to_host(ops.expert_down(h, wd, groups)))
    finally:
        ops.gemm_x = default
    (xn32, _, h32, y32), (xn16, pairs, h16, y16) = got["f32"], got["f16"]

    def rounded(a):
        return a.astype(np.float16).astype(np.float32)

    assert np.array_equal(xn32, xn16) and np.array_equal(pairs.astype(np.float32).reshape(t, e), rounded(xn32))
    assert np.abs(h32).max() > 0 and np.array_equal(h16, rounded(h32))
    assert np.abs(y32).max() > 0 and np.array_equal(y16, y32)


KV_MIXES = [("f16", "f16"), ("q8_0", "q8_0"), ("f16", "q8_0")] if REAL_GPU else [("f16", "q8_0")]


def test_split_ranges_cover_the_cells_and_every_row_sees_its_parts_first_cell():
    """flash.split_range: the parts of a query tile are whole KV tiles, contiguous, cover [0, n_cells) once, and
    each non-empty part starts at or below the tile's first row's causal limit (the online softmax of every row
    starts from a cell it sees); the empty parts come last."""
    from cuda_kernels import flash

    for n_cells in (1, 63, 64, 65, 142, 700, 4097):
        for first in sorted({0, n_cells // 3, n_cells - 1}):
            for parts in (1, 2, 3, 4):
                ranges = [flash.split_range.py_func(n_cells, first, z, parts) for z in range(parts)]
                full = [(a, b) for a, b in ranges if a < b]
                assert ranges == full + [(0, 0)] * (parts - len(full))
                assert full[0][0] == 0 and full[-1][1] == n_cells
                assert all(a % flash.BKV == 0 and a <= first for a, _ in full)
                assert all(b == a2 for (_, b), (a2, _) in zip(full, full[1:]))
                assert parts > 1 or full == [(0, n_cells)]


@pytest.mark.parametrize("parts", [2, 3] if REAL_GPU else [3])
def test_flash_prefill_split_over_kv(ops, parts):
    """SWEEPBENCH_CUDA_FLASH_SPLIT: the KV range cut into parts, each part's unnormalized O merged by
    ``split_combine_kernel``: against the reference within the unsplit kernel's tolerance; one part through the
    same two kernels gives the unsplit kernel's bits. 12 queries after 130 cached cells: 2 or 3 parts."""
    from cuda_kernels import flash

    rng = np.random.default_rng(51)
    h, hkv, d, n_ctx = (4, 2, 64, 400) if REAL_GPU else (2, 1, 32, 160)
    ours, ref = DeviceKV(1, n_ctx, hkv * d, "f16", "f16"), ref_ops.KVCache.allocate(1, n_ctx, hkv * d, "f16", "f16")
    pos0, t = (300, 70) if REAL_GPU else (130, ops.gemv_max_t + 4)
    for p in range(0, pos0, 20):  # the cached cells, in batches the ops' token buffer holds
        kv_batch(ops, act, ours, ref, rng, p, min(20, pos0 - p), h, hkv, d)
    q = kv_batch(ops, act, ours, ref, rng, pos0, t, h, hkv, d)
    default = ops.flash_split
    try:
        ops.flash_split = "off"
        whole = ops.to_host(ops.attention(act(ops, q), ours, 0, pos0, h, hkv, d))
        ops.flash_split = str(parts)
        split = ops.to_host(ops.attention(act(ops, q), ours, 0, pos0, h, hkv, d))
    finally:
        ops.flash_split = default
    expect = ref_ops.attention(q, ref, 0, pos0, h, hkv, d)
    assert rel(whole, expect) < 4e-3 and rel(split, expect) < 4e-3
    assert not np.array_equal(split, whole)  # the parts did merge (another order of the sums)
    part, out = cuda.device_array(t * h * (d + 2), np.float32), cuda.device_array(t * h * d, np.float32)
    kern = flash.prefill_kernel(d, False, False, ops.flash, split=True)
    kern[(-(-t // flash.BQ), h, 1), flash.THREADS](act(ops, q).f, ours.kq[0], ours.kd[0], ours.vq[0], ours.vd[0],
                                                   ops.posv, part, t, h, hkv, np.float32(1 / np.sqrt(d)))
    flash.split_combine_kernel(d)[(t, h), d](part, out, ops.posv, t, h, 1)
    assert np.array_equal(out.copy_to_host().reshape(t, h * d), whole)


@pytest.mark.parametrize("split", ["off", "2"])
def test_attention_rows_as_f16_pairs_for_the_output_projection(ops, split):
    """SWEEPBENCH_CUDA_GEMM_X=f16: a prefill attention that a GEMM reads writes f16 pairs only (``LazyFlash``),
    unsplit or through the split's combine, each the float32 value rounded to nearest even; the output projection
    then gives the bits it gives from float32 rows (which it rounds the same way as it stages them)."""
    from cuda_kernels.lazy import LazyFlash

    rng = np.random.default_rng(52)
    h, hkv, d, n_ctx = (4, 2, 64, 400) if REAL_GPU else (2, 1, 32, 160)
    ours, ref = DeviceKV(1, n_ctx, hkv * d, "f16", "f16"), ref_ops.KVCache.allocate(1, n_ctx, hkv * d, "f16", "f16")
    pos0, t = (300, 70) if REAL_GPU else (130, ops.gemv_max_t + 4)
    for p in range(0, pos0, 20):
        kv_batch(ops, act, ours, ref, rng, p, min(20, pos0 - p), h, hkv, d)
    q = kv_batch(ops, act, ours, ref, rng, pos0, t, h, hkv, d)
    w, _ = weight(Q.Q8_0, 40, h * d, rng)
    default = ops.flash_split, ops.gemm_x
    try:
        ops.flash_split, ops.gemm_x = split, "f16"
        lazy = ops.attention(act(ops, q), ours, 0, pos0, h, hkv, d)
        assert isinstance(lazy, LazyFlash) and lazy.value is None
        y16 = ops.to_host(ops.matmul(lazy, w))
        rows32 = ops.act(ops.attention(act(ops, q), ours, 0, pos0, h, hkv, d))
        y32 = ops.to_host(ops.matmul(rows32, w))
    finally:
        ops.flash_split, ops.gemm_x = default
    assert lazy.value.f is None and rows32.f is not None and rows32.h16 is None
    f32 = ops.to_host(rows32)
    assert np.array_equal(ops.to_host(lazy.value), f32.astype(np.float16).astype(np.float32))
    assert np.array_equal(y16, y32)


@pytest.mark.parametrize("tk,tv", KV_MIXES)
def test_flash_attention_prefill(ops, tk, tv):
    """A batch of queries after cached cells (pos0 > 0), causal inside the batch; GQA 2 query heads per KV head."""
    rng = np.random.default_rng(50)
    h, hkv, d, n_ctx = (4, 2, 64, 200) if REAL_GPU else (2, 1, 32, 64)  # the simulator emulates every mma
    ours, ref = DeviceKV(1, n_ctx, hkv * d, tk, tv), ref_ops.KVCache.allocate(1, n_ctx, hkv * d, tk, tv)
    for pos0, t in ((0, 5), (5, ops.gemv_max_t + 4)) if not REAL_GPU else ((0, 5), (5, 70), (75, 100)):
        q = kv_batch(ops, act, ours, ref, rng, pos0, t, h, hkv, d)
        default, ops.q8_prefill = ops.q8_prefill, "stage"  # a q8_0 side dequantized per tile while staged
        try:
            got = ops.to_host(ops.attention(act(ops, q), ours, 0, pos0, h, hkv, d))
            assert rel(got, ref_ops.attention(q, ref, 0, pos0, h, hkv, d)) < 4e-3  # f16 Q and P on the tensor cores
            if "q8_0" in (tk, tv) and t > ops.gemv_max_t:  # ... or through an f16 copy first: the same bits
                ops.q8_prefill = "f16"
                via_f16 = ops.to_host(ops.attention(act(ops, q), ours, 0, pos0, h, hkv, d))
                assert np.array_equal(via_f16, got)
        finally:
            ops.q8_prefill = default


@pytest.mark.parametrize("tk,tv", KV_MIXES)
def test_flash_prefill_variants(tk, tv):
    """The prefill attention's tile movers (SWEEPBENCH_CUDA_FLASH) over several 64-cell KV tiles: ``ex2`` (4-byte
    items; the next tile's loads in flight during this tile's mma work, a mask only on tiles that a warp's causal
    edge or the last cell cuts, a base-2 softmax) is within the f16 tolerance of the reference, and
    ``ex2-wide-trans`` gives its bits (16-byte loads, unclamped on whole tiles; K and V staged as rows by 16-byte
    stores, the fragments read with ldmatrix, .trans for V: a swapped matrix or row would change them; O rescaled
    only where a row maximum moved; a q8_0 side reaches it as an f16 copy). The
    checked batch at position 100 meets a tile below every row (no mask), one that the causal edge cuts within
    the cells, and one that the last cell cuts; on the GPU also a batch of 100 rows from position 0 (every tile
    cut) and one of 200 rows (two query blocks of 128)."""
    from cuda_kernels import flash

    rng = np.random.default_rng(51)
    h, hkv, d, n_ctx = (4, 2, 64, 384) if REAL_GPU else (2, 1, 32, 136)
    ops = CudaOps(max_tokens=256 if REAL_GPU else 32, n_ctx=n_ctx)
    if not REAL_GPU:
        ops.att_nw, ops.att_combine_nw, ops.gemv_nw = 1, 2, 1
    ours, ref = DeviceKV(1, n_ctx, hkv * d, tk, tv), ref_ops.KVCache.allocate(1, n_ctx, hkv * d, tk, tv)
    checked = ((0, 100), (100, 30), (130, 200)) if REAL_GPU else ((100, 30),)
    batches = [(p, min(32, 100 - p), False) for p in range(0, 100, 32)] if not REAL_GPU else []
    for pos0, t, check in batches + [(p, t, True) for p, t in checked]:
        q = kv_batch(ops, act, ours, ref, rng, pos0, t, h, hkv, d)
        if not check:
            continue
        want = ref_ops.attention(q, ref, 0, pos0, h, hkv, d)
        got = {}
        for variant in flash.VARIANTS:
            ops.flash = variant
            got[variant] = ops.to_host(ops.attention(act(ops, q), ours, 0, pos0, h, hkv, d))
            assert rel(got[variant], want) < 4e-3, (variant, pos0, t)
        assert flash.wide_fits(d) and np.array_equal(got["ex2-wide-trans"], got["ex2"]), (pos0, t)
