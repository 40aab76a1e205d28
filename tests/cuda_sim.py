"""Import helper for tests/test_cuda_*.py: numba-cuda in its simulator (CI has no GPU), or on the real device
with SWEEPBENCH_CUDA_TESTS=gpu (benchmarks/gpu_check_and_sweep.sh on the GPU machine).

The simulator is chosen when numba.cuda is first imported; the variable is set only around that import and put
back, so no other test module (nor a subprocess) inherits it. If numba.cuda was already imported for real in this
process, the simulated tests skip with a line saying so. In the simulator, ``sim_speedups`` replaces two slow
internals (shared-array lookup, the busy-polling barrier) with same-semantics versions: 3-8x faster kernels.
"""
from __future__ import annotations

import os
import sys

import pytest
import sim_speedups

import sweepbench  # noqa: F401  (numpy shim before numba)

REAL_GPU = os.environ.get("SWEEPBENCH_CUDA_TESTS") == "gpu"


def cuda_module():
    """numba.cuda as these tests want it (skips the module when that is impossible here)."""
    pytest.importorskip("numba_cuda", reason="numba-cuda is not installed (pip install -e '.[test]')")
    if not REAL_GPU:
        if "numba.cuda" in sys.modules:
            from numba import cuda

            if not cuda.jit.__module__.startswith("numba.cuda.simulator"):
                pytest.skip("numba.cuda was imported without the simulator earlier in this process", allow_module_level=True)
            sim_speedups.apply()
            return cuda
        before = os.environ.get("NUMBA_ENABLE_CUDASIM")
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        try:
            # numba.cuda decides at its import from numba's config, which was read when numba was first
            # imported (by any earlier test module): re-read it first, then import numba.cuda
            from numba.core import config

            config.reload_config()
            from numba import cuda
        finally:
            if before is None:
                os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
            else:
                os.environ["NUMBA_ENABLE_CUDASIM"] = before
        sim_speedups.apply()
        return cuda
    from numba import cuda

    if not cuda.is_available():
        pytest.skip("SWEEPBENCH_CUDA_TESTS=gpu but no CUDA device", allow_module_level=True)
    return cuda
