"""NumPy twins of the GPU-internal steps the ops table's twins (sweepbench.ref_ops) do not have, and helpers to
build device weights and activations for tests/test_cuda_*.py."""
from __future__ import annotations

import numpy as np

from sweepbench.quants import dequantize, random_rows


def q8_1(x: np.ndarray):
    """x float32 [T, K] -> (xq uint32 [T*K/4], xa float32 [T*K/32*2], the dequantized values [T, K]), as the
    kernels quantize: d = amax/127, q = round(x * (1/d)) half away from zero, s = d * sum(q)."""
    b = x.reshape(-1, 32).astype(np.float32)
    amax = np.abs(b).max(1)
    d = (amax / np.float32(127)).astype(np.float32)
    inv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
    v = (b * inv[:, None]).astype(np.float32)
    q = (np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))).astype(np.int32)
    xa = np.stack([d, d * q.sum(1).astype(np.float32)], 1).reshape(-1).astype(np.float32)
    return q.astype(np.int8).reshape(-1).view(np.uint32), xa, (q * d[:, None]).astype(np.float32).reshape(x.shape)


def rel(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def weight(qtype, n_rows: int, row_len: int, rng, n_mats: int = 1):
    """(DeviceWeight, float32 dequantized [n_mats * n_rows, row_len])."""
    from cuda_kernels.weights import upload_weight

    raw = random_rows(qtype, n_mats * n_rows, row_len, rng)
    return upload_weight(raw, qtype, row_len, n_mats), dequantize(raw, qtype, row_len)


def silu(g):
    return g / (np.float32(1) + np.exp(-g))


def kv_batch(ops, act, ours, ref, rng, pos0: int, t: int, h: int, hkv: int, d: int) -> np.ndarray:
    """A batch of t random rows at pos0: K and V stored into the device cache (ours) and the reference cache
    (ref, sweepbench.ref_ops); returns its queries [t, h*d]. ``act`` wraps a host array as the ops' activation."""
    from sweepbench import ref_ops

    q, k, v = (rng.standard_normal((t, n * d)).astype(np.float32) for n in (h, hkv, hkv))
    ops.begin(np.zeros(t, np.int64), pos0)
    ops.kv_store(ours, 0, act(ops, k), act(ops, v), pos0)
    ref_ops.kv_store(ref, 0, k, v, pos0)
    return q
