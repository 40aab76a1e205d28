"""Two speed-ups of numba-cuda's simulator for the CI suite, same semantics (applied by cuda_sim.cuda_module).

- ``cuda.shared.array`` names an array by its caller's file and line. The simulator finds them with
  ``traceback.extract_stack``, which walks the whole stack through ``linecache`` (os.stat per frame) on every call
  of every thread: a third of a simulated attention kernel's time. The caller's frame gives the same key. The
  lookup also becomes ``setdefault``: two threads that miss at once can no longer end up with different arrays.
- ``syncthreads``: the simulator's block manager busy-polls every thread for "blocked" and so holds the GIL
  against the threads it waits for. Here a condition-variable barrier over the block's live threads (a thread
  that has returned no longer counts, as in the simulator's poll) releases the block when the last one arrives.
"""
from __future__ import annotations

import sys
import threading

import numpy as np


class _BlockBarrier:
    """syncthreads for one block: releases when every live thread has arrived; ``abort`` wakes all with an error."""

    def __init__(self, n_threads: int):
        self._cond = threading.Condition()
        self._live, self._arrived, self._generation, self._broken = n_threads, 0, 0, False

    def wait(self):
        with self._cond:
            if self._broken:
                raise RuntimeError("abort flag set on syncthreads call")
            generation = self._generation
            self._arrived += 1
            if self._arrived == self._live:
                self._release()
            while generation == self._generation and not self._broken:
                self._cond.wait()
            if self._broken:
                raise RuntimeError("abort flag set on syncthreads clear")

    def leave(self):
        """A thread returned: the others no longer wait for it."""
        with self._cond:
            self._live -= 1
            if self._arrived and self._arrived == self._live:
                self._release()

    def abort(self):
        with self._cond:
            self._broken = True
            self._cond.notify_all()

    def _release(self):
        self._arrived, self._generation = 0, self._generation + 1
        self._cond.notify_all()


def apply() -> None:
    from numba.cuda.simulator import kernel, kernelapi

    if getattr(kernel.BlockManager, "_sweepbench_fast", False):
        return

    def shared_array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None or not isinstance(dtype, (type, np.dtype)):
            return original_array(self, shape, dtype, alignment)  # dynamic shared memory, numba types: as before
        frame = sys._getframe(1)
        caller = (frame.f_code.co_filename, frame.f_lineno)
        res = self._allocations.get(caller)
        if res is None:
            res = self._allocations.setdefault(caller, np.empty(shape, dtype))
        return res

    def run_block(self, grid_point, *args):
        points = list(np.ndindex(*self._block_dim))
        barrier = _BlockBarrier(len(points))

        def target():
            try:
                self._f(*args)
            except BaseException:
                barrier.abort()  # the others must not wait for this thread at a barrier
                raise
            finally:
                barrier.leave()

        threads = [kernel.BlockThread(target, self, grid_point, p, self._debug) for p in points]
        for t in threads:
            t.syncthreads_barrier = barrier
            t.start()
        for t in threads:
            t.join()
        failed = [t for t in threads if t.exception]
        # the first thread that failed for its own reason, not one woken by another's abort
        first = next((t for t in failed if "abort flag" not in str(t.exception[0])), failed[0] if failed else None)
        if first is not None:
            raise first.exception[0].with_traceback(first.exception[1])

    def syncthreads(self):
        self.syncthreads_barrier.wait()

    original_array = kernelapi.FakeCUDAShared.array
    kernelapi.FakeCUDAShared.array = shared_array
    kernel.BlockManager.run = run_block
    kernel.BlockThread.syncthreads = syncthreads
    kernel.BlockManager._sweepbench_fast = True
