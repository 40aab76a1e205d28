"""numba-cpu's compiled decode step (one call per thread, spin barriers): the same bits as the op-by-op decode,
its work split (every item exactly once), its threads' lifecycle, and the models it declines."""
from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
from numba import njit

from sweepbench.cpu_kernels import spin
from sweepbench.cpu_kernels.decode_step import _grab, _static, run_step
from sweepbench.engines import create_engine
from sweepbench.engines.base import EngineOptions
from sweepbench.errors import UsageError


def _engine(path, monkeypatch, step: bool, **kw):
    monkeypatch.setenv("SWEEPBENCH_DECODE_STEP", "compiled" if step else "ops")
    engine = create_engine("numba-cpu")
    engine.load(str(path), EngineOptions(**{"n_ctx": 96, "n_threads": 2, **kw}))
    engine.warmup()
    return engine


def _decodes(engine, tokens, start):
    return np.stack([engine.decode(int(t), start + i) for i, t in enumerate(tokens)])


@pytest.mark.parametrize("arch, experts, kv, threads", [
    ("qwen3moe", "Q4_K", "f16", 2),
    ("qwen3moe", "Q8_0", "q8_0", 1),
    ("bailingmoe2", "Q8_0", "q8_0", 2),  # a dense lead layer, the shared expert, grouped sigmoid routing
    ("bailingmoe2", "IQ4_XS", "f16", 2),
])
def test_compiled_step_gives_the_op_by_op_decode_bits(tiny_model, monkeypatch, arch, experts, kv, threads):
    path = tiny_model(arch, expert_type=experts)
    opts = dict(type_k=kv, type_v=kv, n_threads=threads, grouped_routing=arch == "bailingmoe2")
    ops, step = _engine(path, monkeypatch, False, **opts), _engine(path, monkeypatch, True, **opts)
    assert ops.describe()["decode_step"].startswith("op by op")
    assert step.describe()["decode_step"] == f"compiled, {threads} thread(s) with spin barriers"
    tokens = np.random.default_rng(3).integers(0, 512, 60)
    for e in (ops, step):
        e.prefill(tokens[:40], 0)  # more than one 32-cell attention chunk before the decodes
    want, got = _decodes(ops, tokens[40:], 40), _decodes(step, tokens[40:], 40)
    assert np.array_equal(want, got)
    compiled = len(run_step.signatures)  # the warmup compiled (or loaded) every signature the decodes need
    step.truncate(45)  # a rolled-back cache: the same suffix again, the same bits (no state kept in the step)
    assert np.array_equal(_decodes(step, tokens[45:], 45), got[5:])
    assert len(run_step.signatures) == compiled
    step.close()


def test_workers_stop_on_close_and_when_the_engine_is_dropped(tiny_model, monkeypatch):
    def workers():
        return [t for t in threading.enumerate() if t.name.startswith("sweepbench-decode-")]

    before = len(workers())
    e = _engine(tiny_model(), monkeypatch, True)
    e.decode(3, 0)
    assert len(workers()) == before + 1
    e.close()
    assert len(workers()) == before
    e = _engine(tiny_model(), monkeypatch, True)
    e.decode(3, 0)
    del e
    gc.collect()
    for t in [t for t in threading.enumerate() if t.name.startswith("sweepbench-decode-")]:
        t.join(timeout=5)
    assert len(workers()) == before


def test_unsupported_weights_fall_back_to_the_op_path_with_a_reason(tiny_model, monkeypatch):
    e = _engine(tiny_model(), monkeypatch, True, repack=False)
    assert "not repacked" in e.describe()["decode_step"]
    assert e.decode(5, 0).shape == (512,)


def test_unfused_qkv_falls_back_instead_of_reading_q_as_qkv(tiny_model, monkeypatch):
    """Real files often give attn_v another type than attn_q: then q, k, v stay three matrices, and the step,
    which reads one fused QKV product, must decline rather than compute k and v from nothing."""
    from sweepbench.cpu_kernels.layouts import QuantR8
    from sweepbench.engines.cpu_step import CompiledDecode, Unsupported

    e = _engine(tiny_model(), monkeypatch, False)
    q = e.weights["blk.1.attn_q.weight"]
    n_q = e.config.n_embd_q
    e.weights["blk.1.attn_q.weight"] = QuantR8(q.kind, q.qtype, n_q, q.row_len, q.whole.qs[:, : n_q // 8])
    monkeypatch.setenv("SWEEPBENCH_DECODE_STEP", "compiled")
    with pytest.raises(Unsupported, match="q, k and v are not one matrix"):
        CompiledDecode(e, 2)


def test_the_compiled_step_is_the_default_and_a_bad_mode_is_a_usage_error(tiny_model, monkeypatch):
    monkeypatch.delenv("SWEEPBENCH_DECODE_STEP", raising=False)
    e = create_engine("numba-cpu")
    e.load(str(tiny_model()), EngineOptions(n_ctx=32, n_threads=2))
    e.warmup()
    assert e.describe()["decode_step"].startswith("compiled, 2 thread(s)")
    monkeypatch.setenv("SWEEPBENCH_DECODE_STEP", "ops")
    e = create_engine("numba-cpu")
    e.load(str(tiny_model()), EngineOptions(n_ctx=32, n_threads=2))
    e.warmup()
    assert e.describe()["decode_step"] == "op by op (SWEEPBENCH_DECODE_STEP=ops)"
    monkeypatch.setenv("SWEEPBENCH_DECODE_STEP", "fast")
    with pytest.raises(UsageError, match="SWEEPBENCH_DECODE_STEP=fast: choose one of ops, compiled"):
        create_engine("numba-cpu").load(str(tiny_model()), EngineOptions(n_ctx=32))


@njit(nogil=True)
def _take_all(role, n_roles, n, ctr, slot, seen, sync, s8):
    spin.barrier(sync, n_roles)
    st = 0
    while st != 2:
        lo, hi, st = _grab(role, n_roles, n, _static(n, n_roles, s8), ctr, slot, st)
        for i in range(lo, hi):
            seen[i] += 1 + role * 1000
    spin.barrier(sync, n_roles)


@pytest.mark.parametrize("s8", [0, 6, 8])  # eighths handed out in fixed shares: none, the old default, all
@pytest.mark.parametrize("n", [1, 7, 640, 1001])
def test_work_grab_hands_out_every_item_exactly_once_across_threads(n, s8):
    sync = np.zeros(spin.N_FIELDS * spin.LINE, np.int64)
    ctr, seen = np.zeros(4 * spin.LINE, np.int64), np.zeros(n, np.int64)
    _take_all(0, 1, 1, ctr, 2, np.zeros(1, np.int64), sync, s8)  # compile before the threads race
    ctr[:] = 0
    t = threading.Thread(target=_take_all, args=(1, 2, n, ctr, 2, seen, sync, s8))
    t.start()
    _take_all(0, 2, n, ctr, 2, seen, sync, s8)
    t.join()
    assert np.all((seen == 1) | (seen == 1001))  # each item once, by one of the two threads


def test_a_barrier_whose_partner_never_comes_marks_the_step_broken_instead_of_hanging():
    """One thread at a two-thread barrier: after the deadline (~10 s of cycle-counter ticks) it returns and the
    stop field reads BROKEN (the engine then raises); a stop already set makes every barrier return at once."""
    import time

    sync = np.zeros(spin.N_FIELDS * spin.LINE, np.int64)
    spin.barrier(sync, 1)  # compiled outside the timing
    t0 = time.perf_counter()
    spin.barrier(sync, 2)
    waited = time.perf_counter() - t0
    assert sync[spin.F_STOP * spin.LINE] == spin.BROKEN
    assert 0.5 < waited < 120, waited
    sync[spin.F_COUNT * spin.LINE] = 0  # a fresh wait that must notice the stop field, not the deadline
    t0 = time.perf_counter()
    spin.barrier(sync, 2)
    assert time.perf_counter() - t0 < 0.5
    assert sync[spin.F_STOP * spin.LINE] == spin.BROKEN
