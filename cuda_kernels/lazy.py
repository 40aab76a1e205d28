"""Deferred results that let the ops table fuse neighbouring ops without changing the models' forward().

The forward is written op by op (``sweepbench.models.ops``). These run as one kernel here:
    add -> rms_norm                 the residual sum and the next norm (and its q8_1 output) in one pass
    rms_norm_heads -> rope_neox     the q/k norm and the rotation, one block per (token, head)
    rope_neox (q, k) -> kv_store -> attention
                                    q and k normed and rotated and k, v stored in the cache by one kernel
    expert_down -> combine          the down projection and the weighted sum over slots (token generation)
    combine -> add                  ... plus the shared expert's output
    matmul or combine -> add -> rms_norm
                                    one token's GEMV (or down projection) whose last block adds the residual and
                                    computes the next norm and its q8_1 copy (no RMSNorm launch)
    attention -> matmul             a prefill attention writes its rows as the f16 pairs the output
                                    projection's GEMM reads (SWEEPBENCH_CUDA_GEMM_X=f16), not as float32
An op receiving a deferred value it cannot fuse with materializes it first (``CudaOps.act``), so any other
sequence of ops still computes the same thing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class LazyAdd:
    x: Any
    y: Any
    value: Any = None  # the materialized sum, once computed (``settle``)

    @property
    def shape(self):
        return self.value.shape if self.value is not None else self.x.shape

    def settle(self, value) -> None:
        """The sum is computed: keep it and let go of the addends. The residual stream is a chain of adds (each
        layer's x = x + f(x)), so an add that kept its addends would keep every earlier layer's sums and
        sublayer outputs in the pool until the forward ends (4 buffers of [T, E] a layer)."""
        self.value, self.x, self.y = value, None, None


@dataclass
class LazyMatmul:
    """x @ w^T of one token, not yet launched (an add -> rms_norm may still take it as its GEMV's tail)."""

    x: Any
    w: Any
    value: Any = None

    @property
    def shape(self):
        return self.x.rows, self.w.n_rows


@dataclass
class LazyNormHeads:
    x: Any
    w: Any
    eps: float
    head_dim: int

    @property
    def shape(self):
        return self.x.shape


@dataclass
class LazyRope:
    """rope_neox of x (after the per-head norm when do_norm), not yet computed."""

    x: Any
    w: Any
    eps: float
    head_dim: int
    n_rot: int
    base: float
    freq_scale: float
    do_norm: bool
    value: Any = None

    @property
    def shape(self):
        return self.x.shape


@dataclass
class LazyFlash:
    """A prefill attention (more rows than the GEMVs take) not yet launched: its reader decides whether the
    kernel writes float32 rows or f16 pairs. q: Act [T, H*D], its cache's KV already stored."""

    q: Any
    cache: Any
    il: int
    pos0: int
    n_head: int
    n_head_kv: int
    head_dim: int
    value: Any = None

    @property
    def shape(self):
        return self.q.rows, self.n_head * self.head_dim


@dataclass
class LazyDown:
    h: Any  # [R, F]
    w: Any  # DeviceWeight stack
    groups: Any

    @property
    def shape(self):
        return self.h.rows, self.w.n_rows


@dataclass
class LazyCombine:
    """combine of a LazyDown with the slot weights, not yet computed (an add may still join it)."""

    y: LazyDown
    weights: Any
    value: Any = None
    addend: Any = None  # the shared expert's output (Act), added by the same kernel

    @property
    def shape(self):
        return self.weights.n_tokens, self.y.w.n_rows


@dataclass
class Routed:
    """Expert ids int32 [T*K] (or their weights float32 [T*K]) on the device, in (token, slot) order. With a
    ``pending`` routing launch, the first read of ``buf`` makes it, unless a kernel that routes by itself (the
    decode step's fused up/gate) has taken it over first."""

    _buf: Any
    n_tokens: int
    k: int
    owner: Any = None  # keeps the pool buffer's Act alive
    pending: Any = None  # PendingRoute shared by the ids and the weights

    @property
    def buf(self):
        if self.pending is not None and not self.pending.done:
            self.pending.launch()
        return self._buf


@dataclass
class PendingRoute:
    """A routing launch not yet made: ``launch()`` makes it; a fused kernel sets ``done`` and routes itself
    from ``logits`` with ``args`` (the router's arguments after the logits, ids and weights: see gemv)."""

    launch_fn: Any
    logits: Any  # the router logits Act (kept alive until the launch)
    sigmoid: bool
    n_expert: int
    n_groups: int
    args: tuple  # (bias, has_bias, norm, n_groups_used, eps, scale)
    weights_buf: Any = None  # where the weights go (the ids' buffer is the Routed's own)
    done: bool = False

    def launch(self):
        self.done = True
        self.launch_fn()


@dataclass
class Groups:
    """Routed rows grouped by expert; ``rows`` / ``offsets`` / ``tiles`` are built on the device when a GEMM needs
    them (token generation reads the ids directly)."""

    ids: Routed
    n_expert: int
    rows: Any = None
    offsets: Any = None
    tiles: Any = None
    max_tiles: int = 0
    owner: Any = None  # keeps the pool buffers of rows / offsets / tiles alive
