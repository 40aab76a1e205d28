"""The reference engine's behaviour towards the sweep loop: prefill/decode/truncate semantics, batching,
determinism, warmup, errors; and the ``logits`` command."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from sweepbench.cli import app
from sweepbench.engines import create_engine
from sweepbench.engines.base import EngineOptions
from sweepbench.errors import SweepbenchError, UsageError

N_VOCAB = 512


def _engine(path, **options):
    engine = create_engine("reference")
    engine.load(str(path), EngineOptions(**{"n_ctx": 64, **options}))
    return engine


def _close(a, b):
    """Same maths through other matmul shapes (GEMV vs GEMM): float32 rounding only."""
    assert np.abs(a - b).max() <= 1e-3 * np.abs(b).max()


def _tokens(n, seed=0):
    return np.random.default_rng(seed).integers(0, N_VOCAB, n)


@pytest.fixture(scope="module", params=["qwen3moe", "bailingmoe2"])
def model(request, tiny_model):
    return tiny_model(request.param, expert_type="Q4_K", dense_type="Q8_0")


def test_prefill_logits_equal_decoding_token_by_token(model):
    tokens = _tokens(10)
    engine = _engine(model)
    batch = engine.prefill(tokens, 0, all_logits=True)  # [10, V]
    assert batch.shape == (10, N_VOCAB) and batch.dtype == np.float32
    engine.truncate(0)
    steps = np.stack([engine.decode(int(t), i) for i, t in enumerate(tokens)])
    _close(steps, batch)


def test_ubatch_chunking_and_last_token_logits(model):
    tokens = _tokens(13, seed=1)
    whole = _engine(model, n_ubatch=512).prefill(tokens, 0, all_logits=True)
    chunked = _engine(model, n_ubatch=4)
    last = chunked.prefill(tokens, 0)  # 4 + 4 + 4 + 1 tokens
    assert last.shape == (N_VOCAB,)
    _close(last, whole[-1])
    chunked.truncate(0)
    _close(chunked.prefill(tokens, 0, all_logits=True), whole)


def test_truncate_rolls_the_cache_back(model):
    """TG then rollback, as sweep-bench does: decoding after truncate(n) equals decoding on a cache of n."""
    prompt, tg = _tokens(8, seed=2), _tokens(3, seed=3)
    engine = _engine(model)
    engine.prefill(prompt, 0)
    first = [engine.decode(int(t), 8 + i) for i, t in enumerate(tg)]
    engine.truncate(8)
    again = [engine.decode(int(t), 8 + i) for i, t in enumerate(tg)]
    np.testing.assert_array_equal(first, again)


def test_two_runs_are_bit_identical(model):
    tokens = _tokens(9, seed=4)
    a = _engine(model).prefill(tokens, 0, all_logits=True)
    b = _engine(model).prefill(tokens, 0, all_logits=True)
    np.testing.assert_array_equal(a, b)


def test_warmup_touches_every_expert_and_leaves_an_empty_cache(tiny_model):
    engine = _engine(tiny_model("qwen3moe"))
    engine.warmup()
    assert engine.n_filled == 0
    stacks = [w for n, w in engine.weights.items() if "_exps." in n]
    assert stacks and all(len(s._cache) == s.n_expert for s in stacks)  # every expert was dequantized (used)
    with pytest.raises(SweepbenchError, match="hole"):
        engine.decode(5, 1)


def test_bad_requests_are_one_line_errors(tiny_model):
    engine = _engine(tiny_model(), n_ctx=8)
    with pytest.raises(SweepbenchError, match="outside the vocabulary"):
        engine.prefill(np.array([1, N_VOCAB]), 0)
    with pytest.raises(SweepbenchError, match="do not fit the context of 8"):
        engine.prefill(_tokens(9), 0)
    with pytest.raises(SweepbenchError, match="no tokens"):
        engine.prefill(np.array([], np.int64), 0)
    with pytest.raises(UsageError, match="KV-cache type"):
        _engine(tiny_model(), type_k="q4_0")


def test_q8_0_cache_is_smaller_and_close_to_f16(model):
    tokens = _tokens(12, seed=5)
    f16 = _engine(model)
    q8 = _engine(model, type_k="q8_0", type_v="q8_0")
    assert q8.memory().kv_bytes == pytest.approx(f16.memory().kv_bytes * 34 / 64)
    a, b = f16.prefill(tokens, 0, all_logits=True), q8.prefill(tokens, 0, all_logits=True)
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()


def test_describe_reports_ignored_options(tiny_model):
    d = _engine(tiny_model(), grouped_routing=True).describe()
    assert d["engine"] == "reference"
    assert "repack" in d["ignored"] and "grouped_routing" in d["ignored"]  # qwen3moe: no groups


# ---------------------------------------------------------------------------------------------- command


def test_logits_command_writes_every_position(tiny_model, tmp_path):
    path = tiny_model("bailingmoe2")
    out = tmp_path / "l.npy"
    result = CliRunner().invoke(app, ["logits", "-m", str(path), "--tokens", "1,7,300,42", "-ger", "-o", str(out)])
    assert result.exit_code == 0, result.output
    saved = np.load(out)
    assert saved.shape == (4, N_VOCAB) and saved.dtype == np.float32
    engine = _engine(path, grouped_routing=True)
    engine.warmup()
    np.testing.assert_array_equal(saved, engine.prefill(np.array([1, 7, 300, 42]), 0, all_logits=True))

    rand = CliRunner().invoke(app, ["logits", "-m", str(path), "--random", "6", "--seed", "3", "-o", str(out)])
    assert rand.exit_code == 0 and np.load(out).shape == (6, N_VOCAB)


@pytest.mark.parametrize("args, needle", [
    (["--tokens", "1,x"], "--tokens"),
    (["--tokens", "1,512"], "0..511"),
    ([], "exactly one of"),
    (["--tokens", "1", "--random", "3"], "exactly one of"),
    (["--random", "0"], "--random"),
    (["--tokens", "1", "--engine", "nope"], "unknown engine"),
])
def test_logits_command_bad_flags(tiny_model, tmp_path, args, needle):
    result = CliRunner().invoke(app, ["logits", "-m", str(tiny_model()), "-o", str(tmp_path / "x.npy"), *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output and result.output.count("\n") == 1


def test_memory_estimate_matches_what_load_holds(model):
    """The fit check's estimate (before load) against what the engine holds once warmup used every expert."""
    options = EngineOptions(n_ctx=64, type_k="q8_0")
    engine = create_engine("reference")
    estimate = engine.estimate_memory(str(model), options)
    engine.load(str(model), options)
    engine.warmup()
    held = engine.memory()
    assert held.kv_bytes == estimate.kv_bytes
    assert held.weights_bytes == estimate.weights_bytes
