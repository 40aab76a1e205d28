"""``--engine reference``: the NumPy twins (``sweepbench.ref_ops``) running the architecture's ``forward()``.

Exact float32 maths (no activation quantization), so it is the yardstick for ik_llama.cpp's F16 tier and for
our own kernels. Dense weights are dequantized to float32 at load; expert matrices when first used, and kept
while they fit a share of the free memory (all of them for the tiny and small presets on a 24 GiB machine).
"""
from __future__ import annotations

from typing import Any

from sweepbench import ref_ops
from sweepbench.config import ModelConfig
from sweepbench.engines.base import EngineOptions, MemoryUse
from sweepbench.engines.forward_engine import ForwardEngine
from sweepbench.gguf_model import GGUFModel, GGUFTensor
from sweepbench.model_stats import kv_type_bytes
from sweepbench.models import weight_kind
from sweepbench.models.tensors import open_model
from sweepbench.quants import dequantize

# Share of MemAvailable that dequantized (float32) experts may take before they are decoded on every use instead.
EXPERT_CACHE_SHARE = 0.4


def mem_available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def _experts_fit(model: GGUFModel) -> bool:
    """Whether float32 copies of all routed experts fit the share of free memory they may take."""
    n_values = sum(t.n_elements for n, t in model.tensors.items() if "_exps." in n)
    return 4 * n_values <= EXPERT_CACHE_SHARE * mem_available_bytes()


class ReferenceEngine(ForwardEngine):
    name = "reference"
    ops = ref_ops
    IGNORED = {
        "repack": "the reference engine keeps float32 weights; nothing to repack",
        "fused_moe": "up and gate are always computed from the same input; the maths is the same either way",
        "flash_attn": "attention is computed exactly (full softmax per query); -fa changes nothing here",
        "n_threads": "NumPy's BLAS chooses its own threads",
    }

    def load(self, model_path: str, options: EngineOptions) -> None:
        self._expert_budget = None  # decided when the first expert tensor is prepared
        super().load(model_path, options)

    def prepare_weight(self, name: str, kind: str, t: GGUFTensor, cfg: ModelConfig) -> Any:
        if kind == "embedding":
            return ref_ops.QuantMatrix(t.raw, t.qtype, t.row_len)  # rows dequantized when looked up
        if kind == "experts":
            return ref_ops.ExpertStack(t.raw, t.qtype, t.row_len, cfg.n_expert, keep=self._keep_experts(cfg))
        return dequantize(t.raw, t.qtype, t.row_len).reshape(t.shape)  # float32 [N, E] or [E]

    def _keep_experts(self, cfg: ModelConfig) -> bool:
        if self._expert_budget is None:
            self._expert_budget = _experts_fit(self.model)
        return self._expert_budget

    def estimate_memory(self, model_path: str, options: EngineOptions) -> MemoryUse:
        """What ``load`` will hold: float32 copies of every dense weight (and of the experts when they fit the
        expert cache), the mapped embedding table, and the KV cache."""
        model, cfg = open_model(model_path)
        keep = _experts_fit(model)
        weights = 0
        for name, t in model.tensors.items():
            kind = weight_kind(name)
            mapped = kind == "embedding" or (kind == "experts" and not keep)
            weights += t.n_bytes if mapped else 4 * t.n_elements
        if "output.weight" not in model.tensors:  # tied head: a float32 copy of the embeddings
            weights += 4 * model.tensors["token_embd.weight"].n_elements
        per_cell = cfg.n_layer * cfg.n_embd_kv * (kv_type_bytes(options.type_k) + kv_type_bytes(options.type_v))
        return MemoryUse(weights_bytes=weights, kv_bytes=int(per_cell * options.n_ctx))

    def allocate_cache(self, cfg: ModelConfig, options: EngineOptions) -> ref_ops.KVCache:
        return ref_ops.KVCache.allocate(cfg.n_layer, options.n_ctx, cfg.n_embd_kv, options.type_k, options.type_v)
