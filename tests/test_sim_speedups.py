"""The simulator speed-ups of ``sim_speedups`` keep the simulator's semantics: shared arrays per call site and
block, barriers over the live threads, and a failing thread reported instead of a hang."""
from __future__ import annotations

import numpy as np
import pytest
from cuda_sim import REAL_GPU, cuda_module

if REAL_GPU:
    pytest.skip("simulator only", allow_module_level=True)
cuda = cuda_module()
pytestmark = pytest.mark.timeout(120)  # a barrier that waited for a returned thread would hang


def test_the_speedups_are_on():
    from numba.cuda.simulator import kernel, kernelapi

    assert kernel.BlockManager._sweepbench_fast and kernelapi.FakeCUDAShared.array.__name__ == "shared_array"


def test_block_sum_through_shared_memory_and_barriers():
    """Each block sums its 32 values by halving through one shared array (a barrier per step), twice per launch."""
    @cuda.jit
    def block_sum(x, out):
        buf = cuda.shared.array(32, np.float64)
        t, b = cuda.threadIdx.x, cuda.blockIdx.x
        for rep in range(2):
            buf[t] = x[b * 32 + t] * (rep + 1)
            cuda.syncthreads()
            step = 16
            while step > 0:
                if t < step:
                    buf[t] += buf[t + step]
                cuda.syncthreads()
                step //= 2
            if t == 0:
                out[b, rep] = buf[0]
            cuda.syncthreads()

    x = np.arange(96, dtype=np.float64)
    out = np.zeros((3, 2))
    block_sum[3, 32](x, out)
    want = x.reshape(3, 32).sum(axis=1)
    assert np.array_equal(out, np.stack([want, 2 * want], axis=1))


def test_threads_that_returned_do_not_hold_a_barrier():
    @cuda.jit
    def half_return(out):
        buf = cuda.shared.array(8, np.int64)
        t = cuda.threadIdx.x
        if t >= 4:
            return
        buf[t] = t + 1
        cuda.syncthreads()
        out[t] = buf[(t + 1) % 4]

    out = np.zeros(8, np.int64)
    half_return[1, 8](out)
    assert out.tolist() == [2, 3, 4, 1, 0, 0, 0, 0]


def test_a_failing_thread_is_reported_and_the_others_do_not_hang():
    @cuda.jit
    def one_fails(out):
        t = cuda.threadIdx.x
        if t == 5:
            out[100] = 1  # out of bounds: IndexError in the simulator
        cuda.syncthreads()
        out[t] = t

    with pytest.raises(IndexError, match="tid=\\[5, 0, 0\\]"):
        one_fails[1, 16](np.zeros(16, np.int64))
