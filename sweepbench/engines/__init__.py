"""Engines: ``reference`` (NumPy), ``ik`` (ik_llama.cpp via ctypes), later ``numba-cpu`` and ``numba-cuda``."""
from __future__ import annotations

from importlib import import_module

from sweepbench.errors import UsageError

# name -> "module:Class"; modules are imported only when the engine is used
ENGINES = {
    "reference": "sweepbench.engines.reference:ReferenceEngine",
    "ik": "sweepbench.engines.ik:IkEngine",
    "numba-cuda": "sweepbench.engines.numba_cuda:NumbaCudaEngine",
    "numba-cpu": "sweepbench.engines.numba_cpu:NumbaCpuEngine",
}


def create_engine(name: str):
    try:
        target = ENGINES[name]
    except KeyError:
        raise UsageError(f"unknown engine '{name}' (available: {', '.join(ENGINES)})") from None
    mod, cls = target.split(":")
    return getattr(import_module(mod), cls)()
