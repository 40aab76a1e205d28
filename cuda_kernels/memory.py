"""Device buffers for activations: a pool of exact-size free lists, and the activation handle ``Act``.

Activations come from the pool and go back to it when their ``Act`` is dropped, so a forward pass allocates
nothing once the pool has seen its shapes, and can be captured into a CUDA graph (capture may not allocate).
Buffers are never freed: a graph keeps pointing at the ones it was captured with, and those stay valid.
"""
from __future__ import annotations

import weakref

import numpy as np
from numba import cuda


class Pool:
    def __init__(self, stream):
        self.stream = stream
        self._free: dict[tuple[int, str], list] = {}
        self.n_bytes = 0
        self.n_allocs = 0

    def get(self, n: int, dtype=np.float32):
        """A flat device array of n elements (contents undefined)."""
        key = (max(int(n), 1), np.dtype(dtype).str)
        free = self._free.get(key)
        if free:
            return free.pop()
        arr = cuda.device_array(key[0], dtype=dtype)
        self.n_bytes += arr.nbytes
        self.n_allocs += 1
        return arr

    def put(self, arr) -> None:
        self._free.setdefault((arr.size, arr.dtype.str), []).append(arr)


class Act:
    """A float32 activation [rows, cols] on the device (flat buffer ``f``), with optional companions: ``q8`` =
    (xq, xa), its q8_1 quantization, built once and shared by every GEMV that reads it, and ``h16``, its f16 pairs
    (uint32 [rows, cols / 2]) for the prefill GEMMs. An activation only a GEMM reads may be kept as f16 alone
    (``Act.half``: ``f`` is None). Buffers taken from the pool go back to it when the Act is dropped; a view
    (``parent`` set) keeps its parent alive instead."""

    __slots__ = ("f", "rows", "cols", "q8", "h16", "bufs", "parent", "__weakref__")

    def __init__(self, pool: Pool | None, f, rows: int, cols: int, parent=None):
        self.f, self.rows, self.cols, self.q8, self.h16, self.parent = f, int(rows), int(cols), None, None, parent
        self.bufs = [] if parent is not None else [f]
        if pool is not None:
            weakref.finalize(self, _release, pool, self.bufs)

    @classmethod
    def half(cls, pool: Pool, rows: int, cols: int) -> Act:
        """An activation held only as f16 pairs."""
        a = cls(pool, pool.get(rows * cols // 2, np.uint32), rows, cols)
        a.h16, a.f = a.f, None
        return a

    def attach_q8(self, xq, xa) -> None:
        self.q8 = (xq, xa)
        self.bufs += [xq, xa]

    def attach_h16(self, xh) -> None:
        self.h16 = xh
        self.bufs.append(xh)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.cols


def _release(pool: Pool, bufs: list) -> None:
    for b in bufs:
        pool.put(b)
