"""The NumPy twins: plain, readable implementations of every op in ``sweepbench.models.ops``.

They are the reference engine's kernels and the ground truth every Numba CPU / CUDA kernel is tested against.
Storage is float32; sums that decide accuracy (RMS norms, softmax denominators, the routing weights'
normalisation) run in float64; matrix products use float32 BLAS (pairwise-blocked accumulation).

Dimension legend (as in ``models.ops``):
    T  tokens in the batch          E  n_embd (row length of the input)   V  n_vocab
    H  query heads                  Hkv KV heads                          D  head_dim
    X  experts                      K  experts used per token             F  expert FFN width
    N  output rows of a weight      R  routed rows = T*K in (token, slot) order
    C  KV-cache cells in use (pos0 + T)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType as Q

from sweepbench.quants import dequantize, quantize_rows

# ---------------------------------------------------------------------------------------------- dense ops


def embed(table, tokens: np.ndarray) -> np.ndarray:
    """Rows ``tokens`` of the embedding table -> float32 [T, E]. ``table`` is a ``QuantMatrix`` (rows looked up
    and dequantized one by one, as ggml's get_rows does) or a float32 [V, E] array."""
    tokens = np.asarray(tokens, np.int64)
    if isinstance(table, QuantMatrix):
        return dequantize(np.ascontiguousarray(table.raw[tokens]), table.qtype, table.row_len)
    return np.ascontiguousarray(table[tokens], np.float32)


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """[T, E] -> [T, E]: x / sqrt(mean(x^2) + eps) * w, the mean in float64 (as ggml's CPU kernel)."""
    mean_sq = np.mean(np.square(x, dtype=np.float64), axis=-1, keepdims=True)  # [T, 1]
    scale = (1.0 / np.sqrt(mean_sq + eps)).astype(np.float32)
    return (x * scale) * w


def rms_norm_heads(x: np.ndarray, w: np.ndarray, eps: float, head_dim: int) -> np.ndarray:
    """Per-head RMSNorm (Qwen3/Ling q/k norm): [T, H*D] -> [T, H*D], weight [D] shared by all heads."""
    t = x.shape[0]
    return rms_norm(x.reshape(t, -1, head_dim), w, eps).reshape(t, -1)


def rope_neox(x: np.ndarray, pos0: int, head_dim: int, n_rot: int, base: float, freq_scale: float) -> np.ndarray:
    """NEOX RoPE on [T, H*D], token t at position pos0 + t: rotates (x[i], x[i + n_rot/2]) for i < n_rot/2 by
    theta = freq_scale * pos * base^(-2i/n_rot); dims n_rot..D pass unchanged. Angles in float64."""
    t = x.shape[0]
    half = n_rot // 2
    pos = np.arange(pos0, pos0 + t, dtype=np.float64)[:, None]  # [T, 1]
    inv_freq = base ** (-2.0 * np.arange(half, dtype=np.float64) / n_rot)  # [half]
    theta = freq_scale * pos * inv_freq  # [T, half]
    cos = np.cos(theta).astype(np.float32)[:, None, :]  # [T, 1, half]
    sin = np.sin(theta).astype(np.float32)[:, None, :]
    h = x.reshape(t, -1, head_dim)  # [T, H, D]
    out = h.copy()
    x0, x1 = h[:, :, :half], h[:, :, half:n_rot]
    out[:, :, :half] = x0 * cos - x1 * sin
    out[:, :, half:n_rot] = x0 * sin + x1 * cos
    return out.reshape(t, -1)


def matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x [T, E] times a weight W [N, E] (rows = outputs, as ggml stores it) -> [T, N]."""
    return np.matmul(x, w.T)


def silu(g: np.ndarray) -> np.ndarray:
    return g / (np.float32(1.0) + np.exp(-g))


def swiglu_ffn(x: np.ndarray, w_gate: np.ndarray, w_up: np.ndarray, w_down: np.ndarray) -> np.ndarray:
    """Dense / shared-expert FFN: W_down (silu(W_gate x) * (W_up x)); [T, E] -> [T, E]."""
    return matmul(silu(matmul(x, w_gate)) * matmul(x, w_up), w_down)


# ---------------------------------------------------------------------------------------------- attention


@dataclass
class KVCache:
    """Per-layer K and V rows [cells, Hkv*D] in the cache type: float16 arrays, or q8_0 blocks (uint8 rows)
    that are dequantized when read. ``n_filled`` = cells holding valid positions 0..n_filled-1."""

    k: list[np.ndarray]
    v: list[np.ndarray]
    type_k: str
    type_v: str
    n_embd_kv: int
    n_filled: int = 0

    @classmethod
    def allocate(cls, n_layer: int, n_ctx: int, n_embd_kv: int, type_k: str, type_v: str) -> "KVCache":
        def layer(kind: str) -> np.ndarray:
            if kind == "f16":
                return np.zeros((n_ctx, n_embd_kv), np.float16)
            return np.zeros((n_ctx, n_embd_kv // 32 * 34), np.uint8)  # q8_0: 34-byte blocks of 32

        return cls([layer(type_k) for _ in range(n_layer)], [layer(type_v) for _ in range(n_layer)],
                   type_k, type_v, n_embd_kv)

    @property
    def n_ctx(self) -> int:
        return self.k[0].shape[0]

    @property
    def n_bytes(self) -> int:
        return sum(a.nbytes for a in self.k + self.v)


def _to_cache(x: np.ndarray, kind: str) -> np.ndarray:
    return x.astype(np.float16) if kind == "f16" else quantize_rows(x, Q.Q8_0)


def _from_cache(rows: np.ndarray, kind: str, n_embd_kv: int) -> np.ndarray:
    return rows.astype(np.float32) if kind == "f16" else dequantize(rows, Q.Q8_0, n_embd_kv)


def kv_store(cache: KVCache, il: int, k: np.ndarray, v: np.ndarray, pos0: int) -> None:
    """Write K, V [T, Hkv*D] of layer ``il`` into cells pos0..pos0+T, converted to the cache types."""
    t = k.shape[0]
    cache.k[il][pos0 : pos0 + t] = _to_cache(k, cache.type_k)
    cache.v[il][pos0 : pos0 + t] = _to_cache(v, cache.type_v)


def attention(q: np.ndarray, cache: KVCache, il: int, pos0: int, n_head: int, n_head_kv: int,
              head_dim: int) -> np.ndarray:
    """Causal GQA attention of q [T, H*D] (token t at pos0+t) over cells [0, pos0+T) -> [T, H*D].

    Scale 1/sqrt(D); query head h reads KV head h // (H/Hkv); token t sees cells 0..pos0+t. Softmax in float64.
    """
    t = q.shape[0]
    c = pos0 + t
    k = _from_cache(cache.k[il][:c], cache.type_k, cache.n_embd_kv).reshape(c, n_head_kv, head_dim)  # [C, Hkv, D]
    v = _from_cache(cache.v[il][:c], cache.type_v, cache.n_embd_kv).reshape(c, n_head_kv, head_dim)
    group = n_head // n_head_kv
    qh = q.reshape(t, n_head_kv, group, head_dim).transpose(1, 2, 0, 3)  # [Hkv, G, T, D]
    scores = np.matmul(qh, k.transpose(1, 2, 0)[:, None]) * np.float32(1.0 / np.sqrt(head_dim))  # [Hkv, G, T, C]
    visible = np.arange(c)[None, :] <= (pos0 + np.arange(t))[:, None]  # [T, C]
    s = np.where(visible, scores.astype(np.float64), -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p = (p / p.sum(axis=-1, keepdims=True)).astype(np.float32)
    out = np.matmul(p, v.transpose(1, 0, 2)[:, None])  # [Hkv, G, T, D]
    return np.ascontiguousarray(out.transpose(2, 0, 1, 3)).reshape(t, n_head * head_dim)


# ---------------------------------------------------------------------------------------------- routing


def top_k_desc(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores per row, in descending order; ties go to the larger index first
    (ik's partial_sort of (value, index) pairs with std::greater). [T, X] -> int32 [T, K]."""
    n = scores.shape[-1]
    idx = np.broadcast_to(np.arange(n), scores.shape)
    order = np.lexsort((-idx, -scores), axis=-1)  # last key is primary: score desc, then index desc
    return order[..., :k].astype(np.int32)


def route_softmax_topk(logits: np.ndarray, k: int, norm: bool) -> tuple[np.ndarray, np.ndarray]:
    """Qwen3: softmax over experts, top-k, renormalise. logits [T, X] -> ids int32 [T, K], weights f32 [T, K]."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    probs = p.astype(np.float32)
    ids = top_k_desc(probs, k)
    w = np.take_along_axis(probs, ids, axis=-1).astype(np.float64)
    if norm:
        s = w.sum(axis=-1, keepdims=True)
        w = w * np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 0.0)
    return ids, w.astype(np.float32)


def grouped_top_k(sel: np.ndarray, k: int, n_groups: int, n_groups_used: int) -> np.ndarray:
    """BailingMoE2 grouped selection: group score = sum of its top-2 scores; keep the ``n_groups_used`` best
    groups (ties -> larger group index); top-k among their experts. [T, X] -> int32 [T, K]."""
    t, n = sel.shape
    per_group = n // n_groups
    if k > per_group * n_groups_used:  # ik's guard for a selection the kept groups cannot fill
        return np.broadcast_to(np.arange(k, dtype=np.int32), (t, k)).copy()
    grouped = sel.reshape(t, n_groups, per_group)  # [T, G, X/G]
    top2 = -np.sort(-grouped, axis=-1)[..., :2]
    group_score = top2[..., 0] + (top2[..., 1] if per_group > 1 else 0)  # [T, G] (float32 sum, as ik)
    kept = top_k_desc(group_score, n_groups_used)  # [T, Gk]
    mask = np.zeros((t, n_groups), bool)
    np.put_along_axis(mask, kept, True, axis=-1)
    masked = np.where(np.repeat(mask, per_group, axis=-1), sel, -np.inf).astype(np.float32)
    return top_k_desc(masked, k)


def route_sigmoid_topk(logits: np.ndarray, bias: np.ndarray | None, k: int, n_groups: int, n_groups_used: int,
                       norm: bool, norm_eps: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """BailingMoE2: sigmoid gating; experts chosen on sigmoid + bias (grouped when n_groups > 1), weights taken
    from the UNBIASED sigmoid, normalised by (sum + norm_eps), times ``scale``. [T, X] -> ids, weights [T, K]."""
    probs = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    sel = probs + bias if bias is not None else probs
    ids = grouped_top_k(sel, k, n_groups, n_groups_used) if n_groups > 1 else top_k_desc(sel, k)
    w = np.take_along_axis(probs, ids, axis=-1).astype(np.float64)
    if norm:
        w = w / (w.sum(axis=-1, keepdims=True) + norm_eps)
    if abs(scale - 1.0) > 1e-5:
        w = w * scale
    return ids, w.astype(np.float32)


# ---------------------------------------------------------------------------------------------- experts


@dataclass(frozen=True)
class QuantMatrix:
    """A weight kept in its GGUF encoding: raw uint8 [rows, row_bytes] (a view of the mapped file)."""

    raw: np.ndarray
    qtype: Q
    row_len: int

    @property
    def n_bytes(self) -> int:
        return self.raw.nbytes


@dataclass(frozen=True)
class ExpertGroups:
    """Routed rows grouped by expert (a stable counting sort). Row r = t*K + j is (token t, slot j).

    ``rows[offsets[e]:offsets[e+1]]`` are expert e's rows in (token, slot) order."""

    ids: np.ndarray  # int32 [T, K]
    rows: np.ndarray  # int32 [R]
    offsets: np.ndarray  # int64 [X+1]

    def rows_of(self, e: int) -> np.ndarray:
        return self.rows[self.offsets[e] : self.offsets[e + 1]]


def group_rows_by_expert(ids: np.ndarray, n_expert: int) -> ExpertGroups:
    """ids [T, K] -> rows grouped by expert, stable in (token, slot) order (no atomics anywhere)."""
    flat = ids.reshape(-1)
    counts = np.bincount(flat, minlength=n_expert)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rows = np.argsort(flat, kind="stable").astype(np.int32)
    return ExpertGroups(ids.astype(np.int32), rows, offsets)


class ExpertStack:
    """Expert weights [X, N, E] of one layer: each expert's float32 [N, E] matrix is dequantized from the mapped
    file when first used, and kept if ``keep`` (the engine decides from the memory it may use)."""

    def __init__(self, raw: np.ndarray, qtype: Q, row_len: int, n_expert: int, keep: bool):
        self.raw, self.qtype, self.row_len, self.n_expert, self.keep = raw, qtype, row_len, n_expert, keep
        self.n_rows = raw.shape[0] // n_expert
        self._cache: dict[int, np.ndarray] = {}

    @property
    def n_bytes(self) -> int:
        """Bytes held: the float32 experts decoded so far, or the mapped encoding when they are not kept."""
        return sum(w.nbytes for w in self._cache.values()) if self.keep else self.raw.nbytes

    def __getitem__(self, e: int) -> np.ndarray:  # [N, E]
        w = self._cache.get(e)
        if w is None:
            w = dequantize(self.raw[e * self.n_rows : (e + 1) * self.n_rows], self.qtype, self.row_len)
            if self.keep:
                self._cache[e] = w
        return w


def expert_up_gate(x: np.ndarray, w_gate: ExpertStack, w_up: ExpertStack, groups: ExpertGroups) -> np.ndarray:
    """[T, E] -> [R, F]: row r = (t, j) is silu(gate_e x_t) * (up_e x_t) with e = ids[t, j]."""
    k = groups.ids.shape[1]
    out = np.zeros((groups.rows.size, w_up.n_rows), np.float32)
    for e in np.flatnonzero(np.diff(groups.offsets)):
        rows = groups.rows_of(e)
        xe = x[rows // k]  # [n_e, E]
        out[rows] = silu(matmul(xe, w_gate[e])) * matmul(xe, w_up[e])
    return out


def expert_down(h: np.ndarray, w_down: ExpertStack, groups: ExpertGroups) -> np.ndarray:
    """[R, F] -> [R, E]: each routed row through its expert's down projection."""
    out = np.zeros((h.shape[0], w_down.n_rows), np.float32)
    for e in np.flatnonzero(np.diff(groups.offsets)):
        rows = groups.rows_of(e)
        out[rows] = matmul(h[rows], w_down[e])
    return out


def combine(y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[R, E] rows (t, j) with weights [T, K] -> [T, E] = sum_j w[t, j] * y[(t, j)], j summed in slot order."""
    t, k = weights.shape
    y = y.reshape(t, k, -1)
    out = y[:, 0] * weights[:, 0:1]
    for j in range(1, k):
        out = out + y[:, j] * weights[:, j : j + 1]
    return out


# ---------------------------------------------------------------------------------------------- plumbing


def add(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return x + y


def rows(x: np.ndarray, idx) -> np.ndarray:
    """Keep rows ``idx`` of [T, ...] (the last layer only computes the rows that want logits)."""
    return np.ascontiguousarray(x[np.asarray(idx, np.int64)])


def split(x: np.ndarray, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """[T, sum(sizes)] -> contiguous [T, size] parts, in order (a fused QKV projection's Q, K, V)."""
    bounds = np.cumsum((0,) + tuple(sizes))
    return [np.ascontiguousarray(x[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def to_host(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32)
