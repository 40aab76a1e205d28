"""Capturing numba kernel launches on a stream into a CUDA graph, and replaying it (driver API, cuda-bindings).

A numba launch costs 17-60 us of host time on an H200; a replayed graph node about 1 us. Everything a captured
step touches must be a static device buffer (pointers and scalars are baked into the graph): the position and
token ids live in device scalars written before each replay, so one graph serves every position. Capture must
not allocate, free, copy from pageable memory or compile: the caller runs the same step once eagerly first.
"""
from __future__ import annotations

from numba import cuda


def _driver():
    from cuda.bindings import driver

    return driver


def raw_stream(stream):
    """A numba stream -> the driver's CUstream."""
    drv = _driver()
    h = stream.handle
    value = getattr(h, "value", None)
    if value is None:
        try:
            value = int(h)
        except TypeError:
            return h  # already a CUstream
    return drv.CUstream(value)


def _check(result, what: str):
    err = result[0] if isinstance(result, tuple) else result
    drv = _driver()
    if err != drv.CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"{what} failed: {err}")
    return result[1] if isinstance(result, tuple) and len(result) > 1 else None


class Graph:
    """One captured sequence of launches on ``stream``; ``replay()`` enqueues it again on the same stream."""

    def __init__(self, stream):
        self.stream = stream
        self._hs = raw_stream(stream)
        self._exec = None
        self._graph = None
        self.n_nodes = 0

    def capture(self, fn):
        """Run fn() with every launch on the stream captured (not executed); returns fn's result."""
        drv = _driver()
        mode = drv.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED
        with cuda.defer_cleanup():
            _check(drv.cuStreamBeginCapture(self._hs, mode), "cuStreamBeginCapture")
            try:
                out = fn()
            finally:
                self._graph = _check(drv.cuStreamEndCapture(self._hs), "cuStreamEndCapture")
        self._exec = _check(drv.cuGraphInstantiate(self._graph, 0), "cuGraphInstantiate")
        res = drv.cuGraphGetNodes(self._graph, 0)
        self.n_nodes = int(res[2]) if len(res) > 2 else 0
        return out

    def replay(self):
        _check(_driver().cuGraphLaunch(self._exec, self._hs), "cuGraphLaunch")

    def close(self):
        drv = _driver()
        if self._exec is not None:
            drv.cuGraphExecDestroy(self._exec)
        if self._graph is not None:
            drv.cuGraphDestroy(self._graph)
        self._exec = self._graph = None
