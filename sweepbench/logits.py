"""Logits of every position of a token sequence, from any engine: what ``sweepbench logits`` saves."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sweepbench.engines import create_engine
from sweepbench.engines.base import EngineOptions
from sweepbench.errors import SweepbenchError, UsageError
from sweepbench.models.tensors import open_model


def compute_logits(model_path, tokens, engine_name: str = "reference", *, grouped_routing: bool = False,
                   type_k: str = "f16", type_v: str = "f16", n_threads: int = 0) -> np.ndarray:
    """float32 [n_tokens, n_vocab]: one prefill of ``tokens`` at positions 0.., logits of every position."""
    _, cfg = open_model(model_path)
    tokens = np.asarray(tokens, np.int64).reshape(-1)
    if tokens.min() < 0 or tokens.max() >= cfg.n_vocab:
        raise UsageError(f"--tokens: ids must be in 0..{cfg.n_vocab - 1} for this model")
    engine = create_engine(engine_name)
    options = EngineOptions(n_ctx=len(tokens), n_batch=max(len(tokens), 1), n_threads=n_threads, type_k=type_k,
                            type_v=type_v, grouped_routing=grouped_routing)
    engine.load(str(model_path), options)
    try:
        if hasattr(engine, "warmup"):
            engine.warmup()
        return np.ascontiguousarray(engine.prefill(tokens, 0, all_logits=True), np.float32)
    finally:
        engine.close()


def save_logits(path: Path, values: np.ndarray) -> None:
    try:
        np.save(path, values, allow_pickle=False)
    except OSError as e:
        raise SweepbenchError(f"{path}: cannot write: {e.strerror or e}") from None
