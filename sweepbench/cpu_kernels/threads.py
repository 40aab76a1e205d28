"""Numba's threading layer, chosen explicitly before the first parallel kernel runs.

Why: an empty ``prange`` costs about 3 us with tbb against several ms with the default OpenMP layer on a loaded
2-core machine (its spinning barrier waits out scheduler ticks; notes §4), and a decode step launches a few
hundred parallel kernels. pip's ``tbb`` puts libtbb.so.12 into ``<venv>/lib``, which the loader does not search,
so it is loaded here by path first. Fallbacks, in order: OpenMP with a passive wait policy, then workqueue.
"""
from __future__ import annotations

import ctypes
import os
import sys
import types

import numba

_state: dict = {}


def _load_tbb() -> bool:
    for lib in (os.path.join(sys.prefix, "lib", "libtbb.so.12"), "libtbb.so.12"):
        try:
            ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
            break
        except OSError:
            continue
    else:
        return False
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401  (fails when the tbb numba was built against is absent)
    except ImportError:
        return False
    return True


def init_threading() -> str:
    """Pick the layer (once per process, before any parallel kernel); returns the layer Numba will use.

    A layer the user forced with NUMBA_THREADING_LAYER is respected."""
    if "layer" in _state:
        return _state["layer"]
    forced = os.environ.get("NUMBA_THREADING_LAYER")
    if forced:
        _state["layer"] = forced
        return forced
    if _load_tbb():
        numba.config.THREADING_LAYER = "tbb"
    else:
        os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # read when libgomp starts, i.e. later
        numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue"]
        numba.config.THREADING_LAYER = "default"
    _state["layer"] = numba.config.THREADING_LAYER
    return _state["layer"]


def threading_layer() -> str:
    """The layer in use once a parallel kernel ran (else the one requested)."""
    try:
        return numba.threading_layer()
    except ValueError:  # nothing parallel has run yet
        return _state.get("layer", "unset")


def set_threads(n: int) -> int:
    """Use n threads (0 = every core Numba sees); returns the count in use."""
    n = numba.config.NUMBA_NUM_THREADS if n <= 0 else min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    return n


def with_serial_twin(fn):
    """``njit(parallel=True, cache=True)`` of ``fn``, plus ``.serial``: the same source compiled without threads
    (its ``prange`` becomes ``range``) under its own name, so the two cache files never mix.

    Why: the ops of a one-token decode step (norms, RoPE, routing, adds) are a few microseconds of work, but right
    after a 2-thread product a plain call costs 6 us, ``set_num_threads(1)`` + the call 21-23 us and a 1-thread
    parallel launch 29 us (``benchmarks/cpu_decode_probes.py launch``). The engine calls ``.serial`` for a few rows
    and keeps its thread count fixed."""
    parallel = numba.njit(parallel=True, cache=True)(fn)
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__, fn.__closure__)
    twin.__qualname__, twin.__module__, twin.__doc__ = fn.__qualname__ + "_serial", fn.__module__, fn.__doc__
    parallel.serial = numba.njit(cache=True)(twin)
    return parallel
