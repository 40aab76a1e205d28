"""Capturing numba kernel launches on a stream into a CUDA graph, and replaying it (driver API, cuda-bindings).

A numba launch costs 17-60 us of host time on an H200; a replayed graph node about 1 us. Everything a captured
step touches must be a static device buffer (pointers and scalars are baked into the graph): the position and
token ids live in device scalars written before each replay, so one graph serves every position. Capture must
not allocate, free, copy from pageable memory or compile: the caller runs the same step once eagerly first.
"""
from __future__ import annotations

import sys

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


def _ptr(a) -> int:
    """The address of a numba device array, or of a NumPy (pinned host) array."""
    dev = getattr(a, "device_ctypes_pointer", None)
    return int(dev.value) if dev is not None else int(a.ctypes.data)


def copy_async(dst, src, stream) -> None:
    """dst[...] = src on ``stream`` through one driver call (pinned host <-> device, either way round): a few us of
    host time where a numba copy method costs tens, and inside a capture it becomes the graph's memcpy node."""
    drv = _driver()
    n = int(src.nbytes)
    hs = raw_stream(stream)
    if getattr(dst, "device_ctypes_pointer", None) is not None:
        _check(drv.cuMemcpyHtoDAsync(_ptr(dst), _ptr(src), n, hs), "cuMemcpyHtoDAsync")
    else:
        _check(drv.cuMemcpyDtoHAsync(_ptr(dst), _ptr(src), n, hs), "cuMemcpyDtoHAsync")


PDL_PORTS = ("order", "exit")  # SWEEPBENCH_CUDA_PDL values besides off (see ``programmatic_edges``)


def programmatic_edges(graph, port: str) -> int:
    """Turn every kernel -> kernel edge of a captured graph into a programmatic one (Hopper's programmatic
    dependent launch); returns how many were turned. The dependent kernel is then launched early and its blocks
    park in ``env.grid_dep_wait`` (every kernel's first statement) until the predecessor has finished and its
    writes are visible, so the launch latency of a node hides behind its predecessor instead of following it.
    Nothing runs before the wait, hence the order and the bits are those of the plain graph.
      order: launched once every block of the predecessor has started (the most overlap)
      exit:  launched once every block of the predecessor has exited (before its memory flush)
    """
    drv = _driver()
    res = drv.cuGraphGetEdges(graph, 0)
    n = int(res[-1])
    if n == 0:
        return 0
    res = drv.cuGraphGetEdges(graph, n)
    _check(res, "cuGraphGetEdges")
    src, dst = res[1], res[2]
    kernel = drv.CUgraphNodeType.CU_GRAPH_NODE_TYPE_KERNEL

    def is_kernel(node) -> bool:
        return _check(drv.cuGraphNodeGetType(node), "cuGraphNodeGetType") == kernel

    pairs = [(a, b) for a, b in zip(src[:n], dst[:n]) if is_kernel(a) and is_kernel(b)]
    if not pairs:
        return 0
    data = drv.CUgraphEdgeData()
    data.type = drv.CUgraphDependencyType.CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC
    data.from_port = (drv.CU_GRAPH_KERNEL_NODE_PORT_LAUNCH_ORDER if port == "order"
                      else drv.CU_GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC)
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    # cuda-bindings 12.3-12.x name the edge-data versions *_v2; 13.x gives the plain names that signature
    remove = getattr(drv, "cuGraphRemoveDependencies_v2", drv.cuGraphRemoveDependencies)
    add = getattr(drv, "cuGraphAddDependencies_v2", drv.cuGraphAddDependencies)
    _check(remove(graph, a, b, None, len(pairs)), "cuGraphRemoveDependencies")
    _check(add(graph, a, b, [data] * len(pairs), len(pairs)), "cuGraphAddDependencies")
    return len(pairs)


class Graph:
    """One captured sequence of launches on ``stream``; ``replay()`` enqueues it again on the same stream.
    ``pdl`` (off, or one of PDL_PORTS) makes its kernel -> kernel edges programmatic (``programmatic_edges``)."""

    def __init__(self, stream, pdl: str = "off"):
        self.stream = stream
        self._hs = raw_stream(stream)
        self._exec = None
        self._graph = None
        self.n_nodes = 0
        self.pdl = pdl
        self.n_programmatic = 0

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
        try:
            if self.pdl != "off":
                self.n_programmatic = programmatic_edges(self._graph, self.pdl)
            self._exec = _check(drv.cuGraphInstantiate(self._graph, 0), "cuGraphInstantiate")
        except Exception as e:  # noqa: BLE001 - whatever the bindings raise, the plain graph still works
            if self.pdl == "off":
                raise
            # a driver or cuda-bindings without programmatic edges: the plain graph, said once on stderr
            print(f"warning: CUDA graph without programmatic edges ({e})", file=sys.stderr)
            self.close()
            self.pdl, self.n_programmatic = "off", 0
            return self.capture(fn)
        res = drv.cuGraphGetNodes(self._graph, 0)
        self.n_nodes = int(res[2]) if len(res) > 2 else 0
        return out

    def replay(self):
        _check(_driver().cuGraphLaunch(self._exec, self._hs), "cuGraphLaunch")

    def replay_ms(self, reps: int) -> float:
        """GPU milliseconds per replay: reps replays back to back between two events (no host in the loop)."""
        e0, e1 = cuda.event(), cuda.event()
        e0.record(self.stream)
        for _ in range(reps):
            self.replay()
        e1.record(self.stream)
        e1.synchronize()
        return cuda.event_elapsed_time(e0, e1) / reps

    def close(self):
        drv = _driver()
        if self._exec is not None:
            drv.cuGraphExecDestroy(self._exec)
        if self._graph is not None:
            drv.cuGraphDestroy(self._graph)
        self._exec = self._graph = None


def launches_us(stream, launches, reps: int = 8) -> float:
    """GPU microseconds per launch of a sequence of (kernel, grid, block, args) captured as one graph and replayed
    reps times (L2-warm, no launch overhead: what a node costs inside a decode graph). For benchmarks."""
    for kernel, grid, block, args in {id(k): (k, g, b, a) for k, g, b, a in launches}.values():
        kernel[grid, block, stream](*args)  # each kernel compiled and loaded before the capture
    stream.synchronize()
    g = Graph(stream)
    g.capture(lambda: [k[gr, b, stream](*a) for k, gr, b, a in launches])
    g.replay()
    ms = g.replay_ms(reps)
    g.close()
    return ms * 1e3 / len(launches)
