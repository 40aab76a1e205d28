"""The system and end records of a sweep's JSONL (rows are built by ``bench.rows``).

The system record is written once the engines are loaded and warmed up, so it holds what they report about
themselves (threads, build, which options they ignore) and their load and warmup seconds, which are reported
here once and never inside a measured row. ``plot`` and ``compare`` read ``engine``, ``label``, ``host`` (cpu,
gpu), ``model`` (header_sha256, name, arch, ftype, quant_mix, n_params) and ``options`` from it.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from gguf import LlamaFileType

from sweepbench.bench.plan import SweepPlan
from sweepbench.bench.system import host_facts, software_facts, tool_facts
from sweepbench.bench.tokens import TOKEN_SOURCE
from sweepbench.config import ModelConfig
from sweepbench.gguf_model import GGUFModel
from sweepbench.model_stats import ModelStats, kv_bytes_per_token

SCHEMA = 1
TIMING = ("wall seconds per repetition, from the first decode/prefill call until synchronize() returns; "
          "tokens drawn and cache rolled back before the timer; median over repetitions; S = tokens / median")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _ftype(model: GGUFModel) -> str | None:
    value = model.get("general.file_type")
    try:
        return LlamaFileType(int(value)).name
    except (TypeError, ValueError):
        return None if value is None else str(value)


def model_facts(path: Path, builtin: bool, model: GGUFModel, cfg: ModelConfig, stats: ModelStats,
                type_k: str, type_v: str) -> dict:
    return {
        "path": str(path), "name": model.get("general.name"), "builtin": builtin,
        "files": [str(f) for f in model.files], "size_bytes": model.size_bytes,
        "header_sha256": model.header_sha256, "arch": cfg.arch, "ftype": _ftype(model),
        "quant_mix": model.type_histogram(), "quant_bytes": model.type_bytes(),
        "n_params": stats.total_params, "n_params_active": stats.active_params,
        "n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "n_vocab": cfg.n_vocab, "n_ctx_train": cfg.n_ctx_train,
        "n_expert": cfg.n_expert, "n_expert_used": cfg.n_expert_used,
        "weight_bytes_per_token": stats.weight_bytes_per_token, "head_bytes": stats.head_bytes,
        "kv_bytes_per_token": kv_bytes_per_token(stats, type_k, type_v),
    }


def sweep_options(plan: SweepPlan, engine_options: dict, vs: str | None) -> dict:
    """Every option that shaped the sweep (``compare`` lists the ones that differ between two runs)."""
    return {
        "n_ctx": plan.n_ctx, "n_batch": plan.n_batch, "n_ubatch": plan.n_ubatch, "pp": plan.pp, "tg": plan.tg,
        "repetitions": plan.repetitions, "sweep_stride": plan.stride, "seed": plan.seed, "warmup": plan.warmup,
        "warmup_batch": plan.warmup_batch, "delay": plan.delay, "memory": plan.memory, "vs": vs,
        "vs_settle": plan.settle if vs else None,
        "windows": len(plan.windows()), "rows": len(plan.measured_windows()), **engine_options,
    }


def system_record(*, argv: list[str] | None, label: str | None, engines: list[str], engine_info: dict,
                  notes: list[str], devices: list[dict] | None, model: dict, options: dict) -> dict:
    record = {"type": "system", "schema": SCHEMA, **tool_facts(argv), "time_utc": utc_now()}
    if label:
        record["label"] = label
    record.update(
        engine=engines[0], engines=engines, engine_info=engine_info,
        ignored={name: info.get("ignored", {}) for name, info in engine_info.items()},
        notes=notes, host=host_facts(devices), software=software_facts(), model=model, options=options,
        timing=TIMING, token_source=TOKEN_SOURCE,
    )
    return record


def end_record(status: str, message: str, rows: int, planned: int, started: float) -> dict:
    return {"type": "end", "status": status, "message": message, "rows": rows, "rows_planned": planned,
            "elapsed_s": round(time.perf_counter() - started, 3), "time_utc": utc_now()}
