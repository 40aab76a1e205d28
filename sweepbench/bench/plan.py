"""What a sweep does, decided and checked before anything is loaded.

Windows follow llama-sweep-bench (shared/reference/ik_llama_cpp_spec.md §1.2): N_KV = 0, ub, 2ub, ... < n_ctx.
Each measured window first times ``tg`` single-token decodes at positions N_KV, N_KV+1, ... and rolls the cache
back to N_KV, then times one ubatch of ``ub`` tokens at N_KV.. that stays in the cache for the next window.

Deliberate differences from ik_llama.cpp (all stated in ``sweepbench sweep-bench --help``):
* ``-c`` must be a multiple of ``-ub``: ik lets the last PP run past the cache and fails mid-sweep;
* ``-n`` may not exceed ``-ub``: the last window's TG would run past the context the same way;
* ``-c`` is used as given; ik pads its context (to 256 cells with flash attention) and sweeps the padding too;
* repetitions apply to every measured row, not only to N_KV = 0 (ik PR #1176 repeats row 0 only).
"""
from __future__ import annotations

from dataclasses import dataclass

from sweepbench.errors import UsageError

DEFAULT_CTX = 2048  # llama's default (n_ctx_train) is far too long for a benchmark
DEFAULT_UBATCH = 512
DEFAULT_BATCH = 2048
MAX_SEED = 2**64


@dataclass(frozen=True)
class Window:
    index: int  # sweep-bench's i_loop: 0, 1, 2, ...
    n_kv: int  # tokens in the cache before the window
    measured: bool  # False: only grows the cache (--sweep-stride)


@dataclass(frozen=True)
class SweepPlan:
    n_ctx: int = DEFAULT_CTX
    n_ubatch: int = DEFAULT_UBATCH
    n_batch: int = DEFAULT_BATCH
    n_predict: int | None = None  # TG tokens per window; None: ub/4 (ik PR #897)
    repetitions: int = 1
    stride: int = 1
    seed: int = 0
    warmup: bool = True  # the engine's all-experts warmup
    warmup_batch: bool = False  # -wb: one more warmup with a full ubatch
    delay: float = 0.0  # seconds of cool-down between measured rows
    settle: float = 0.25  # --vs: seconds between two engines' turns (see loop.py)
    memory: bool = False  # RSS / VRAM columns

    def __post_init__(self) -> None:
        _check(self)

    @property
    def pp(self) -> int:
        return self.n_ubatch

    @property
    def tg(self) -> int:
        return self.n_predict if self.n_predict is not None else max(1, self.n_ubatch // 4)

    def windows(self) -> list[Window]:
        starts = range(0, self.n_ctx, self.n_ubatch)
        return [Window(i, n_kv, i % self.stride == 0) for i, n_kv in enumerate(starts)]

    def measured_windows(self) -> list[Window]:
        return [w for w in self.windows() if w.measured]


def _at_least(value, lo, flag: str) -> None:
    if value < lo:
        raise UsageError(f"{flag} {value}: must be at least {lo}")


def _check(p: SweepPlan) -> None:
    _at_least(p.n_ctx, 1, "-c")
    _at_least(p.n_ubatch, 1, "-ub")
    _at_least(p.n_batch, 1, "-b")
    if p.n_predict is not None:
        _at_least(p.n_predict, 1, "-n")
    _at_least(p.repetitions, 1, "-r")
    _at_least(p.stride, 1, "--sweep-stride")
    _at_least(p.delay, 0, "--delay")
    _at_least(p.settle, 0, "--vs-settle")
    if not 0 <= p.seed < MAX_SEED:
        raise UsageError(f"--seed {p.seed}: must be in [0, 2^64)")
    if p.n_ctx % p.n_ubatch:
        lower, upper = p.n_ctx // p.n_ubatch * p.n_ubatch, (p.n_ctx // p.n_ubatch + 1) * p.n_ubatch
        hint = f"-c {lower} or -c {upper}" if lower else f"-c {upper} or a smaller -ub"
        raise UsageError(
            f"-c {p.n_ctx} is not a multiple of -ub {p.n_ubatch}: windows start at N_KV = 0, {p.n_ubatch}, ... and "
            f"the last PP would end at {upper}, past the context (ik_llama.cpp fails there mid-sweep); use {hint}")
    if p.tg > p.n_ubatch:
        last = p.n_ctx - p.n_ubatch
        raise UsageError(
            f"-n {p.tg} exceeds -ub {p.n_ubatch}: the last window's TG (positions {last}..{last + p.tg - 1}) would run "
            f"past -c {p.n_ctx}; use -n {p.n_ubatch} or less")
