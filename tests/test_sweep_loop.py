"""The sweep loop (sweepbench.bench.loop) against recording fake engines and a fake clock."""
from __future__ import annotations

import pytest
from sweep_fakes import (DECODE_KV_S, DECODE_S, N_VOCAB, PREFILL_KV_S, PREFILL_S, BareEngine, FakeClock,
                         FakeEngine, OtherFakeEngine)

from sweepbench.bench.loop import RowFailed, sweep, warm_up
from sweepbench.bench.plan import SweepPlan
from sweepbench.bench.tokens import window_tokens
from sweepbench.engines.base import EngineOptions

PLAN = SweepPlan(n_ctx=64, n_ubatch=16, repetitions=2, settle=0.0)


def loaded(engine: FakeEngine, plan: SweepPlan = PLAN) -> FakeEngine:
    engine.load("model.gguf", EngineOptions(n_ctx=plan.n_ctx, n_ubatch=plan.n_ubatch))
    engine.calls.clear()
    return engine


def run(plan: SweepPlan = PLAN, engines=None, clock=None, sleeps=None):
    clock = clock or FakeClock()
    engines = engines or [loaded(FakeEngine(clock), plan)]
    sleep = (lambda s: sleeps.append(s)) if sleeps is not None else (lambda s: None)
    return list(sweep(engines, plan, N_VOCAB, clock=clock, sleep=sleep)), engines


def test_each_window_is_tg_then_pp_at_n_kv_with_the_cache_rolled_back():
    plan = SweepPlan(n_ctx=48, n_ubatch=16, n_predict=3, repetitions=1)
    rows, (engine,) = run(plan)
    calls = [c[:2] for c in engine.calls if c[0] != "sync"]
    expected = []
    for n_kv in (0, 16, 32):
        expected += [("truncate", n_kv), ("decode", n_kv), ("decode", n_kv + 1), ("decode", n_kv + 2),
                     ("truncate", n_kv), ("prefill", n_kv)]
    assert calls == expected
    assert engine.n_filled == 48  # every PP stayed in the cache: the context is full at the end
    assert [r.window.n_kv for r in rows] == [0, 16, 32]


def test_repetitions_apply_to_every_row_and_each_is_timed_alone():
    rows, (engine,) = run()
    assert all(len(m.t_tg) == 2 and len(m.t_pp) == 2 for r in rows for m in r.measurements)
    for row in rows:
        (m,) = row.measurements
        n_kv, tg = m.n_kv, m.tg
        tg_s = sum(DECODE_S + DECODE_KV_S * (n_kv + i) for i in range(tg))
        pp_s = m.pp * (PREFILL_S + PREFILL_KV_S * n_kv)
        assert m.t_tg == pytest.approx((tg_s, tg_s)) and m.t_pp == pytest.approx((pp_s, pp_s))
    # every repetition draws its own tokens; the cache is rolled back before each
    pp_calls = [c for c in engine.of("prefill") if c[1] == 16]
    assert len(pp_calls) == 2 and pp_calls[0][2] != pp_calls[1][2]
    assert list(pp_calls[1][2]) == window_tokens(PLAN.seed, 1, "pp", 1, 16, N_VOCAB).tolist()


def test_timers_stop_after_synchronize_and_run_without_the_garbage_collector():
    _, (engine,) = run()
    timed = [c for c in engine.calls if c[0] in ("decode", "prefill")]
    assert timed and not any(c[3] for c in timed)  # gc.isenabled() was False inside every timed call
    for i, call in enumerate(engine.calls):  # a sync closes every prefill and every TG burst
        if call[0] == "prefill":
            assert engine.calls[i + 1] == ("sync",)


def test_stride_skips_measuring_but_still_grows_the_cache_with_the_same_tokens():
    strided = SweepPlan(n_ctx=64, n_ubatch=16, stride=2, settle=0.0)
    rows, (engine,) = run(strided)
    assert [r.window.n_kv for r in rows] == [0, 32] and [r.row for r in rows] == [0, 1]
    assert not [c for c in engine.of("decode") if c[1] in range(16, 32) or c[1] >= 48]  # no TG in skipped windows
    full_rows, (full,) = run(SweepPlan(n_ctx=64, n_ubatch=16, settle=0.0))
    assert [c[2] for c in engine.of("prefill")] == [c[2] for c in full.of("prefill")]  # identical PP tokens


def test_vs_alternates_the_first_engine_and_feeds_both_the_same_tokens():
    clock, sleeps = FakeClock(), []
    a, b = loaded(FakeEngine(clock)), loaded(OtherFakeEngine(clock))
    plan = SweepPlan(n_ctx=64, n_ubatch=16, settle=0.5)
    rows, _ = run(plan, [a, b], clock, sleeps)
    assert [r.order for r in rows] == [("fake", "fake2"), ("fake2", "fake"), ("fake", "fake2"), ("fake2", "fake")]
    assert all([m.engine for m in r.measurements] == ["fake", "fake2"] for r in rows)  # records: primary first
    strip = lambda calls: [c[:3] for c in calls if c[0] in ("decode", "prefill")]  # noqa: E731
    assert strip(a.calls) == strip(b.calls)
    assert sleeps == [0.5] * 4  # one settle pause per row, between the two turns


def test_vs_runs_each_repetition_on_every_engine_before_the_next():
    """Repetitions interleave (A, B, A, B, then B first in the next row): a row's medians compare samples taken
    seconds apart. A settle pause and a wake-up decode come with every change of engine."""
    clock, sleeps = FakeClock(), []
    a, b = loaded(FakeEngine(clock)), loaded(OtherFakeEngine(clock))
    plan = SweepPlan(n_ctx=32, n_ubatch=16, n_predict=2, repetitions=2, settle=0.5)
    log = []
    for e in (a, b):
        for name in ("decode", "prefill"):
            real = getattr(e, name)
            setattr(e, name, lambda *args, _real=real, _e=e, _n=name, **kw: (log.append((_e.name, _n, args[1])),
                                                                            _real(*args, **kw))[1])
    rows, _ = run(plan, [a, b], clock, sleeps)
    assert [r.order for r in rows] == [("fake", "fake2"), ("fake2", "fake")]
    for n_kv, names in ((0, ["fake", "fake2", "fake", "fake2"]), (16, ["fake2", "fake", "fake2", "fake"])):
        turns = []
        for name, op, pos in log:  # this row's calls, collapsed into turns: (engine, [ops])
            if pos < n_kv or pos >= n_kv + 16:
                continue
            if not turns or turns[-1][0] != name:
                turns.append((name, []))
            turns[-1][1].append((op, pos))
        assert [t[0] for t in turns] == names
        wake_tg_pp = [("decode", n_kv), ("decode", n_kv), ("decode", n_kv + 1), ("prefill", n_kv)]
        assert all(ops == wake_tg_pp for _, ops in turns)
    assert sleeps == [0.5] * 6  # between every two turns of a row
    assert all(len(m.t_tg) == 2 and len(m.t_pp) == 2 for r in rows for m in r.measurements)


def test_after_a_pause_an_untimed_decode_wakes_the_engine():
    clock, sleeps = FakeClock(), []
    plan = SweepPlan(n_ctx=48, n_ubatch=16, n_predict=2, delay=1.5)
    rows, (engine,) = run(plan, [loaded(FakeEngine(clock), plan)], clock, sleeps)
    assert sleeps == [1.5, 1.5]  # between rows, not after the last one
    decodes = [c[1] for c in engine.of("decode")]
    assert decodes == [0, 0, 1, 16, 16, 17, 32, 32, 33]  # a wake-up decode at N_KV before each TG
    assert all(m.t_tg[0] == pytest.approx(2 * DECODE_S + DECODE_KV_S * (2 * m.n_kv + 1))
               for r in rows for m in r.measurements)  # ... that no timer includes


def test_a_failing_engine_ends_the_sweep_naming_engine_window_and_phase():
    clock = FakeClock()
    engine = loaded(FakeEngine(clock))
    engine.fail_at = ("TG", 33)
    done = []
    with pytest.raises(RowFailed) as e:
        for row in sweep([engine], PLAN, N_VOCAB, clock=clock):
            done.append(row.window.n_kv)
    assert done == [0, 16]
    assert "engine 'fake' failed in the TG of the window at N_KV = 32" in str(e.value)
    assert "RuntimeError: fake failure in decode" in str(e.value)


def test_memory_is_read_per_row_only_when_asked():
    rows, _ = run(SweepPlan(n_ctx=32, n_ubatch=16, memory=True))
    assert all(m.memory is not None and m.memory.rss_hwm_bytes == 300 * 2**20 for r in rows for m in r.measurements)
    rows, _ = run(SweepPlan(n_ctx=32, n_ubatch=16))
    assert all(m.memory is None for r in rows for m in r.measurements)


def test_warmup_uses_the_engines_own_then_a_full_ubatch_and_leaves_the_cache_empty():
    plan = SweepPlan(n_ctx=64, n_ubatch=16, warmup_batch=True)
    engine = loaded(FakeEngine(FakeClock()), plan)
    warm_up(engine, plan, N_VOCAB, clock=engine.clock)
    assert [c[0] for c in engine.calls] == ["warmup", "truncate", "prefill", "truncate", "sync"]
    assert engine.of("prefill")[0][1] == 0 and len(engine.of("prefill")[0][2]) == 16 and engine.n_filled == 0


def test_warmup_without_an_engine_warmup_decodes_one_token_and_can_be_switched_off():
    engine = loaded(BareEngine(FakeClock()))
    warm_up(engine, PLAN, N_VOCAB, clock=engine.clock)
    assert [c[:2] for c in engine.calls] == [("decode", 0), ("truncate", 0), ("sync",)]
    engine.calls.clear()
    warm_up(engine, SweepPlan(n_ctx=64, n_ubatch=16, warmup=False), N_VOCAB, clock=engine.clock)
    assert engine.calls == [("sync",)]
