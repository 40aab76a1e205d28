"""Model hyper-parameters as a frozen dataclass, read from GGUF metadata (keys as ik_llama.cpp reads them).

Supported architectures: ``qwen3moe`` and ``bailingmoe2``. Every value is checked for sanity so that a
corrupt or hostile file fails here with one line instead of allocating 2^31 experts later.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sweepbench.errors import SweepbenchError

SUPPORTED_ARCHS = ("qwen3moe", "bailingmoe2")

# Loose upper bounds: larger than any published model, small enough to reject corrupt values.
_LIMITS = {
    "block_count": 1024,
    "embedding_length": 65536,
    "feed_forward_length": 1 << 20,
    "attention.head_count": 1024,
    "attention.head_count_kv": 1024,
    "attention.key_length": 4096,
    "attention.value_length": 4096,
    "rope.dimension_count": 4096,
    "expert_count": 4096,
    "expert_used_count": 256,
    "expert_feed_forward_length": 1 << 18,
    "expert_shared_feed_forward_length": 1 << 18,
    "expert_shared_count": 64,
    "expert_group_count": 4096,
    "expert_group_used_count": 4096,
    "leading_dense_block_count": 1024,
    "context_length": 1 << 24,
    "vocab_size": 1 << 23,
    "nextn_predict_layers": 64,
}


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_layer: int  # transformer blocks that run (MTP/nextn blocks excluded)
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int  # key_length (= value_length for both archs)
    n_rot: int  # leading dims of each head that RoPE rotates (NEOX pairs)
    rope_base: float
    rope_freq_scale: float
    rms_eps: float
    n_vocab: int
    n_ctx_train: int
    n_expert: int
    n_expert_used: int
    n_ff_exp: int
    n_ff: int = 0  # dense FFN width of the leading dense blocks
    n_dense_lead: int = 0
    n_expert_shared: int = 0
    n_ff_shexp: int = 0  # total width of the shared-expert FFN
    n_expert_groups: int = 1
    n_group_used: int = 1
    gating: str = "softmax"  # "softmax" | "sigmoid"
    norm_w: bool = True  # renormalise the selected weights
    norm_w_eps: float = 0.0  # bailingmoe2 adds 1e-20 to the denominator
    w_scale: float = 1.0  # routed_scaling_factor
    has_exp_probs_b: bool = False  # selection bias present
    grouped_routing: bool = False  # -ger: only meaningful for bailingmoe2
    bos_token_id: int = 1

    @property
    def n_embd_q(self) -> int:
        return self.n_head * self.head_dim

    @property
    def n_embd_kv(self) -> int:  # n_embd_k_gqa = n_embd_v_gqa
        return self.n_head_kv * self.head_dim

    def is_moe_layer(self, il: int) -> bool:
        return il >= self.n_dense_lead

    def with_options(self, *, grouped_routing: bool | None = None) -> "ModelConfig":
        if grouped_routing is None:
            return self
        return replace(self, grouped_routing=bool(grouped_routing) and self.n_expert_groups > 1)


class _Meta:
    """Typed, checked access to ``{arch}.*`` metadata keys."""

    def __init__(self, md: dict[str, Any], arch: str, where: str):
        self.md, self.arch, self.where = md, arch, where

    def _raw(self, key: str):
        full = key if key.startswith(("general.", "tokenizer.")) else f"{self.arch}.{key}"
        return full, self.md.get(full)

    def int(self, key: str, default: int | None = None, lo: int = 1) -> int:
        full, v = self._raw(key)
        if v is None:
            if default is None:
                raise SweepbenchError(f"{self.where}: metadata key {full} is missing")
            return default
        if isinstance(v, np.ndarray):  # per-layer arrays: all entries must agree for our archs
            if v.size == 0 or not np.all(v == v.flat[0]):
                raise SweepbenchError(f"{self.where}: metadata key {full} varies per layer, which {self.arch} never does")
            v = v.flat[0]
        if isinstance(v, (bool, str, list)) or not float(v).is_integer():
            raise SweepbenchError(f"{self.where}: metadata key {full} = {v!r} is not an integer")
        v = int(v)
        hi = _LIMITS.get(key, 1 << 31)
        if not lo <= v <= hi:
            raise SweepbenchError(f"{self.where}: metadata key {full} = {v} is out of range [{lo}, {hi}]")
        return v

    def float(self, key: str, default: float | None = None, lo: float = 0.0, hi: float = 1e12) -> float:
        full, v = self._raw(key)
        if v is None:
            if default is None:
                raise SweepbenchError(f"{self.where}: metadata key {full} is missing")
            return default
        if isinstance(v, (str, list, np.ndarray)) or not np.isfinite(float(v)) or not lo <= float(v) <= hi:
            raise SweepbenchError(f"{self.where}: metadata key {full} = {v!r} is not a sane number")
        return float(v)

    def bool(self, key: str, default: bool) -> bool:
        _, v = self._raw(key)
        return default if v is None else bool(v)


def config_from_metadata(md: dict[str, Any], where: str = "model") -> ModelConfig:
    """Build and sanity-check the config of a supported MoE architecture from GGUF metadata."""
    arch = md.get("general.architecture")
    if not isinstance(arch, str):
        raise SweepbenchError(f"{where}: metadata key general.architecture is missing")
    if arch not in SUPPORTED_ARCHS:
        raise SweepbenchError(
            f"{where}: architecture '{arch}' is not supported (supported: {', '.join(SUPPORTED_ARCHS)})"
        )
    m = _Meta(md, arch, where)
    n_layer_file = m.int("block_count")
    n_embd = m.int("embedding_length")
    n_head = m.int("attention.head_count")
    n_head_kv = m.int("attention.head_count_kv", default=n_head)
    head_dim = m.int("attention.key_length", default=n_embd // n_head)
    head_dim_v = m.int("attention.value_length", default=head_dim)
    n_rot = m.int("rope.dimension_count", default=head_dim)
    tokens = md.get("tokenizer.ggml.tokens")
    n_vocab = m.int("vocab_size", default=len(tokens) if isinstance(tokens, list) and tokens else None)
    n_expert = m.int("expert_count")
    n_expert_used = m.int("expert_used_count")
    if head_dim_v != head_dim:
        raise SweepbenchError(f"{where}: key_length {head_dim} != value_length {head_dim_v}, not supported for {arch}")
    if n_head % n_head_kv:
        raise SweepbenchError(f"{where}: head_count {n_head} is not a multiple of head_count_kv {n_head_kv}")
    if n_rot > head_dim or n_rot % 2:
        raise SweepbenchError(f"{where}: rope.dimension_count {n_rot} must be even and <= key_length {head_dim}")
    if n_expert_used > n_expert:
        raise SweepbenchError(f"{where}: expert_used_count {n_expert_used} > expert_count {n_expert}")
    common = dict(
        arch=arch,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_rot=n_rot,
        rope_base=m.float("rope.freq_base", default=10000.0, lo=1.0),
        rope_freq_scale=1.0 / m.float("rope.scaling.factor", default=1.0, lo=1e-6),
        rms_eps=m.float("attention.layer_norm_rms_epsilon", lo=1e-12, hi=1e-1),
        n_vocab=n_vocab,
        n_ctx_train=m.int("context_length", default=4096),
        n_expert=n_expert,
        n_expert_used=n_expert_used,
        bos_token_id=m.int("tokenizer.ggml.bos_token_id", default=1, lo=0),
    )
    if common["bos_token_id"] >= n_vocab:
        raise SweepbenchError(f"{where}: bos_token_id {common['bos_token_id']} >= vocabulary size {n_vocab}")

    if arch == "qwen3moe":
        if n_rot != head_dim:
            raise SweepbenchError(f"{where}: qwen3moe needs rope.dimension_count == key_length ({n_rot} != {head_dim})")
        n_ff = m.int("feed_forward_length", default=0, lo=0)
        n_ff_exp = m.int("expert_feed_forward_length", default=(n_ff // n_expert_used) or None)
        # softmax gating, normalised weights, no scale: hard-coded in ik's build_qwen3moe
        return ModelConfig(n_layer=n_layer_file, n_ff_exp=n_ff_exp, n_ff=n_ff, gating="softmax", norm_w=True, **common)

    # bailingmoe2
    nextn = m.int("nextn_predict_layers", default=0, lo=0)
    n_layer = n_layer_file - nextn
    if n_layer < 1:
        raise SweepbenchError(f"{where}: block_count {n_layer_file} leaves no layer after {nextn} nextn layers")
    n_dense = m.int("leading_dense_block_count", lo=0)
    if n_dense > n_layer:
        raise SweepbenchError(f"{where}: leading_dense_block_count {n_dense} > block_count {n_layer}")
    n_ff_exp = m.int("expert_feed_forward_length")
    n_shared = m.int("expert_shared_count", default=0, lo=0)
    n_ff_sh = m.int("expert_shared_feed_forward_length", default=n_ff_exp) * n_shared
    n_groups = m.int("expert_group_count", default=1)
    n_group_used = m.int("expert_group_used_count", default=n_groups)
    if n_expert % n_groups or n_group_used > n_groups:
        raise SweepbenchError(
            f"{where}: expert_group_count {n_groups} / group_used {n_group_used} do not divide {n_expert} experts"
        )
    gating_id = m.int("expert_gating_func")
    if gating_id != 2:  # every BailingMoE v2 release gates with sigmoid + selection bias
        raise SweepbenchError(f"{where}: expert_gating_func {gating_id} is not supported for bailingmoe2 (only 2, sigmoid)")
    return ModelConfig(
        n_layer=n_layer,
        n_ff_exp=n_ff_exp,
        n_ff=m.int("feed_forward_length", default=0, lo=0) if n_dense else 0,
        n_dense_lead=n_dense,
        n_expert_shared=n_shared,
        n_ff_shexp=n_ff_sh,
        n_expert_groups=n_groups,
        n_group_used=n_group_used,
        gating="sigmoid",
        norm_w=m.bool("expert_weights_norm", False),
        norm_w_eps=1e-20,
        w_scale=m.float("expert_weights_scale", default=1.0, lo=0.0, hi=1e6),
        has_exp_probs_b=True,
        **common,
    )
