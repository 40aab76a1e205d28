"""The engine protocol: everything the sweep loop and the logits/verify commands need from a backend.

An engine owns its prepared weights (dequantized, repacked or uploaded at ``load``), its KV cache and its
scratch buffers. The sweep loop only calls the methods below, so ``--engine ik`` (ik_llama.cpp through ctypes)
and our own engines are driven by exactly the same code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

KV_TYPES = ("f16", "q8_0")


@dataclass(frozen=True)
class EngineOptions:
    n_ctx: int = 512  # KV-cache cells to allocate
    n_batch: int = 2048  # logical batch: prefill is chunked into pieces of at most this many tokens
    n_ubatch: int = 512  # physical batch
    n_threads: int = 0  # 0 = all cores
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: bool = True
    grouped_routing: bool = False  # -ger (bailingmoe2 only)
    repack: bool = True  # -rtr: run-time repacking where the engine supports it
    fused_moe: bool = True  # -fmoe: fused up/gate
    seed: int = 0


@dataclass
class MemoryUse:
    weights_bytes: int = 0
    kv_bytes: int = 0
    scratch_bytes: int = 0
    rss_hwm_bytes: int | None = None
    vram_used_bytes: int | None = None
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    name: str

    def load(self, model_path: str, options: EngineOptions) -> None:
        """Open the model, prepare weights (repack/upload), allocate the KV cache. Compile/warm kernels here."""

    def prefill(self, tokens: np.ndarray, start_pos: int, *, all_logits: bool = False) -> np.ndarray:
        """Process ``tokens`` at positions start_pos.. and keep them in the cache.

        Returns float32 logits of the last token ``[n_vocab]``, or of every token ``[T, n_vocab]`` if all_logits.
        """

    def decode(self, token: int, pos: int) -> np.ndarray:
        """One token at ``pos``; returns float32 logits ``[n_vocab]``."""

    def truncate(self, n_kv: int) -> None:
        """Drop every cache position >= n_kv."""

    def synchronize(self) -> None:
        """Wait for the device (no-op on the CPU) before a timer stops."""

    def memory(self) -> MemoryUse:
        ...

    def describe(self) -> dict:
        """Engine facts for the result file (versions, threads, which options it honours or ignores)."""

    def close(self) -> None:
        ...


class EngineExtras(Protocol):
    """Optional methods the sweep harness (``sweepbench.bench``) calls when an engine has them; it looks them up
    with getattr, so an engine without them is still a complete ``Engine``.

    From ``describe()`` the harness reads ``options`` (what the engine honours, e.g. its resolved ``n_threads``,
    ``n_threads_batch``, ``flash_attn``), ``ignored`` ({EngineOptions field: why}; noted once on stderr for the
    flags the user gave, recorded in the result file) and, if present, ``n_gpu_layers`` (default 0).
    """

    def warmup(self) -> None:
        """Called once right after ``load()``, outside every timer: route one token to every expert (pages in
        memory-mapped weights, uploads, compiles what a first call would) and leave the cache empty. Without it
        the harness decodes one token at position 0 and truncates."""

    def estimate_memory(self, model_path: str, options: EngineOptions) -> MemoryUse:
        """Before ``load()``, for the fit check: host bytes (``weights_bytes + scratch_bytes`` and ``kv_bytes``)
        and device bytes (``vram_used_bytes``) that ``load()`` will take. Without it the harness assumes the
        whole file plus the KV cache of ``options.n_ctx`` cells, in host memory."""
