"""The engine our own backends share: the architecture's ``forward()`` driven over an ops table.

A backend (reference NumPy, Numba CPU, Numba CUDA) subclasses ``ForwardEngine`` and supplies three things:
the ops table, ``prepare_weight`` (dequantize / repack / upload one tensor) and ``allocate_cache``. Everything
else (checks, batching into ubatches, which rows want logits, truncation, the all-experts warmup) is here once,
so every backend behaves identically towards the sweep loop and the verify command.
"""
from __future__ import annotations

import os
import resource
import time
from dataclasses import replace
from typing import Any

import numpy as np

from sweepbench.config import ModelConfig
from sweepbench.engines.base import KV_TYPES, EngineOptions, MemoryUse
from sweepbench.errors import SweepbenchError, UsageError
from sweepbench.gguf_model import GGUFModel, GGUFTensor
from sweepbench.models import forward_for, weight_kind
from sweepbench.models.tensors import open_model


class ForwardEngine:
    name = "forward"
    # EngineOptions fields this backend does not act on -> why (reported once by describe())
    IGNORED: dict[str, str] = {}

    # ---- what a backend supplies ---------------------------------------------------------------------
    ops: Any = None

    def prepare_weight(self, name: str, kind: str, tensor: GGUFTensor, cfg: ModelConfig) -> Any:
        raise NotImplementedError

    def allocate_cache(self, cfg: ModelConfig, options: EngineOptions) -> Any:
        raise NotImplementedError

    def check_config(self, cfg: ModelConfig, options: EngineOptions) -> None:
        """Refuse (UsageError, one line) a model or context this backend cannot run, before any weight loads."""

    def cache_bytes(self) -> int:
        return int(getattr(self.cache, "n_bytes", 0))

    def synchronize(self) -> None:
        """No-op on the CPU; the GPU backend waits for its stream."""

    # ---- shared behaviour ----------------------------------------------------------------------------
    def __init__(self) -> None:
        self.model: GGUFModel | None = None
        self.config: ModelConfig | None = None
        self.options: EngineOptions | None = None
        self.weights: dict[str, Any] = {}
        self.cache: Any = None
        self.n_filled = 0  # cache cells 0..n_filled-1 hold valid positions
        self.load_seconds = 0.0

    def load(self, model_path: str, options: EngineOptions) -> None:
        t0 = time.perf_counter()
        for flag, kv in (("--cache-type-k", options.type_k), ("--cache-type-v", options.type_v)):
            if kv not in KV_TYPES:
                raise UsageError(f"{flag} {kv}: not a supported KV-cache type (choose from: {', '.join(KV_TYPES)})")
        if options.n_ctx < 1 or options.n_ubatch < 1 or options.n_batch < 1:
            raise UsageError("context, batch and ubatch sizes must be at least 1")
        self.model, cfg = open_model(model_path)
        self.check_config(cfg, options)
        self.config = cfg.with_options(grouped_routing=options.grouped_routing)
        self.options = options
        self._forward = forward_for(cfg.arch)
        self.weights = {name: self.prepare_weight(name, weight_kind(name), t, self.config)
                        for name, t in self.model.tensors.items() if runs_on_load(name, self.config)}
        if "output.weight" not in self.weights:  # qwen3moe without an output head: tied to the embeddings
            self.weights["output.weight"] = self.prepare_weight(
                "output.weight", "matrix", self.model.tensor("token_embd.weight"), self.config)
        self.cache = self.allocate_cache(self.config, options)
        self.n_filled = 0
        self.load_seconds = time.perf_counter() - t0

    def fuse_qkv(self, fuse_rows) -> int:
        """Each layer's separate q, k and v (qwen3moe; bailingmoe2 ships them fused) replaced by parts of one
        matrix that ``fuse_rows(matrices)`` stacks in the backend's layout (or declines with None): one product
        instead of three. Returns the number of layers fused."""
        fused = 0
        for il in range(self.config.n_layer):
            names = [f"blk.{il}.attn_{x}.weight" for x in "qkv"]
            if all(n in self.weights for n in names):
                parts = fuse_rows([self.weights[n] for n in names])
                if parts:
                    self.weights.update(zip(names, parts))
                    fused += 1
        return fused

    def warmup(self) -> None:
        """sweep-bench's warmup: one BOS token routed to EVERY expert (pages in / uploads / compiles all of
        them), then an empty cache."""
        every_expert = replace(self.config, n_expert_used=self.config.n_expert)
        self._forward(self.ops, self.weights, every_expert, self.cache, np.array([self.config.bos_token_id]), 0, [0])
        self.synchronize()
        self.n_filled = 0

    def prefill(self, tokens: np.ndarray, start_pos: int, *, all_logits: bool = False) -> np.ndarray:
        tokens = self._check(tokens, start_pos)
        ub = self.options.n_ubatch
        out = []
        for i in range(0, len(tokens), ub):  # one forward per physical batch, as llama_decode splits a batch
            chunk = tokens[i : i + ub]
            last = i + ub >= len(tokens)
            want = list(range(len(chunk))) if all_logits else [len(chunk) - 1]
            logits = self._forward(self.ops, self.weights, self.config, self.cache, chunk, start_pos + i, want)
            self.n_filled = start_pos + i + len(chunk)
            if all_logits or last:
                out.append(self.ops.to_host(logits))
        logits = np.concatenate(out)  # [n_out, V]
        return logits if all_logits else logits[-1]

    def decode(self, token: int, pos: int) -> np.ndarray:
        return self.prefill(np.array([token]), pos)

    def truncate(self, n_kv: int) -> None:
        if n_kv < 0:
            raise SweepbenchError(f"engine '{self.name}': cannot truncate to {n_kv} cells")
        self.n_filled = min(self.n_filled, n_kv)

    def _check(self, tokens, start_pos: int) -> np.ndarray:
        if self.config is None:
            raise SweepbenchError(f"engine '{self.name}': load() a model first")
        tokens = np.asarray(tokens, np.int64).reshape(-1)
        if len(tokens) == 0:
            raise SweepbenchError(f"engine '{self.name}': no tokens to process")
        bad = tokens[(tokens < 0) | (tokens >= self.config.n_vocab)]
        if len(bad):
            raise SweepbenchError(
                f"engine '{self.name}': token id {int(bad[0])} is outside the vocabulary (0..{self.config.n_vocab - 1})")
        if not 0 <= start_pos <= self.n_filled:
            raise SweepbenchError(
                f"engine '{self.name}': position {start_pos} would leave a hole (cache holds 0..{self.n_filled - 1})")
        if start_pos + len(tokens) > self.options.n_ctx:
            raise SweepbenchError(f"engine '{self.name}': positions {start_pos}..{start_pos + len(tokens) - 1} "
                                  f"do not fit the context of {self.options.n_ctx}")
        return tokens

    def memory(self) -> MemoryUse:
        return MemoryUse(
            weights_bytes=sum(_nbytes(w) for w in self.weights.values()),
            kv_bytes=self.cache_bytes(),
            rss_hwm_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux reports KiB
        )

    def describe(self) -> dict:
        o = self.options
        ignored = dict(self.IGNORED)
        if o.grouped_routing and self.config.arch != "bailingmoe2":
            ignored["grouped_routing"] = f"grouped routing applies to bailingmoe2 only, not {self.config.arch}"
        honoured = {k: v for k, v in vars(o).items() if k not in ignored}
        return {"engine": self.name, "load_seconds": round(self.load_seconds, 3), "options": honoured,
                "ignored": ignored, "cpu_count": os.cpu_count()}

    def close(self) -> None:
        self.weights, self.cache, self.model = {}, None, None


def runs_on_load(name: str, cfg: ModelConfig) -> bool:
    """Tensors of MTP (nextn) blocks beyond cfg.n_layer never run: not prepared."""
    return not name.startswith("blk.") or int(name.split(".")[1]) < cfg.n_layer


def _nbytes(w: Any) -> int:
    if isinstance(w, np.ndarray):
        return w.nbytes
    return int(getattr(w, "n_bytes", 0))
