"""The ops table a model's ``forward()`` is written against. Each engine supplies one implementation.

The per-architecture modules describe the math once in terms of these named ops; the reference engine's
table is the NumPy twins in ``sweepbench.ref_ops`` (the module itself is the table); the Numba CPU and CUDA engines supply their own kernels.
Model code never knows which backend runs an op, and never does arithmetic on arrays itself (device arrays
do not support it), so every step, even a residual add, is an op.

Dimension legend:
    T  tokens in the batch          E  n_embd               V  n_vocab
    H  query heads                  Hkv KV heads            D  head_dim
    X  experts (n_expert)           K  experts used per token (top-k)
    F  expert FFN width (n_ff_exp)  N  output rows of a weight matrix
    R  routed rows = T*K, in (token, slot) order

Weights are engine objects (dequantized, repacked or on the device); ``w[name]`` gives them by GGUF name.
"""
from __future__ import annotations

from typing import Any, Protocol


class Ops(Protocol):
    # ---- dense building blocks -------------------------------------------------------------------
    def embed(self, w_embd: Any, tokens: Any) -> Any:  # tokens [T] int -> [T, E]
        ...

    def rms_norm(self, x: Any, w: Any, eps: float) -> Any:  # [T, E] -> [T, E]
        ...

    def rms_norm_heads(self, x: Any, w: Any, eps: float, head_dim: int) -> Any:  # [T, H*D] per head -> [T, H*D]
        ...

    def rope_neox(self, x: Any, pos0: int, head_dim: int, n_rot: int, base: float, freq_scale: float) -> Any:
        """[T, H*D], token t at position pos0 + t; rotates (x[i], x[i + n_rot/2]) for i < n_rot/2 per head."""

    def matmul(self, x: Any, w: Any) -> Any:  # x [T, K] @ W[N, K]^T -> [T, N]
        ...

    def add(self, x: Any, y: Any) -> Any:  # [T, E] + [T, E]
        ...

    def swiglu_ffn(self, x: Any, w_gate: Any, w_up: Any, w_down: Any) -> Any:
        """Dense / shared-expert FFN: W_down (silu(W_gate x) * (W_up x)); [T, E] -> [T, E]."""

    def rows(self, x: Any, idx: list[int]) -> Any:  # keep rows idx of [T, ...] (last-token-only output)
        ...

    def split(self, x: Any, sizes: tuple[int, ...]) -> list[Any]:  # [T, sum(sizes)] -> [T, size] parts, in order
        ...

    def to_host(self, x: Any) -> Any:  # float32 numpy array
        ...

    # ---- attention ------------------------------------------------------------------------------
    def kv_store(self, cache: Any, il: int, k: Any, v: Any, pos0: int) -> None:
        """Write K [T, Hkv*D] and V [T, Hkv*D] of layer il into cache cells pos0..pos0+T (converted to the cache type)."""

    def attention(self, q: Any, cache: Any, il: int, pos0: int, n_head: int, n_head_kv: int, head_dim: int) -> Any:
        """Causal GQA attention of q [T, H*D] (token t at pos0+t) over cache cells [0, pos0+T) -> [T, H*D].

        scale 1/sqrt(D); query head h uses KV head h // (H/Hkv).
        """

    # ---- MoE: route -> group rows by expert -> fused up/gate -> down -> combine ---------------------
    def route_softmax_topk(self, logits: Any, k: int, norm: bool) -> tuple[Any, Any]:
        """logits [T, X] -> ids [T, K] int32, weights [T, K] f32 (softmax, top-k, optional renormalise)."""

    def route_sigmoid_topk(
        self, logits: Any, bias: Any, k: int, n_groups: int, n_groups_used: int, norm: bool, norm_eps: float, scale: float
    ) -> tuple[Any, Any]:
        """Sigmoid gating; selection on sigmoid+bias (grouped top-k when n_groups > 1), weights unbiased.

        bias [X] or None; weights normalised by (sum + norm_eps) if norm, then times scale if scale != 1."""

    def group_rows_by_expert(self, ids: Any, n_expert: int) -> Any:
        """Counting sort of the R = T*K (token, slot) rows by expert, stable in (token, slot) order."""

    def expert_up_gate(self, x: Any, w_gate: Any, w_up: Any, groups: Any) -> Any:
        """[T, E] -> [R, F]: row r = (t, j) is silu(gate_e x_t) * (up_e x_t) with e = ids[t, j]."""

    def expert_down(self, h: Any, w_down: Any, groups: Any) -> Any:  # [R, F] -> [R, E]
        ...

    def combine(self, y: Any, weights: Any) -> Any:
        """[R, E] rows (t, j) with weights [T, K] -> [T, E] = sum_j w[t, j] * y[(t, j)], j summed in slot order."""
