"""Engines and a clock for the sweep-harness tests: they follow the Engine protocol, record every call, check the
cache discipline a real engine would enforce (no holes, nothing past n_ctx), and take time from a FakeClock so
timings are exact. Register one for the CLI with ``monkeypatch.setitem(ENGINES, "fake", "sweep_fakes:FakeEngine")``.
"""
from __future__ import annotations

import gc
import time

import numpy as np

from sweepbench.engines.base import EngineOptions, MemoryUse

N_VOCAB = 512  # the tiny preset's vocabulary
DECODE_S, DECODE_KV_S = 0.010, 0.0001  # fake seconds: per decode, plus per cached position attended
PREFILL_S, PREFILL_KV_S = 0.001, 0.00001  # per token, plus per token and cached position


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeEngine:
    name = "fake"
    instances: list["FakeEngine"] = []  # every engine the CLI created, for inspection
    fail_at: tuple[str, int] | None = None  # ("TG" | "PP", n_kv): raise there

    def __init__(self, clock: FakeClock | None = None, name: str | None = None) -> None:
        self.name = name or type(self).name
        self.clock = clock
        self.calls: list[tuple] = []
        self.n_filled = 0
        self.options: EngineOptions | None = None
        FakeEngine.instances.append(self)

    def _spend(self, seconds: float) -> None:
        if self.clock is not None:
            self.clock.advance(seconds)
        else:
            time.sleep(seconds / 100)  # real runs (through the CLI): short but measurable

    def _check(self, start_pos: int, n: int) -> None:
        assert self.options is not None, "load() first"
        assert 0 <= start_pos <= self.n_filled, f"hole: position {start_pos} with {self.n_filled} cached"
        assert start_pos + n <= self.options.n_ctx, f"positions up to {start_pos + n - 1} past n_ctx"

    def load(self, model_path: str, options: EngineOptions) -> None:
        self.options = options
        self.calls.append(("load", model_path))

    def warmup(self) -> None:
        self.calls.append(("warmup",))

    def prefill(self, tokens, start_pos: int, *, all_logits: bool = False) -> np.ndarray:
        tokens = [int(t) for t in np.asarray(tokens).reshape(-1)]
        self._check(start_pos, len(tokens))
        if self.fail_at == ("PP", start_pos):
            raise RuntimeError("fake failure in prefill")
        self.calls.append(("prefill", start_pos, tuple(tokens), gc.isenabled()))
        self.n_filled = start_pos + len(tokens)
        self._spend(len(tokens) * (PREFILL_S + PREFILL_KV_S * start_pos))
        return np.zeros(N_VOCAB, np.float32)

    def decode(self, token: int, pos: int) -> np.ndarray:
        self._check(pos, 1)
        if self.fail_at == ("TG", pos):
            raise RuntimeError("fake failure in decode")
        assert isinstance(token, int) and 0 <= token < N_VOCAB
        self.calls.append(("decode", pos, token, gc.isenabled()))
        self.n_filled = pos + 1
        self._spend(DECODE_S + DECODE_KV_S * pos)
        return np.zeros(N_VOCAB, np.float32)

    def truncate(self, n_kv: int) -> None:
        self.calls.append(("truncate", n_kv))
        self.n_filled = min(self.n_filled, n_kv)

    def synchronize(self) -> None:
        self.calls.append(("sync",))

    def memory(self) -> MemoryUse:
        return MemoryUse(weights_bytes=1, kv_bytes=2, rss_hwm_bytes=300 * 2**20, vram_used_bytes=None)

    def describe(self) -> dict:
        return {"engine": self.name, "options": {"n_threads": 3, "n_threads_batch": 3, "flash_attn": True},
                "ignored": {"repack": "fake engines keep their weights as they are"}}

    def close(self) -> None:
        self.calls.append(("close",))

    # ---- views for the tests -------------------------------------------------------------------------------------
    def of(self, kind: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == kind]


class OtherFakeEngine(FakeEngine):
    name = "fake2"


class FailingFakeEngine(FakeEngine):
    """Fails in the PP of the window at N_KV = 32."""

    fail_at = ("PP", 32)


class BareEngine(FakeEngine):
    """An engine without the optional warmup()."""

    warmup = None  # type: ignore[assignment]
