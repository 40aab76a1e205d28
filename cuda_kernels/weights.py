"""Weights and the KV cache in VRAM.

``DeviceWeight``: a matrix or an expert stack in the layout of ``layout`` (flat qs / hdr device arrays).
``DeviceKV``: per layer K and V caches in the layouts of ``attention`` (f16 pairs, or q8_0 quants + scales).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import cuda

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


def upload_weight(raw: np.ndarray, qtype, row_len: int, n_mats: int = 1) -> DeviceWeight:
    hw = repack(raw, qtype, row_len, n_mats)
    qs = cuda.to_device(np.ascontiguousarray(hw.qs).reshape(-1))
    hdr = cuda.to_device(np.ascontiguousarray(hw.hdr).reshape(-1))
    return DeviceWeight(hw.kind, qs, hdr, hw.n_rows, hw.row_len, hw.n_mats, hw.n_bytes)


def upload_vector(x: np.ndarray):
    return cuda.to_device(np.ascontiguousarray(x, np.float32).reshape(-1))


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
        self.n_bytes = sum(a.nbytes for a in self.kq + self.vq) + sum(a.nbytes for a in self.kd + self.vd if a is not stub)
