"""One module per architecture with a plain ``forward()``; ``tensors`` lists what each needs.

``forward(ops, weights, cfg, cache, tokens, pos0, out_rows)`` is written once against an ops table
(``models.ops``); engines supply the table, the prepared weights (by GGUF name) and the KV cache.
"""
from __future__ import annotations

from importlib import import_module
from typing import Callable

from sweepbench.config import SUPPORTED_ARCHS

# How an engine prepares each tensor for the ops that consume it.
WEIGHT_KINDS = ("norm", "bias", "router", "experts", "embedding", "matrix")


def weight_kind(name: str) -> str:
    """What a tensor is to the forward pass, from its GGUF name."""
    if name.endswith("norm.weight"):
        return "norm"  # F32 vector: rms_norm / rms_norm_heads
    if name.endswith("exp_probs_b.bias"):
        return "bias"  # F32 vector: selection bias of the router
    if name.endswith("ffn_gate_inp.weight"):
        return "router"  # F32 [X, E]: matmul
    if "_exps." in name:
        return "experts"  # [X, N, E]: expert_up_gate / expert_down
    if name == "token_embd.weight":
        return "embedding"  # [V, E]: embed (rows looked up)
    return "matrix"  # [N, E]: matmul / swiglu_ffn


def forward_for(arch: str) -> Callable:
    if arch not in SUPPORTED_ARCHS:
        raise ValueError(f"no forward() for architecture {arch}")
    return import_module(f"sweepbench.models.{arch}").forward
