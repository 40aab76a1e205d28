"""Weights and the KV cache in VRAM.

``DeviceWeight``: a matrix or an expert stack in the layout of ``layout`` (flat qs / hdr device arrays).
``DeviceKV``: per layer K and V caches in the layouts of ``attention`` (f16 pairs, or q8_0 quants + scales).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import cuda

from cuda_kernels.env import SIM
from cuda_kernels.layout import BYTES_PER_32, repack


@dataclass
class DeviceWeight:
    kind: str
    qs: object  # flat device array
    hdr: object
    n_rows: int  # per matrix
    row_len: int
    n_mats: int = 1
    n_bytes: int = 0

    @property
    def bytes_per_row(self) -> float:
        return BYTES_PER_32[self.kind] * self.row_len / 32


@dataclass
class FusedPart:
    """Output rows lo..hi of ``whole``, a matrix fused at load from matrices that share their input (a layer's
    q, k and v): the first product computes all of them, the others are views of it (one GEMV instead of three,
    whose short K / V grids could not fill the GPU)."""

    whole: DeviceWeight
    lo: int
    hi: int

    kind = property(lambda self: self.whole.kind)
    row_len = property(lambda self: self.whole.row_len)
    n_rows = property(lambda self: self.hi - self.lo)
    n_mats = property(lambda self: 1)
    n_bytes = property(lambda self: self.whole.n_bytes * (self.hi - self.lo) // self.whole.n_rows)


def fuse_rows(parts: list[DeviceWeight]) -> list[FusedPart] | None:
    """The matrices stacked along their outputs on the device (same kind and input width), or None."""
    first = parts[0]
    if any(p.kind != first.kind or p.row_len != first.row_len or p.n_mats != 1 for p in parts):
        return None
    qs = cuda.device_array(sum(p.qs.size for p in parts), first.qs.dtype)
    hdr = first.hdr if first.kind in ("f32", "f16") else cuda.device_array(sum(p.hdr.size for p in parts),
                                                                               first.hdr.dtype)
    oq = oh = 0
    for p in parts:  # rows are contiguous in qs and hdr: stacking matrices is concatenating their arrays
        qs[oq : oq + p.qs.size].copy_to_device(p.qs)
        oq += p.qs.size
        if hdr is not first.hdr:
            hdr[oh : oh + p.hdr.size].copy_to_device(p.hdr)
            oh += p.hdr.size
    whole = DeviceWeight(first.kind, qs, hdr, sum(p.n_rows for p in parts), first.row_len, 1,
                         sum(p.n_bytes for p in parts))
    out, lo = [], 0
    for p in parts:
        out.append(FusedPart(whole, lo, lo + p.n_rows))
        lo += p.n_rows
    return out


def upload_weight(raw: np.ndarray, qtype, row_len: int, n_mats: int = 1) -> DeviceWeight:
    hw = repack(raw, qtype, row_len, n_mats)
    qs = cuda.to_device(np.ascontiguousarray(hw.qs).reshape(-1))
    hdr = cuda.to_device(np.ascontiguousarray(hw.hdr).reshape(-1))
    return DeviceWeight(hw.kind, qs, hdr, hw.n_rows, hw.row_len, hw.n_mats, hw.n_bytes)


def upload_vector(x: np.ndarray):
    return cuda.to_device(np.ascontiguousarray(x, np.float32).reshape(-1))


def _zero(a) -> None:
    """Fill a device array with zero bytes (a driver memset; the simulator's arrays and the compile check's dry
    run ones are NumPy-backed)."""
    if isinstance(a, np.ndarray):
        a.fill(0)
    elif SIM:
        a.copy_to_device(np.zeros(a.shape, a.dtype))
    else:
        from numba.cuda.cudadrv.driver import device_memset

        device_memset(a, 0, a.nbytes)


class DeviceKV:
    """K/V of every layer for n_ctx cells. kq/vq: uint32 words; kd/vd: float32 block scales (q8_0) or a stub."""

    def __init__(self, n_layer: int, n_ctx: int, n_embd_kv: int, type_k: str, type_v: str):
        self.n_layer, self.n_ctx, self.n_embd_kv, self.type_k, self.type_v = n_layer, n_ctx, n_embd_kv, type_k, type_v
        self.kq, self.kd, self.vq, self.vd = [], [], [], []
        stub = cuda.device_array(1, np.float32)
        for _ in range(n_layer):
            for kind, q, d in ((type_k, self.kq, self.kd), (type_v, self.vq, self.vd)):
                if kind == "f16":
                    q.append(cuda.device_array(n_ctx * n_embd_kv // 2, np.uint32))
                    d.append(stub)
                else:
                    q.append(cuda.device_array(n_ctx * n_embd_kv // 4, np.uint32))
                    d.append(cuda.device_array(n_ctx * n_embd_kv // 32, np.float32))
        scales = [a for a in self.kd + self.vd if a is not stub]
        self.n_bytes = sum(a.nbytes for a in self.kq + self.vq + scales)
        for a in self.kq + self.vq + scales:
            _zero(a)  # a warm-up step reads cells no token wrote yet: zeros, not stale NaNs from a freed buffer
