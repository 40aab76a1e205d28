"""``--engine reference``: the NumPy twins (``sweepbench.ref_ops``) running the architecture's ``forward()``.

Exact float32 maths (no activation quantization), so it is the yardstick for ik_llama.cpp's F16 tier and for
our own kernels. Dense weights are dequantized to float32 at load; expert matrices when first used, and kept
while they fit a share of the free memory (all of them for the tiny and small presets on a 24 GiB machine).
"""
from __future__ import annotations

from typing import Any

from sweepbench import ref_ops
from sweepbench.config import ModelConfig
from sweepbench.engines.base import EngineOptions
from sweepbench.engines.forward_engine import ForwardEngine
from sweepbench.gguf_model import GGUFTensor
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
            n_values = sum(t.n_elements for n, t in self.model.tensors.items() if "_exps." in n)
            self._expert_budget = 4 * n_values <= EXPERT_CACHE_SHARE * mem_available_bytes()
        return self._expert_budget

    def allocate_cache(self, cfg: ModelConfig, options: EngineOptions) -> ref_ops.KVCache:
        return ref_ops.KVCache.allocate(cfg.n_layer, options.n_ctx, cfg.n_embd_kv, options.type_k, options.type_v)
