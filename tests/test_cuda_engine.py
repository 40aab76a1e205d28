"""The numba-cuda engine end to end: logits against the reference engine, bit-identical reruns, the CUDA graph path.

A forward pass in the simulator takes minutes even on a micro model, so CI runs only the one-line refusal without a
GPU; the rest runs on the GPU machine (``SWEEPBENCH_CUDA_TESTS=gpu``, benchmarks/gpu_check_and_sweep.sh) or, in the
simulator, with ``SWEEPBENCH_CUDA_SIM_E2E=1``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cuda_sim import REAL_GPU, cuda_module

from sweepbench import presets
from sweepbench.engines import create_engine
from sweepbench.engines.base import EngineOptions
from sweepbench.errors import UsageError
from sweepbench.presets import SynthShape
from sweepbench.synth import write_synthetic_model
from sweepbench.verify import compare_logits, schedule_logits

E2E = REAL_GPU or os.environ.get("SWEEPBENCH_CUDA_SIM_E2E") == "1"
needs_e2e = pytest.mark.skipif(not E2E, reason="end-to-end GPU run: SWEEPBENCH_CUDA_TESTS=gpu (or SWEEPBENCH_CUDA_SIM_E2E=1)")

MICRO = {
    "qwen3moe": SynthShape(arch="qwen3moe", n_layer=1, n_embd=64, n_head=2, n_head_kv=1, head_dim=32, n_vocab=288,
                           n_expert=4, n_expert_used=2, n_ff_exp=32, rope_base=1e6, n_ctx_train=512),
    "bailingmoe2": SynthShape(arch="bailingmoe2", n_layer=2, n_embd=64, n_head=2, n_head_kv=1, head_dim=32,
                              n_vocab=288, n_expert=4, n_expert_used=2, n_ff_exp=32, rope_base=6e5, n_ctx_train=512,
                              n_rot=16, n_dense_lead=1, n_ff_dense=64, n_expert_shared=1, n_ff_shexp=32,
                              n_expert_groups=2, n_group_used=1, w_scale=2.5),
}


def test_without_a_gpu_the_engine_refuses_in_one_line(tiny_model):
    """In a fresh process (this one has the simulator loaded): one line on stderr, exit 2, no traceback."""
    if Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir()):
        pytest.skip("a GPU is present")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    cmd = [sys.executable, "-m", "sweepbench.cli", "sweep-bench", "-m", str(tiny_model()), "--engine", "numba-cuda",
           "-c", "32", "-ub", "16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and "no CUDA GPU" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout.strip() == ""


def _model(tmp_path, monkeypatch, arch, dtype):
    if REAL_GPU:
        path = tmp_path / f"tiny-{arch}-{dtype}.gguf"
        write_synthetic_model(path, "tiny", arch, dtype, dtype, seed=1, threads=2)
        return path
    monkeypatch.setitem(presets.PRESETS, "micro", MICRO)
    path = tmp_path / f"micro-{arch}-{dtype}.gguf"
    write_synthetic_model(path, "micro", arch, dtype, dtype, seed=1, threads=2)
    return path


def _logits(engine_name, path, tokens, prompt, grouped=False, kv="f16", graphs=True, ubatch=8):
    engine = create_engine(engine_name)
    if not graphs:
        engine.use_graphs = False
    engine.load(str(path), EngineOptions(n_ctx=len(tokens) + 4, n_ubatch=ubatch, grouped_routing=grouped, type_k=kv,
                                         type_v=kv))
    try:
        engine.warmup()
        return schedule_logits(engine, tokens, prompt), engine.describe()
    finally:
        engine.close()


CASES = [("qwen3moe", "F16", False, "f16"), ("bailingmoe2", "F16", True, "f16"), ("qwen3moe", "Q8_0", False, "q8_0"),
         ("bailingmoe2", "Q4_K", False, "f16")]


@needs_e2e
@pytest.mark.parametrize("arch,dtype,grouped,kv", CASES if REAL_GPU else CASES[:2])
def test_logits_match_the_reference_engine(tmp_path, monkeypatch, arch, dtype, grouped, kv):
    if dtype == "Q4_K" and not REAL_GPU:
        pytest.skip("micro rows are shorter than a Q4_K block")
    cuda_module()
    path = _model(tmp_path, monkeypatch, arch, dtype)
    # on the GPU a prompt of 36 in ubatches of 32: one batch through the prefill kernels (tensor-core GEMMs over
    # grouped rows, flash attention), one of 4 through the GEMVs, then decode steps; the simulator runs 3 + 2
    n = 40 if REAL_GPU else 5
    tokens = np.random.default_rng(0).integers(0, 64, n)
    prompt, ub = (n - 4, 32) if REAL_GPU else (3, 8)
    ref, _ = _logits("reference", path, tokens, prompt, grouped, kv)
    ours, info = _logits("numba-cuda", path, tokens, prompt, grouped, kv, graphs=REAL_GPU, ubatch=ub)
    f = compare_logits(ref, ours)
    if dtype == "F16" and kv == "f16":
        assert f["max_rel"] < 2e-3 and f["top1_agreement"] == 1.0, f
    else:  # q8_1 activations and a q8_0 cache round where the reference is exact
        assert f["mean_kl"] < 3e-3 and f["top1_agreement"] >= 0.7, f
    assert info.get("q8_prefill") == ("an f16 copy first" if kv == "q8_0" else None), info  # the default
    if REAL_GPU:
        assert info["cuda_graph"], "decode steps after the first must replay a CUDA graph"
        again, _ = _logits("numba-cuda", path, tokens, prompt, grouped, kv, ubatch=ub)
        assert np.array_equal(ours, again), "two runs must give bit-identical logits"
        monkeypatch.setenv("SWEEPBENCH_CUDA_GEMM_X", "f32")  # f16 GEMM activations (the default) round as f32
        f32_acts, _ = _logits("numba-cuda", path, tokens, prompt, grouped, kv, ubatch=ub)  # ones are staged
        assert np.array_equal(ours, f32_acts), "SWEEPBENCH_CUDA_GEMM_X=f16 must keep the logits' bits"


def test_a_context_beyond_the_combine_kernel_is_refused_before_the_weights_load(tiny_model, monkeypatch):
    """One UsageError line from check_config, raised before any weight is prepared."""
    cuda_module()
    from cuda_kernels import attention as att
    from sweepbench.engines.numba_cuda import NumbaCudaEngine

    engine = NumbaCudaEngine()
    monkeypatch.setattr(engine, "prepare_weight", lambda *a: pytest.fail("a weight was prepared"))
    with pytest.raises(UsageError) as err:
        engine.load(str(tiny_model()), EngineOptions(n_ctx=att.MAX_CONTEXT + 64))
    assert "context" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("n_embd", [40, 4352])
def test_an_embedding_width_the_kernels_cannot_step_through_is_refused(tiny_model, n_embd):
    """The RMSNorm and the float32 router GEMM take rows of whole 32-value steps, the RMSNorm at most 4096: any
    other width is one UsageError line from check_config, not a ValueError in the middle of the warmup."""
    from dataclasses import replace

    cuda_module()
    from sweepbench.engines.numba_cuda import NumbaCudaEngine
    from sweepbench.models.tensors import open_model

    _, cfg = open_model(str(tiny_model()))
    NumbaCudaEngine().check_config(cfg, EngineOptions())  # the tiny model's own width passes
    with pytest.raises(UsageError) as err:
        NumbaCudaEngine().check_config(replace(cfg, n_embd=n_embd), EngineOptions())
    assert f"width of {n_embd}" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("name", "value"), [("SWEEPBENCH_CUDA_ATT_LOW", "2:many"),
                                             ("SWEEPBENCH_CUDA_ATT_TPW", "3"), ("SWEEPBENCH_CUDA_Q8_DECODE", "x"),
                                             ("SWEEPBENCH_CUDA_FLASH", "fast"), ("SWEEPBENCH_CUDA_GEMM", "swz"),
                                             ("SWEEPBENCH_CUDA_GEMM_REGS", "64"), ("SWEEPBENCH_CUDA_GEMM_X", "bf16"),
                                             ("SWEEPBENCH_CUDA_FLASH_SPLIT", "8")])
def test_a_bad_kernel_switch_is_refused_before_the_weights_load(tiny_model, monkeypatch, name, value):
    """One UsageError line naming the variable, raised before any weight is prepared."""
    cuda_module()
    from sweepbench.engines.numba_cuda import NumbaCudaEngine

    monkeypatch.setenv(name, value)
    engine = NumbaCudaEngine()
    monkeypatch.setattr(engine, "prepare_weight", lambda *a: pytest.fail("a weight was prepared"))
    with pytest.raises(UsageError) as err:
        engine.load(str(tiny_model()), EngineOptions(n_ctx=64, type_k="q8_0", type_v="q8_0"))
    assert str(err.value).startswith(f"{name}={value}") and "\n" not in str(err.value)


@pytest.mark.parametrize(("arch", "env", "deep"), [("qwen3moe", None, 512), ("bailingmoe2", None, 128),
                                                   ("bailingmoe2", "512", 512)])
def test_the_deep_graph_starts_where_the_architecture_wants(tmp_path, monkeypatch, arch, env, deep):
    """Loading sets the position of the exit-port graph from the model's architecture (Ling: 128) unless
    SWEEPBENCH_CUDA_PDL_DEEP says otherwise."""
    cuda_module()
    from sweepbench.engines.numba_cuda import NumbaCudaEngine

    if env is None:
        monkeypatch.delenv("SWEEPBENCH_CUDA_PDL_DEEP", raising=False)
    else:
        monkeypatch.setenv("SWEEPBENCH_CUDA_PDL_DEEP", env)
    engine = NumbaCudaEngine()
    engine.load(str(_model(tmp_path, monkeypatch, arch, "F16")), EngineOptions(n_ctx=64, n_ubatch=8))
    try:
        assert engine.ops.pdl_deep == deep
    finally:
        engine.close()


@pytest.mark.parametrize(("n_ctx", "shallow", "low", "deep"), [
    (16384, 0, 4096, 512), (16384, 1024, 0, 128), (16384, 0, 0, 0), (64, 0, 4096, 30), (100, 100, 20, 200),
    (4096, 256, 4096, 512), (50, 7, 7, 7)])
def test_decode_segments_give_each_position_the_eager_rule(n_ctx, shallow, low, deep):
    """The decode graphs' position ranges tile 0 .. n_ctx, and the graph serving a position has the shape an eager
    step there takes: the fused merge below ``shallow``, short parts below ``low``, exit edges from ``deep`` (0:
    never), so a replay gives the eager step's bits. No two neighbouring ranges have the same shape."""
    from sweepbench.engines.numba_cuda import decode_segments

    segs = decode_segments(n_ctx, shallow, low, deep)
    assert segs[0].lo == 0 and segs[-1].hi == n_ctx
    assert all(a.hi == b.lo for a, b in zip(segs, segs[1:]))
    shape = [(s.shallow, s.low, s.exit_edges) for s in segs]
    assert all(a != b for a, b in zip(shape, shape[1:])), segs
    for s in segs:
        for pos in range(s.lo, s.hi):
            assert (s.shallow, s.low, s.exit_edges) == (pos < shallow, pos < low, 0 < deep <= pos), (pos, s)


def test_a_q8_0_cache_takes_short_parts_at_shallow_depth(monkeypatch):
    """With a q8_0 cache, decode attention below 8192 positions runs the warp split with 2 tiles per warp (a
    graph captured with graph_low set: all its positions are below); f16 keeps 4 everywhere. SWEEPBENCH_CUDA_ATT_LOW
    overrides (TPW:CELLS or off; else a one-line usage error), and the fused merge's shallow graph turns it off."""
    cuda_module()
    from cuda_kernels import attention as att
    from cuda_kernels.ops_table import CudaOps

    monkeypatch.delenv("SWEEPBENCH_CUDA_ATT_LOW", raising=False)
    monkeypatch.delenv("SWEEPBENCH_CUDA_TAILS", raising=False)
    ops = CudaOps(max_tokens=1, n_ctx=64)
    ops.set_cache_type("f16", "f16")
    assert ops.low_cells() == 0 and ops._decode_tpw(0) == att.TPW
    ops.set_cache_type("f16", "q8_0")
    assert ops.low_cells() == 8192
    assert [ops._decode_tpw(p) for p in (0, 8191, 8192)] == [2, 2, att.TPW]
    ops.capturing, ops.graph_low = True, False
    assert ops._decode_tpw(0) == att.TPW  # a capture follows its graph's flag, not the stand-in position 0
    ops.graph_low = True
    assert ops._decode_tpw(0) == 2
    ops.capturing = False
    ops.att_fuse_parts = 2
    assert ops.low_cells() == 0
    monkeypatch.setenv("SWEEPBENCH_CUDA_ATT_LOW", "1:300")
    ops = CudaOps(max_tokens=1, n_ctx=64)
    ops.set_cache_type("f16", "f16")
    assert (ops.att_tpw_low, ops.low_cells()) == (1, 300)
    monkeypatch.setenv("SWEEPBENCH_CUDA_ATT_LOW", "off")
    ops.set_cache_type("q8_0", "q8_0")
    assert ops.low_cells() == 0
    monkeypatch.setenv("SWEEPBENCH_CUDA_ATT_LOW", "3:100")
    with pytest.raises(UsageError, match="SWEEPBENCH_CUDA_ATT_LOW=3:100: TPW:CELLS"):
        ops.set_cache_type("q8_0", "q8_0")


def test_loading_a_q8_0_cache_sets_the_short_parts(tmp_path, monkeypatch):
    """The engine tells its ops the cache's type at load (the rule above then holds for every decode step)."""
    cuda_module()
    from sweepbench.engines.numba_cuda import NumbaCudaEngine

    monkeypatch.delenv("SWEEPBENCH_CUDA_ATT_LOW", raising=False)
    engine = NumbaCudaEngine()
    engine.load(str(_model(tmp_path, monkeypatch, "qwen3moe", "F16")),
                EngineOptions(n_ctx=64, n_ubatch=8, type_k="q8_0", type_v="q8_0"))
    try:
        assert (engine.ops.att_tpw_low, engine.ops.att_low_cells) == (2, 8192)
    finally:
        engine.close()


@pytest.mark.skipif(not REAL_GPU, reason="CUDA graphs replay on the device only")
def test_short_parts_graph_keeps_the_eager_steps_bits(tmp_path, monkeypatch):
    """A q8_0 cache with short parts below position 20 and exit edges from 30: three decode graphs, and 40 steps
    across both cuts give exactly the eager steps' logits."""
    cuda_module()
    path = _model(tmp_path, monkeypatch, "qwen3moe", "Q8_0")
    tokens = np.random.default_rng(6).integers(0, 64, 48)
    monkeypatch.setenv("SWEEPBENCH_CUDA_ATT_LOW", "1:20")
    monkeypatch.setenv("SWEEPBENCH_CUDA_PDL_DEEP", "30")
    eager, _ = _logits("numba-cuda", path, tokens, 8, kv="q8_0", graphs=False)
    replayed, info = _logits("numba-cuda", path, tokens, 8, kv="q8_0")
    assert info.get("graph_low") == "1 tiles per warp below position 20", info
    assert np.array_equal(eager, replayed)


@pytest.mark.skipif(not REAL_GPU, reason="CUDA graphs replay on the device only")
def test_shallow_and_full_graphs_replay_the_eager_steps_bits(tmp_path, monkeypatch):
    """Decode steps on both sides of the shallow graph's last position (its attention merges in the split kernel;
    the full graph's launches a combine) give exactly the eager steps' logits, which follow the same rule."""
    cuda_module()
    path = _model(tmp_path, monkeypatch, "qwen3moe", "Q8_0")
    tokens = np.random.default_rng(3).integers(0, 64, 264)

    def run(graphs: bool):
        engine = create_engine("numba-cuda")
        engine.use_graphs = graphs
        engine.load(str(path), EngineOptions(n_ctx=600, n_ubatch=64))
        engine.ops.att_fuse_parts = 1  # the shallow graph serves one part (256 positions)
        engine.ops.norm_tails = engine.ops.route_tails = True
        try:
            engine.warmup()
            return schedule_logits(engine, tokens, 250), engine.describe()
        finally:
            engine.close()

    eager, _ = run(False)
    replayed, info = run(True)
    assert "graph_nodes_shallow" in info and info["graph_nodes_shallow"].endswith("(positions below 256)"), info
    assert np.array_equal(eager, replayed)


@pytest.mark.skipif(not REAL_GPU, reason="CUDA graphs replay on the device only")
@pytest.mark.parametrize(("pdl", "deep"), [("order", "0"), ("exit", "0"), ("order", "30")])
def test_programmatic_edges_keep_the_eager_steps_bits(tmp_path, monkeypatch, pdl, deep):
    """Decode graphs whose kernel edges are programmatic (each kernel launched while its predecessor runs, parked
    at its grid-dependency wait) replay 40 steps with exactly the eager steps' logits, on both architectures: a
    kernel that read its predecessor's output early would change them. With deep = 30 the steps from position 30
    on replay the graph with exit-port edges instead."""
    cuda_module()
    from cuda_kernels import env

    if not env.GRID_DEP:
        pytest.skip("programmatic dependent launch needs sm_90 or later")
    for arch, dtype, grouped in (("qwen3moe", "Q8_0", False), ("bailingmoe2", "Q4_K", True)):
        path = _model(tmp_path, monkeypatch, arch, dtype)
        tokens = np.random.default_rng(5).integers(0, 64, 48)
        monkeypatch.setenv("SWEEPBENCH_CUDA_PDL", pdl)
        monkeypatch.setenv("SWEEPBENCH_CUDA_PDL_DEEP", deep)
        eager, _ = _logits("numba-cuda", path, tokens, 8, grouped, graphs=False)
        replayed, info = _logits("numba-cuda", path, tokens, 8, grouped)
        assert info["cuda_pdl"].startswith(pdl) and not info["cuda_pdl"].startswith(f"{pdl} (0 "), info
        assert info.get("graph_deep") == ("exit edges from position 30" if deep == "30" else None), info
        assert np.array_equal(eager, replayed), f"{arch}: PDL {pdl} changed the logits"


@pytest.mark.parametrize(("split", "tiles", "room", "expect"), [
    ("auto", 4, None, "whole"),  # ling-like: 4 query tiles x 16 heads = 64 blocks for 132 SMs: 2 parts at depth
    ("auto", 4, 50, "short"),  # the second ubatch shortened to the 50 rows the context has left
    ("auto", 16, None, None),  # 256 blocks: never split, nothing to compile
    ("off", 4, None, None),
    ("3", 4, 8, None),  # room for 8 rows only: the GEMV path, not the prefill attention
])
def test_warmup_compiles_the_split_attention_in_the_parts_a_deep_ubatch_gets(split, tiles, room, expect):
    """NumbaCudaEngine._warm_flash_split: a second ubatch right after the warmup's first (its cells attend to
    written ones only), in the parts ``auto`` would give it at depth, so no split kernel compiles inside a
    measured row (the first H100 A/B's N_KV 1024 row took 3.1 s); the setting is restored afterwards."""
    from types import SimpleNamespace

    cuda_module()
    from cuda_kernels.ops_table import CudaOps
    from sweepbench.engines.numba_cuda import NumbaCudaEngine

    from cuda_kernels.flash import BQ

    n = tiles * BQ
    n_ctx = n + 1 + room if room else 32 * n
    calls = []
    ops = SimpleNamespace(flash_split=split, n_sm=132, gemv_max_t=8)
    ops.flash_split_parts_at_depth = lambda t, h: CudaOps.flash_split_parts_at_depth(ops, t, h)
    ops._flash_parts = lambda b, p: CudaOps._flash_parts(ops, b, p)
    eng = SimpleNamespace(ops=ops, config=SimpleNamespace(n_head=16), options=SimpleNamespace(n_ctx=n_ctx),
                          prefill=lambda toks, pos: calls.append((pos, len(toks), ops.flash_split)))
    NumbaCudaEngine._warm_flash_split(eng, n, 1)
    want = {"whole": [(n, n, "2")], "short": [(n, room, "2")], None: []}[expect]
    assert calls == want and ops.flash_split == split
