"""Warmup and the timed windows, driving engines only through the ``engines.base.Engine`` protocol.

What a timer covers: from just before the first ``decode`` (TG) or the ``prefill`` (PP) until ``synchronize()``
returns after the last one, so device work is complete and the logits are on the host. Token generation and the
cache roll-back (``truncate``) happen before the timer starts (ik times both, at microseconds; keeping them out
makes the figure purely the engine's). Python's garbage collector is paused inside a timer so a collection of
unrelated objects never lands in a sample. Every repetition is timed on its own: the row keeps all samples.

With several engines (``--vs``) each repetition of a window (its TG, then its PP) runs on every engine before the
next repetition starts, and the engine that goes first alternates from row to row, so slow drifts of the machine
(heat, other load, the host's memory placement: benchmarks/NOTES.md) hit both alike and a row's medians compare
samples taken seconds apart, not one engine's repetitions against the other's a window later.
Between two engines' turns the loop pauses ``plan.settle`` seconds: thread pools spin for a while after their
last job (OpenBLAS under NumPy, ggml's), and on a small machine the spinning threads of the engine that just ran
slowed the next one's TG by up to 100x (measured here: reference then ik on 2 cores). The other way round, an
engine whose threads have gone to sleep (after that pause, or after ``--delay``) pays a wake-up of ~10 ms on its
next call (ik on 2 cores), which sweep-bench never sees because its windows follow each other without a break;
so after a pause each engine first makes one untimed decode at N_KV (rolled back at once).
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from sweepbench.bench.plan import SweepPlan, Window
from sweepbench.bench.tokens import window_tokens
from sweepbench.engines.base import Engine, MemoryUse
from sweepbench.errors import OUT_OF_GPU_MEMORY, SweepbenchError, is_gpu_out_of_memory

Clock = Callable[[], float]


@dataclass(frozen=True)
class Measurement:
    """One engine, one window: seconds of every repetition."""

    engine: str
    window: int
    n_kv: int
    pp: int
    tg: int
    t_pp: tuple[float, ...]
    t_tg: tuple[float, ...]
    memory: MemoryUse | None = None


@dataclass(frozen=True)
class RowResult:
    """One measured window: a Measurement per engine, in the order the engines were given (primary first)."""

    row: int  # 0, 1, 2, ... over measured windows
    window: Window
    order: tuple[str, ...]  # the order the engines actually ran in
    measurements: tuple[Measurement, ...]


class RowFailed(SweepbenchError):
    """An engine failed inside a window; the rows before it stand."""

    def __init__(self, engine: str, window: Window, phase: str, cause: BaseException):
        detail = str(cause) if isinstance(cause, SweepbenchError) else f"{type(cause).__name__}: {cause}"
        if is_gpu_out_of_memory(cause):
            detail = OUT_OF_GPU_MEMORY
        super().__init__(f"engine '{engine}' failed in the {phase} of the window at N_KV = {window.n_kv}: {detail}")
        self.engine, self.window, self.phase = engine, window, phase


def _timed(engine: Engine, work: Callable[[], object], clock: Clock) -> float:
    collecting = gc.isenabled()
    gc.disable()
    try:
        start = clock()
        work()
        engine.synchronize()
        return clock() - start
    finally:
        if collecting:
            gc.enable()


def warm_up(engine: Engine, plan: SweepPlan, n_vocab: int, clock: Clock = time.perf_counter) -> float:
    """The warmups (never inside a measured row); returns their seconds. The cache is empty afterwards.

    Default: the engine's own ``warmup()`` (ik and our engines route one BOS token to every expert, which pages in
    or uploads every expert), or one decode at position 0 for an engine without it. ``-wb`` adds a full ubatch at
    positions 0..ub-1, so the first PP row does not pay for first-use costs of the batched path."""
    start = clock()
    if plan.warmup:
        if callable(getattr(engine, "warmup", None)):
            engine.warmup()
        else:
            engine.decode(int(window_tokens(plan.seed, 0, "warmup", 1, 1, n_vocab)[0]), 0)
        engine.truncate(0)
    if plan.warmup_batch:
        engine.prefill(window_tokens(plan.seed, 0, "warmup", 0, plan.pp, n_vocab), 0)
        engine.truncate(0)
    engine.synchronize()
    return clock() - start


class _Phase:
    """Which phase an engine is in: for the live view, and for the message when it fails."""

    def __init__(self, engine: str, window: Window, on_phase: Callable[[str, Window, str], None]):
        self.engine, self.window, self.on_phase = engine, window, on_phase
        self.current = "TG" if window.measured else "PP"

    def __call__(self, phase: str) -> None:
        self.current = phase
        self.on_phase(self.engine, self.window, phase)


def _decode_each(engine: Engine, tokens, n_kv: int) -> None:
    for i, token in enumerate(tokens.tolist()):  # logits are discarded, as sweep-bench does
        engine.decode(token, n_kv + i)


def _run_repetition(engine: Engine, plan: SweepPlan, w: Window, rep: int, n_vocab: int, clock: Clock,
                    phase: _Phase, woken: bool) -> tuple[float | None, float]:
    """One repetition of window w on one engine: (TG seconds or None where the window is not measured, PP seconds)."""
    t_tg = None
    if w.measured:
        phase("TG")
        if woken:  # wake the engine's threads outside the timer (see the module docstring)
            engine.truncate(w.n_kv)
            engine.decode(int(window_tokens(plan.seed, w.index, "warmup", 0, 1, n_vocab)[0]), w.n_kv)
        tokens = window_tokens(plan.seed, w.index, "tg", rep, plan.tg, n_vocab)
        engine.truncate(w.n_kv)
        t_tg = _timed(engine, lambda: _decode_each(engine, tokens, w.n_kv), clock)
    phase("PP")
    tokens = window_tokens(plan.seed, w.index, "pp", rep, plan.pp, n_vocab)
    engine.truncate(w.n_kv)  # drops the TG tokens, or the previous repetition's PP
    return t_tg, _timed(engine, lambda: engine.prefill(tokens, w.n_kv), clock)


def sweep(engines: Sequence[Engine], plan: SweepPlan, n_vocab: int, clock: Clock = time.perf_counter,
          sleep: Callable[[float], None] = time.sleep,
          on_phase: Callable[[str, Window, str], None] | None = None) -> Iterator[RowResult]:
    """Run every window on every engine (loaded, warmed up, empty cache); yield each measured row when done."""
    on_phase = on_phase or (lambda engine, window, phase: None)
    row, n_rows = 0, len(plan.measured_windows())
    paused = len(engines) > 1 or plan.delay > 0  # engines sit idle between their turns
    for w in plan.windows():
        order = list(engines) if row % 2 == 0 else list(reversed(engines))
        t_tg: dict[str, list[float]] = {e.name: [] for e in order}
        t_pp: dict[str, list[float]] = {e.name: [] for e in order}
        previous = None  # the engine of the previous turn in this row
        for rep in range(plan.repetitions if w.measured else 1):
            for engine in order:
                if previous is not None and previous is not engine:
                    sleep(plan.settle)  # let the previous engine's threads go idle (outside every timer)
                phase = _Phase(engine.name, w, on_phase)
                woken = paused and w.measured and previous is not engine
                try:
                    tg, pp = _run_repetition(engine, plan, w, rep, n_vocab, clock, phase, woken)
                except Exception as e:  # noqa: BLE001 - any engine failure ends the sweep with the rows so far
                    raise RowFailed(engine.name, w, phase.current, e) from e
                previous = engine
                if tg is not None:
                    t_tg[engine.name].append(tg)
                t_pp[engine.name].append(pp)
        if not w.measured:
            continue
        done = [Measurement(e.name, w.index, w.n_kv, plan.pp, plan.tg, tuple(t_pp[e.name]), tuple(t_tg[e.name]),
                            e.memory() if plan.memory else None) for e in engines]
        yield RowResult(row, w, tuple(e.name for e in order), tuple(done))
        row += 1
        if plan.delay and row < n_rows:
            sleep(plan.delay)  # cool-down, outside every timer
