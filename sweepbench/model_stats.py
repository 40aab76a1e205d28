"""Model statistics for roofline columns: parameters, bytes read per generated token, KV-cache size, PP FLOPs.

All numbers come from the tensors actually in the file (their quant types and byte sizes), so a Q4_K-expert
model reads fewer bytes than a Q8_0 one. Per generated token a model reads every non-expert weight once, one
row of ``token_embd``, the output head, and k of n experts of each MoE layer (their expected share: routing
of random tokens is near-uniform). Blocks beyond ``cfg.n_layer`` (bailingmoe2 MTP/nextn layers) never run and
are left out of everything but ``total_params``.
"""
from __future__ import annotations

from dataclasses import dataclass

from gguf import GGMLQuantizationType as Q
from gguf.constants import GGML_QUANT_SIZES

from sweepbench.config import ModelConfig
from sweepbench.errors import UsageError
from sweepbench.gguf_model import GGUFModel, GGUFTensor


@dataclass(frozen=True)
class ModelStats:
    n_layer: int
    n_head: int
    head_dim: int
    n_embd_kv: int  # K (= V) values per token per layer
    total_params: int  # every tensor in the file
    active_params: int  # used per token: experts k/n, embeddings counted whole (the published "A3B" convention)
    expert_params: int  # all routed-expert weights
    body_matmul_params: int  # matrix weights every token multiplies with (no token_embd, no output head)
    head_params: int  # output head (n_embd x n_vocab), run only for tokens that want logits
    weight_bytes_per_token: int  # bytes of weights read to generate one token
    expert_bytes_per_token: int  # the routed-expert part of it
    head_bytes: int  # the output-head part of it


def _layer(t: GGUFTensor) -> int:
    return int(t.name.split(".")[1]) if t.name.startswith("blk.") else -1


def model_stats(cfg: ModelConfig, model: GGUFModel) -> ModelStats:
    """Statistics of a validated model (``models.tensors.open_model``)."""
    total = active = experts = body = 0
    bytes_tok = expert_bytes = 0
    k_of_n = cfg.n_expert_used / cfg.n_expert
    for t in model.tensors.values():
        total += t.n_elements
        if _layer(t) >= cfg.n_layer:
            continue  # MTP layers: loaded but skipped by the graph
        if "_exps." in t.name:
            experts += t.n_elements
            active += round(t.n_elements * k_of_n)
            expert_bytes += round(t.n_bytes * k_of_n)
            body += round(t.n_elements * k_of_n)
            continue
        active += t.n_elements
        if t.name == "token_embd.weight":
            bytes_tok += t.n_bytes // t.raw.shape[0]  # one row is looked up
        elif t.name != "output.weight":
            bytes_tok += t.n_bytes
            if len(t.ne) >= 2:
                body += t.n_elements
    head = model.tensors.get("output.weight") or model.tensor("token_embd.weight")  # absent output = tied
    return ModelStats(
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        head_dim=cfg.head_dim,
        n_embd_kv=cfg.n_embd_kv,
        total_params=total,
        active_params=active,
        expert_params=experts,
        body_matmul_params=body,
        head_params=head.n_elements,
        weight_bytes_per_token=bytes_tok + expert_bytes + head.n_bytes,
        expert_bytes_per_token=expert_bytes,
        head_bytes=head.n_bytes,
    )


def kv_type_bytes(kv_type: str) -> float:
    """Bytes per cached value of a KV-cache type name (``f16`` 2, ``q8_0`` 34/32, ...)."""
    try:
        block, size = GGML_QUANT_SIZES[Q[kv_type.upper()]]
    except KeyError:
        raise UsageError(f"unknown KV-cache type '{kv_type}' (e.g. f16, bf16, q8_0, q4_0)") from None
    return size / block


def kv_bytes_per_token(stats: ModelStats, type_k: str = "f16", type_v: str = "f16") -> float:
    """KV-cache bytes one token of context occupies (K and V, all layers)."""
    return stats.n_layer * stats.n_embd_kv * (kv_type_bytes(type_k) + kv_type_bytes(type_v))


def pp_flops(stats: ModelStats, n_tokens: int, n_kv: int, n_logits: int = 1) -> float:
    """FLOPs of one PP window of ``n_tokens`` tokens after ``n_kv`` cached ones.

    Matrix products: 2 x body params per token, plus the head for the ``n_logits`` tokens that want logits
    (sweep-bench asks for the last one only). Attention: token t (0-based) attends to n_kv + t + 1 keys, costing
    2 x head_dim for Q.K and 2 x head_dim for P.V per head and key, in every layer.
    """
    attended = n_tokens * n_kv + n_tokens * (n_tokens + 1) // 2  # sum over tokens of keys seen
    attention = 4 * stats.n_head * stats.head_dim * attended * stats.n_layer
    return 2.0 * (stats.body_matmul_params * n_tokens + stats.head_params * n_logits) + attention


def tg_bytes_per_token(stats: ModelStats, n_kv: float, type_k: str = "f16", type_v: str = "f16") -> float:
    """Bytes read to generate one token after ``n_kv`` cached ones: weights plus the n_kv + 1 cached K/V rows
    it attends to (pass n_kv + (tg - 1) / 2 for the mean over a TG window that starts at depth n_kv)."""
    return stats.weight_bytes_per_token + kv_bytes_per_token(stats, type_k, type_v) * (n_kv + 1)


def model_info(path) -> dict:
    """Everything ``sweepbench info`` shows, as plain JSON-able values. Validates the file first."""
    from dataclasses import asdict

    from sweepbench.models.tensors import open_model

    model, cfg = open_model(path)
    stats = model_stats(cfg, model)
    counts, sizes = model.type_histogram(), model.type_bytes()
    return {
        "path": str(model.path),
        "files": [str(f) for f in model.files],
        "file_size_bytes": model.size_bytes,
        "name": model.get("general.name"),
        "arch": cfg.arch,
        "hyperparameters": asdict(cfg),
        "n_tensors": len(model.tensors),
        "tensor_types": {q: {"count": counts[q], "bytes": sizes[q]} for q in counts},
        "params_total": stats.total_params,
        "params_active": stats.active_params,
        "params_experts": stats.expert_params,
        "weight_bytes_per_token": stats.weight_bytes_per_token,
        "expert_bytes_per_token": stats.expert_bytes_per_token,
        "head_bytes_per_token": stats.head_bytes,
        "kv_bytes_per_token": {t: kv_bytes_per_token(stats, t, t) for t in ("f16", "q8_0")},
    }
