"""Deferred decode-step results that let numba-cpu fuse neighbouring ops without changing the models' forward().

A one-token decode step is ~20 op calls a layer, each a Python method and a Numba dispatch (3-7 us hot, more
with the caches cold after a product) around a microsecond of work. For at most ``SMALL_ROWS`` rows these ops
return a description instead of an array, and the op that reads it computes both in one kernel call:

    rms_norm_heads -> rope_neox        q's norm and rotation, done by the attention that reads q
    rms_norm_heads -> rope_neox -> kv_store
                                       k normed, rotated and stored with v (``attention.rope_store_k``)
    combine -> add                     the weighted sum of the expert rows added to the residual
    add -> rms_norm                    the residual sum and the next norm (``dense.residual_norm``)

Each fused kernel does the unfused ops' float operations in the same order, so logits keep their bits. An op
that receives a deferred value it does not fuse with materializes it first (``materialize``): any other
sequence of ops computes the same thing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sweepbench.cpu_kernels import dense, moe

NO_WEIGHT = np.ones(1, np.float32)  # the norm weight of a rotation without a norm (never read)


@dataclass
class PerHead:
    """Per-head ops on x [T, H*D] not yet computed: the RMSNorm with weight w [D] (when ``do_norm``), then the
    NEOX RoPE with tables cs, sn [T, n_rot/2] (once rope_neox has been asked for: cs is not None)."""

    x: np.ndarray
    w: np.ndarray
    do_norm: bool
    eps: float
    head_dim: int
    cs: np.ndarray | None = None
    sn: np.ndarray | None = None

    @property
    def shape(self):
        return self.x.shape


@dataclass
class Combined:
    """combine of the expert rows y [T*K, E] with the slot weights [T, K], not yet computed."""

    y: np.ndarray
    weights: np.ndarray

    @property
    def shape(self):
        return self.weights.shape[0], self.y.shape[1]


@dataclass
class Sum:
    """x + y (y an array or a Combined), computed by the rms_norm that reads it (``value`` then holds the sum)."""

    x: np.ndarray
    y: np.ndarray | Combined
    value: np.ndarray | None = None

    @property
    def shape(self):
        return self.x.shape


LAZY = (PerHead, Combined, Sum)


def residual_norm(s: Sum, w: np.ndarray | None, eps: float = 0.0) -> np.ndarray | None:
    """Computes s.value (= x + y) and, with a weight w, returns rms_norm(s.value) from the same call."""
    comb = isinstance(s.y, Combined)
    y, cy, cw = (s.x, s.y.y, s.y.weights) if comb else (s.y, s.x, NO_WEIGHT.reshape(1, 1))
    s.value = np.empty_like(s.x)
    out = np.empty_like(s.x) if w is not None else s.value
    dense.residual_norm(s.x, y, cy, cw, comb, NO_WEIGHT if w is None else w, float(eps), w is not None, s.value, out)
    return out if w is not None else None


def materialize(a):
    """The array a deferred value stands for (arrays pass through)."""
    if not isinstance(a, LAZY):
        return a
    if isinstance(a, Sum):
        if a.value is None:
            residual_norm(a, None)
        return a.value
    if isinstance(a, Combined):
        out = np.empty(a.shape, np.float32)
        moe.combine.serial(a.y, a.weights, out)
        return out
    out = np.empty_like(a.x)
    if a.cs is None:
        dense.rms_norm_heads.serial(a.x, a.w, float(a.eps), int(a.head_dim), out)
    else:
        dense.norm_rope_rows(a.x, a.w, a.do_norm, float(a.eps), int(a.head_dim), a.cs, a.sn, out)
    return out
