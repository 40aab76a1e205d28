"""Shapes of the synthetic models ``sweepbench synth`` writes (recipes in shared/reference/anchors.md).

A preset names a model family size; some exist for both architectures (``tiny``, ``small``), the full-size ones
copy one published model. Only shapes live here; weights and quant types are chosen in ``sweepbench.synth``.
"""
from __future__ import annotations

from dataclasses import dataclass

from gguf import GGMLQuantizationType as Q

from sweepbench.errors import UsageError


@dataclass(frozen=True)
class SynthShape:
    arch: str  # "qwen3moe" | "bailingmoe2"
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    n_expert: int
    n_expert_used: int
    n_ff_exp: int
    rope_base: float
    n_ctx_train: int
    n_rot: int = 0  # 0: the whole head (qwen3moe)
    # bailingmoe2 only
    n_dense_lead: int = 0
    n_ff_dense: int = 0
    n_expert_shared: int = 0
    n_ff_shexp: int = 0  # width of ONE shared expert
    n_expert_groups: int = 1
    n_group_used: int = 1
    w_scale: float = 1.0
    rms_eps: float = 1e-6
    # default quant types when the user names none
    expert_type: Q = Q.Q8_0
    dense_type: Q = Q.Q8_0


# The tiny shapes keep every row length (n_embd, n_head*head_dim, ffn widths) a multiple of 256 so that any
# K-quant or IQ4_XS can be asked for, while the file stays a few MB.
_TINY = dict(n_embd=256, n_head=4, n_head_kv=2, head_dim=64, n_vocab=512, n_ff_exp=256, n_ctx_train=4096)
_SMALL = dict(n_layer=12, n_embd=2048, n_head_kv=4, head_dim=128, n_vocab=32768, n_expert=32, n_expert_used=8)

PRESETS: dict[str, dict[str, SynthShape]] = {
    "tiny": {
        "qwen3moe": SynthShape(
            arch="qwen3moe", n_layer=2, n_expert=8, n_expert_used=2, rope_base=1e6, **_TINY
        ),
        "bailingmoe2": SynthShape(
            arch="bailingmoe2", n_layer=3, n_expert=8, n_expert_used=2, rope_base=6e5, n_rot=32,
            n_dense_lead=1, n_ff_dense=256, n_expert_shared=1, n_ff_shexp=256,
            n_expert_groups=4, n_group_used=2, w_scale=2.5, **_TINY,
        ),
    },
    "small": {
        "qwen3moe": SynthShape(
            arch="qwen3moe", n_head=32, n_ff_exp=768, rope_base=1e6, n_ctx_train=40960, **_SMALL
        ),
        "bailingmoe2": SynthShape(
            arch="bailingmoe2", n_head=16, n_ff_exp=512, rope_base=6e5, n_ctx_train=32768, n_rot=64,
            n_dense_lead=1, n_ff_dense=5120, n_expert_shared=1, n_ff_shexp=512,
            n_expert_groups=8, n_group_used=4, w_scale=2.5, **_SMALL,
        ),
    },
    "qwen3-30b-a3b": {
        "qwen3moe": SynthShape(
            arch="qwen3moe", n_layer=48, n_embd=2048, n_head=32, n_head_kv=4, head_dim=128, n_vocab=151936,
            n_expert=128, n_expert_used=8, n_ff_exp=768, rope_base=1e6, n_ctx_train=40960, expert_type=Q.Q4_K,
        ),
    },
    "ling-mini-2.0": {
        "bailingmoe2": SynthShape(
            arch="bailingmoe2", n_layer=20, n_embd=2048, n_head=16, n_head_kv=4, head_dim=128, n_rot=64,
            n_vocab=157184, n_expert=256, n_expert_used=8, n_ff_exp=512, rope_base=6e5, n_ctx_train=32768,
            n_dense_lead=1, n_ff_dense=5120, n_expert_shared=1, n_ff_shexp=512, n_expert_groups=8,
            n_group_used=4, w_scale=2.5, expert_type=Q.Q4_K,
        ),
    },
}


def resolve_preset(name: str, arch: str | None = None) -> SynthShape:
    """The shape of preset ``name`` for ``arch`` (default: the preset's first architecture)."""
    variants = PRESETS.get(name)
    if variants is None:
        raise UsageError(f"unknown preset '{name}' (choose from: {', '.join(PRESETS)})")
    if arch is None:
        return next(iter(variants.values()))
    if arch not in variants:
        raise UsageError(f"preset '{name}' has no '{arch}' variant (available: {', '.join(variants)})")
    return variants[arch]
