"""Window arithmetic and the seeded token streams of a sweep (sweepbench.bench.plan, sweepbench.bench.tokens)."""
from __future__ import annotations

import numpy as np
import pytest

from sweepbench.bench.plan import SweepPlan
from sweepbench.bench.tokens import window_tokens
from sweepbench.errors import UsageError


def test_windows_start_at_every_ubatch_below_the_context():
    plan = SweepPlan(n_ctx=64, n_ubatch=16)
    assert [(w.index, w.n_kv, w.measured) for w in plan.windows()] == [
        (0, 0, True), (1, 16, True), (2, 32, True), (3, 48, True)]
    assert (plan.pp, plan.tg) == (16, 4)  # TG defaults to ub / 4, as ik PR #897


def test_the_last_window_ends_exactly_at_the_context():
    plan = SweepPlan(n_ctx=8704, n_ubatch=512)  # the README's ik command: 17 windows, last N_KV 8192
    windows = plan.windows()
    assert len(windows) == 17 and windows[-1].n_kv == 8192 and windows[-1].n_kv + plan.pp == plan.n_ctx


def test_stride_measures_every_nth_window_but_keeps_them_all():
    plan = SweepPlan(n_ctx=112, n_ubatch=16, stride=3)
    assert [w.n_kv for w in plan.windows()] == [0, 16, 32, 48, 64, 80, 96]
    assert [w.n_kv for w in plan.measured_windows()] == [0, 48, 96]


@pytest.mark.parametrize("ub, tg", [(512, 128), (16, 4), (3, 1), (1, 1)])
def test_default_tg_is_a_quarter_ubatch_and_never_zero(ub, tg):
    assert SweepPlan(n_ctx=ub * 2, n_ubatch=ub).tg == tg


@pytest.mark.parametrize("kwargs, needles", [
    (dict(n_ctx=100, n_ubatch=16), ["-c 100 is not a multiple of -ub 16", "end at 112", "use -c 96 or -c 112"]),
    (dict(n_ctx=8, n_ubatch=16), ["-c 8 is not a multiple of -ub 16", "use -c 16 or a smaller -ub"]),
    (dict(n_ctx=64, n_ubatch=16, n_predict=20), ["-n 20 exceeds -ub 16", "positions 48..67", "past -c 64"]),
    (dict(n_ctx=0), ["-c 0: must be at least 1"]),
    (dict(n_ubatch=0), ["-ub 0: must be at least 1"]),
    (dict(n_batch=0), ["-b 0"]),
    (dict(n_predict=0), ["-n 0"]),
    (dict(repetitions=0), ["-r 0"]),
    (dict(stride=0), ["--sweep-stride 0"]),
    (dict(seed=-1), ["--seed -1"]),
    (dict(seed=2**64), ["--seed"]),
    (dict(delay=-0.5), ["--delay -0.5"]),
    (dict(settle=-1.0), ["--vs-settle -1.0"]),
])
def test_impossible_plans_are_usage_errors_that_say_why(kwargs, needles):
    with pytest.raises(UsageError) as e:
        SweepPlan(**kwargs)
    assert e.value.exit_code == 2
    for needle in needles:
        assert needle in str(e.value)


def test_tg_equal_to_ub_still_fits():
    plan = SweepPlan(n_ctx=64, n_ubatch=16, n_predict=16)
    last = plan.windows()[-1]
    assert last.n_kv + plan.tg == plan.n_ctx


# ---- tokens -----------------------------------------------------------------------------------------------------

def test_token_streams_are_fixed_by_seed_window_phase_and_repetition():
    # pinned values: a change of the stream definition changes every published figure's routing
    assert window_tokens(0, 0, "pp", 0, 8, 512).tolist() == [455, 230, 12, 200, 392, 295, 310, 148]
    assert window_tokens(7, 3, "tg", 2, 6, 151936).tolist() == [17258, 117349, 11078, 85910, 127783, 129307]
    base = window_tokens(1, 2, "pp", 0, 64, 32768)
    np.testing.assert_array_equal(base, window_tokens(1, 2, "pp", 0, 64, 32768))
    for other in (window_tokens(2, 2, "pp", 0, 64, 32768), window_tokens(1, 3, "pp", 0, 64, 32768),
                  window_tokens(1, 2, "tg", 0, 64, 32768), window_tokens(1, 2, "pp", 1, 64, 32768)):
        assert not np.array_equal(base, other)
    assert base.dtype == np.int32


def test_tokens_are_uniform_over_the_whole_vocabulary():
    n_vocab, n = 64, 64_000
    tokens = np.concatenate([window_tokens(0, w, "pp", 0, n // 16, n_vocab) for w in range(16)])
    counts = np.bincount(tokens, minlength=n_vocab)
    assert tokens.min() == 0 and tokens.max() == n_vocab - 1
    expected = n / n_vocab
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 120  # 63 degrees of freedom: p < 1e-5 above this
