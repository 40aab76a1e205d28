"""Repetition samples -> the row records of our JSONL: ik's keys first, then medians, spread and roofline figures.

Statistic: the median over repetitions of the seconds per phase; S = tokens / median seconds (with one repetition
exactly sweep-bench's figure). The spread is the range of the per-repetition speeds (``speed_*_min``/``_max``) and
every sample is kept (``samples_t_*`` seconds, ``samples_speed_*`` tokens/s: what ``compare`` tests).

Roofline figures, from the tensors actually in the file (``sweepbench.model_stats``):
* TG: bytes read per generated token = active weights (non-expert weights, k/n of the experts, the output head)
  + the K/V rows attended, at the window's mean depth N_KV + (TG-1)/2; achieved GB/s = that x S_TG.
* PP: FLOPs of the window (2 x active matmul parameters per token, the head for the one token with logits, and
  attention over N_KV + t keys); achieved GFLOP/s = FLOPs / T_PP.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from sweepbench.bench.loop import Measurement
from sweepbench.bench.memory import rss_hwm_bytes
from sweepbench.model_stats import ModelStats, pp_flops, tg_bytes_per_token
from sweepbench.results.parsers import IK_PARAM_KEYS  # the reader's list: what we write is what it reads back

MIB = 2**20


@dataclass(frozen=True)
class EngineFacts:
    """What ik's JSONL repeats on every row, as one engine runs it."""

    name: str
    n_kv_max: int
    n_batch: int
    n_ubatch: int
    flash_attn: int
    n_gpu_layers: int
    n_threads: int
    n_threads_batch: int

    def params(self) -> dict:
        return {k: getattr(self, k) for k in IK_PARAM_KEYS}


@dataclass(frozen=True)
class Roofline:
    stats: ModelStats
    type_k: str = "f16"
    type_v: str = "f16"

    def tg_bytes_per_token(self, n_kv: int, tg: int) -> float:
        return tg_bytes_per_token(self.stats, n_kv + (tg - 1) / 2, self.type_k, self.type_v)

    def pp_flops(self, pp: int, n_kv: int) -> float:
        return pp_flops(self.stats, pp, n_kv)


def _phase(tokens: int, seconds: tuple[float, ...], name: str) -> dict:
    median = statistics.median(seconds)
    speeds = [tokens / s for s in seconds]
    return {f"t_{name}": median, f"speed_{name}": tokens / median, f"samples_t_{name}": list(seconds),
            f"samples_speed_{name}": speeds, f"speed_{name}_min": min(speeds), f"speed_{name}_max": max(speeds)}


def row_record(m: Measurement, facts: EngineFacts, roofline: Roofline, memory: bool = False) -> dict:
    pp, tg = _phase(m.pp, m.t_pp, "pp"), _phase(m.tg, m.t_tg, "tg")
    record = {"type": "row", "engine": m.engine, **facts.params(), "pp": m.pp, "tg": m.tg, "n_kv": m.n_kv,
              "t_pp": pp.pop("t_pp"), "speed_pp": pp.pop("speed_pp"),
              "t_tg": tg.pop("t_tg"), "speed_tg": tg.pop("speed_tg")}
    if memory:
        rss = m.memory.rss_hwm_bytes if m.memory and m.memory.rss_hwm_bytes is not None else rss_hwm_bytes()
        vram = m.memory.vram_used_bytes if m.memory else None
        record["rss_hwm_mib"] = rss / MIB
        record["vram_delta_mib"] = None if vram is None else vram / MIB
    record.update(window=m.window, reps=len(m.t_pp), **pp, **tg)
    flops, bytes_per_token = roofline.pp_flops(m.pp, m.n_kv), roofline.tg_bytes_per_token(m.n_kv, m.tg)
    record.update(pp_flops=flops, pp_gflops=flops / record["t_pp"] / 1e9,
                  tg_bytes_per_token=bytes_per_token, tg_gbps=bytes_per_token * record["speed_tg"] / 1e9)
    return record


def ratio_record(ours: dict, theirs: dict) -> dict:
    """``--vs``: ours / theirs per metric (above 1: ours is faster)."""
    return {"type": "ratio", "n_kv": ours["n_kv"], "pp": ours["pp"], "tg": ours["tg"], "engine": ours["engine"],
            "peer": theirs["engine"], "ratio_pp": ours["speed_pp"] / theirs["speed_pp"],
            "ratio_tg": ours["speed_tg"] / theirs["speed_tg"]}
