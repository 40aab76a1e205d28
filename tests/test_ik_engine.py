"""The ik_llama.cpp engine (ctypes): struct layouts, prefill/decode/truncate semantics, warmup, errors, facts."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from sweepbench import ik_ctypes
from sweepbench.engines import create_engine
from sweepbench.engines.base import EngineOptions
from sweepbench.engines.ik import IkEngine
from sweepbench.errors import SweepbenchError, UsageError

N_VOCAB = 512  # tiny preset
OPTIONS = EngineOptions(n_ctx=64, n_threads=2)


def _engine(path, **overrides) -> IkEngine:
    engine = create_engine("ik")
    engine.load(str(path), EngineOptions(**{**OPTIONS.__dict__, **overrides}))
    return engine


def _tokens(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(3, N_VOCAB, n)


@pytest.fixture(scope="module")
def q8_model(tiny_model):
    return tiny_model("qwen3moe", expert_type="Q8_0", dense_type="Q8_0")


@pytest.fixture(scope="module")
def q8_engine(q8_model):
    engine = _engine(q8_model)
    yield engine
    engine.close()


# ---------------------------------------------------------------------------------------------- binding


@pytest.mark.parametrize("name", ["llama_model_params", "llama_context_params", "llama_batch"])
def test_struct_layout_matches_the_wheels_own_bindings(name):
    """Every field at the same offset with the same size, and the same total size, as the wheel's bindings
    (which load the same library). Our structs are passed by value, so one shifted field corrupts the rest."""
    from ik_llama_cpp import _ctypes_api as wheel

    ours, theirs = getattr(ik_ctypes, name), getattr(wheel, name)
    assert ctypes.sizeof(ours) == ctypes.sizeof(theirs)
    assert [f for f, _ in ours._fields_] == [f for f, _ in theirs._fields_]
    for field, _ in ours._fields_:
        a, b = getattr(ours, field), getattr(theirs, field)
        assert (a.offset, a.size) == (b.offset, b.size), field


def test_default_params_come_back_intact_through_our_structs():
    """Returned by value from C: if the layout were off, these well-known defaults would be garbage."""
    lib = ik_ctypes.load_library()
    mp, cp = lib.llama_model_default_params(), lib.llama_context_default_params()
    assert (mp.n_gpu_layers, mp.use_mmap, mp.n_ubatch) == (0, True, 512)
    assert (cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max) == (512, 2048, 512, 1)
    assert cp.type_k == cp.type_v == ik_ctypes.GGML_TYPE_IDS["f16"]


def test_missing_wheel_is_one_line_with_install_hint(monkeypatch):
    monkeypatch.setattr(ik_ctypes.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SweepbenchError) as err:
        ik_ctypes.library_path()
    assert "pip install 'sweepbench[peer]'" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------- semantics


def test_prefill_returns_float32_last_or_all_logits(q8_engine):
    tokens = _tokens(12)
    q8_engine.truncate(0)
    every = q8_engine.prefill(tokens, 0, all_logits=True)
    q8_engine.truncate(0)
    last = q8_engine.prefill(tokens, 0)
    assert every.shape == (12, N_VOCAB) and every.dtype == np.float32 and np.isfinite(every).all()
    assert last.shape == (N_VOCAB,) and last.dtype == np.float32
    np.testing.assert_array_equal(last, every[-1])
    assert np.abs(every[0] - every[-1]).max() > 0.01  # positions really differ


def test_truncate_then_redecode_gives_identical_logits(q8_engine):
    tokens = _tokens(10, seed=1)
    q8_engine.truncate(0)
    q8_engine.prefill(tokens[:8], 0)
    first = [q8_engine.decode(int(t), 8 + i) for i, t in enumerate(tokens[8:])]
    q8_engine.truncate(8)
    again = [q8_engine.decode(int(t), 8 + i) for i, t in enumerate(tokens[8:])]
    np.testing.assert_array_equal(np.array(first), np.array(again))
    # a different token at position 9 changes position 9's logits: the truncated cell really was replaced
    q8_engine.truncate(9)
    other = q8_engine.decode(int(tokens[9]) ^ 1, 9)
    assert np.abs(other - first[1]).max() > 1e-3


def test_decode_after_prefill_equals_the_longer_prefill(q8_engine):
    """Single-token decodes over a cache must give the all-logits rows of one longer prefill (ik is bit-exact
    between these batchings below 32 tokens; allow float32 rounding anyway)."""
    tokens = _tokens(20, seed=2)
    q8_engine.truncate(0)
    together = q8_engine.prefill(tokens, 0, all_logits=True)  # [20, V]
    q8_engine.truncate(0)
    q8_engine.prefill(tokens[:14], 0)
    stepped = np.array([q8_engine.decode(int(t), 14 + i) for i, t in enumerate(tokens[14:])])  # [6, V]
    scale = np.abs(together).max()
    np.testing.assert_allclose(stepped, together[14:], rtol=0, atol=1e-5 * scale)


def test_prefill_is_chunked_by_n_batch(q8_model, q8_engine):
    """n_batch = 5 splits 13 tokens into 3 llama_decode calls; the logits of all chunks come back in order."""
    tokens = _tokens(13, seed=3)
    q8_engine.truncate(0)
    whole = q8_engine.prefill(tokens, 0, all_logits=True)
    chunked_engine = _engine(q8_model, n_batch=5, n_ubatch=5)
    try:
        chunked = chunked_engine.prefill(tokens, 0, all_logits=True)
        chunked_engine.truncate(0)
        last_only = chunked_engine.prefill(tokens, 0)
    finally:
        chunked_engine.close()
    assert chunked.shape == whole.shape
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-5 * np.abs(whole).max())
    np.testing.assert_array_equal(last_only, chunked[-1])


def test_warmup_routes_to_all_experts_then_leaves_an_empty_cache(q8_model):
    """ik routes a lone BOS as the context's first decode to ALL experts (sweep-bench's warmup). After
    ``warmup()`` the cache is empty and a BOS at position 0 is an ordinary token again."""
    bos = 1
    cold = _engine(q8_model)
    warm = _engine(q8_model)
    try:
        cold_bos = cold.decode(bos, 0)  # the special all-experts path
        warm.warmup()
        warm_bos = warm.decode(bos, 0)
        warm.truncate(0)
        ordinary = warm.prefill(np.array([bos, 7]), 0, all_logits=True)[0]  # a 2-token batch is never special
    finally:
        cold.close()
        warm.close()
    np.testing.assert_array_equal(warm_bos, ordinary)
    assert np.abs(cold_bos - ordinary).max() > 1e-3


@pytest.mark.parametrize("arch", ["qwen3moe", "bailingmoe2"])
def test_kv_q8_0_and_no_repack_run_close_to_the_default(tiny_model, arch):
    path = tiny_model(arch, expert_type="Q8_0", dense_type="Q8_0")
    tokens = _tokens(9, seed=4)
    runs = {}
    for name, overrides in {"default": {}, "q8_0 kv": dict(type_k="q8_0", type_v="q8_0"),
                            "no repack": dict(repack=False)}.items():
        engine = _engine(path, **overrides)
        try:
            runs[name] = engine.prefill(tokens, 0, all_logits=True)
        finally:
            engine.close()
    scale = np.abs(runs["default"]).max()
    for name in ("q8_0 kv", "no repack"):
        assert np.abs(runs[name] - runs["default"]).max() < 0.05 * scale, name  # same model, other numerics


# ---------------------------------------------------------------------------------------------- errors


def test_bad_path_is_one_line(tmp_path):
    with pytest.raises(SweepbenchError) as err:
        IkEngine().load(str(tmp_path / "missing.gguf"), OPTIONS)
    assert "missing.gguf" in str(err.value) and "\n" not in str(err.value)


def test_ik_refusals_carry_ik_reason(q8_model):
    with pytest.raises(SweepbenchError, match="V cache quantization requires flash_attn"):
        _engine(q8_model, type_v="q8_0", flash_attn=False)
    with pytest.raises(UsageError, match="--type-k q4_0"):
        _engine(q8_model, type_k="q4_0")


def test_bad_tokens_positions_and_full_cache_are_one_line(q8_engine):
    q8_engine.truncate(0)
    with pytest.raises(SweepbenchError, match="token id 600 is outside the vocabulary"):
        q8_engine.decode(600, 0)
    with pytest.raises(SweepbenchError, match="do not fit the context"):
        q8_engine.prefill(_tokens(10), q8_engine.n_ctx - 5)
    # every cell used, then a batch at already-used positions: ik finds no free cell (llama_decode returns 1)
    q8_engine.prefill(_tokens(q8_engine.n_ctx), 0)
    with pytest.raises(SweepbenchError, match=r"llama_decode failed \(code 1\).*no room") as err:
        q8_engine._decode_chunk(np.arange(3, 7, dtype=np.int32), 0, np.ones(4, bool))
    assert "\n" not in str(err.value)
    q8_engine.truncate(0)


def test_ik_prints_nothing_by_default(q8_model, capfd):
    engine = _engine(q8_model)
    engine.prefill(_tokens(4), 0)
    engine.close()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# ---------------------------------------------------------------------------------------------- facts


def test_memory_and_describe(tiny_model):
    path = tiny_model("qwen3moe", expert_type="Q8_0", dense_type="Q8_0")
    engine = _engine(path, grouped_routing=True, type_k="q8_0")
    try:
        mem, facts = engine.memory(), engine.describe()
    finally:
        engine.close()
    cfg = engine.config
    kv_per_cell = cfg.n_layer * cfg.n_embd_kv * (34 / 32 + 2)  # q8_0 K + f16 V
    assert mem.kv_bytes == int(kv_per_cell * engine.n_ctx) and engine.n_ctx >= OPTIONS.n_ctx
    assert 0 < mem.weights_bytes <= path.stat().st_size
    assert facts["wheel"] == f"ik-llama-cpp-python {ik_ctypes.wheel_version()}"
    assert "SSE3" in facts["system_info"] or "NEON" in facts["system_info"]
    assert facts["options"]["n_threads"] == 2 and facts["options"]["type_k"] == "q8_0"
    assert {"repack", "fused_moe"} <= set(facts["options"])
    assert "bailingmoe2 only" in facts["ignored"]["grouped_routing"]  # qwen3moe has no expert groups


def test_capture_records_ik_intermediates(q8_model):
    """The eval-callback capture: the embedding rows ik looked up are our loader's dequantized rows, the
    captured output head is the returned logits, and the routing ids are valid expert indices."""
    from sweepbench.models.tensors import open_model

    wanted = {"inp_embd", "ffn_moe_topk-1", "result_output"}
    engine = IkEngine(capture=lambda name: name in wanted)
    engine.load(str(q8_model), OPTIONS)
    tokens = _tokens(6, seed=5)
    try:
        logits = engine.prefill(tokens, 0, all_logits=True)
        captured = dict(engine.captured)
    finally:
        engine.close()
    model, cfg = open_model(q8_model)
    assert set(captured) == wanted
    np.testing.assert_array_equal(captured["inp_embd"].reshape(6, cfg.n_embd),
                                  model.tensor("token_embd.weight").dequantize()[tokens])
    np.testing.assert_array_equal(captured["result_output"].reshape(6, N_VOCAB), logits)
    ids = captured["ffn_moe_topk-1"].reshape(6, cfg.n_expert_used)
    assert ids.dtype == np.int32 and ((0 <= ids) & (ids < cfg.n_expert)).all()


@pytest.mark.parametrize("arch, changes", [("bailingmoe2", True), ("qwen3moe", False)])
def test_grouped_routing_reaches_ik(tiny_model, arch, changes):
    """-ger picks other experts on bailingmoe2 (4 groups, 2 kept); qwen3moe has no groups and is unaffected."""
    path = tiny_model(arch, expert_type="Q8_0", dense_type="Q8_0")
    tokens = _tokens(16, seed=6)
    logits = {}
    for grouped in (False, True):
        engine = _engine(path, grouped_routing=grouped)
        try:
            logits[grouped] = engine.prefill(tokens, 0, all_logits=True)
        finally:
            engine.close()
    assert (np.abs(logits[True] - logits[False]).max() > 1e-3) == changes
