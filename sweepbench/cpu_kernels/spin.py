"""Atomics and a spinning barrier for threads that stay inside one compiled call (``decode_step``).

Why not Numba's ``prange``: a decode step is ~70 short phases (products, attention, small ops) that each depend
on the one before. As separate parallel launches they cost the second thread a wake-up each (~10 us after a
20 us gap: ``benchmarks/cpu_decode_probes.py launch``) plus the Python and dispatch around every op; and a
barrier *inside* a ``prange`` body could deadlock, because TBB may run both iterations on one thread. Here each
thread is a real OS thread in a ``nogil`` compiled loop, so a barrier only waits for the other thread to arrive.

``sync`` is an int64 array; every field sits on its own 64-byte line (index = field * LINE) so the threads do
not false-share. Sequentially consistent atomics: the barrier also orders every plain store before it.
"""
from __future__ import annotations

import platform

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

LINE = 8  # int64 slots per cache line

# sync fields (multiply by LINE for the index): barrier count and generation, the step command counter, the
# stop flag, the step's position, then one "asleep" flag per worker role (F_ASLEEP + role)
F_COUNT, F_GEN, F_CMD, F_STOP, F_POS, F_ASLEEP = 0, 1, 2, 3, 4, 5
MAX_ROLES = 64
N_FIELDS = F_ASLEEP + MAX_ROLES
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _slot_ptr(context, builder, arrty, arr, idx, idxty):
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.gep(data, [context.cast(builder, idx, idxty, types.int64)])


@intrinsic
def atomic_add(typingctx, arr, idx, val):
    """arr[idx] += val atomically (int64 array); returns the old value."""
    def codegen(context, builder, sig, args):
        p = _slot_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        v = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", p, v, "seq_cst")
    return types.int64(arr, idx, val), codegen


@intrinsic
def atomic_load(typingctx, arr, idx):
    def codegen(context, builder, sig, args):
        p = _slot_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        return builder.load_atomic(p, "seq_cst", 8)
    return types.int64(arr, idx), codegen


@intrinsic
def atomic_store(typingctx, arr, idx, val):
    def codegen(context, builder, sig, args):
        p = _slot_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        builder.store_atomic(context.cast(builder, args[2], sig.args[2], types.int64), p, "seq_cst", 8)
        return context.get_dummy_value()
    return types.none(arr, idx, val), codegen


@intrinsic
def cpu_relax(typingctx):
    """x86 ``pause`` in a spin loop (frees the core's pipeline, no effect on results); nothing elsewhere."""
    def codegen(context, builder, sig, args):
        if _X86:
            fn = builder.module.declare_intrinsic("llvm.x86.sse2.pause", fnty=ir.FunctionType(ir.VoidType(), []))
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.none(), codegen


@intrinsic
def cycles(typingctx):
    """The CPU's cycle counter (rdtsc on x86): spin budgets without a system call."""
    def codegen(context, builder, sig, args):
        fn = builder.module.declare_intrinsic("llvm.readcyclecounter", fnty=ir.FunctionType(ir.IntType(64), []))
        return builder.call(fn, [])
    return types.int64(), codegen


DEADLINE = 30 * 10**9  # cycle-counter ticks (~10 s) a barrier waits before it declares the step broken
BROKEN = 2  # F_STOP value of a broken step: every barrier returns at once, the caller raises


@njit(cache=True, nogil=True)
def barrier(sync, n_threads):
    """Waits until all n_threads threads called it (sense by generation: reusable at once). A thread that never
    arrives (died, or stuck for ~10 s) marks the step broken instead of hanging the caller forever."""
    if n_threads == 1:
        return
    gen = atomic_load(sync, F_GEN * LINE)
    if atomic_add(sync, F_COUNT * LINE, 1) == n_threads - 1:
        atomic_store(sync, F_COUNT * LINE, 0)
        atomic_store(sync, F_GEN * LINE, gen + 1)
        return
    t0 = cycles()
    spins = 0
    while atomic_load(sync, F_GEN * LINE) == gen:
        cpu_relax()
        spins += 1
        if spins % 4096 == 0:
            if atomic_load(sync, F_STOP * LINE) != 0:
                return
            if cycles() - t0 > DEADLINE:
                atomic_store(sync, F_STOP * LINE, BROKEN)
                return


@njit(cache=True, nogil=True)
def post(sync, pos, n_roles):
    """Thread 0 posts a step at ``pos``: returns a bit mask of the workers that were asleep (to be woken).
    The command's seq_cst add and the workers' seq_cst "asleep" store then command load cannot both miss."""
    atomic_store(sync, F_POS * LINE, pos)
    atomic_add(sync, F_CMD * LINE, 1)
    mask = 0
    for r in range(1, n_roles):
        if atomic_load(sync, (F_ASLEEP + r) * LINE) != 0:
            mask |= 1 << r
    return mask


@njit(cache=True, nogil=True)
def stop(sync):
    atomic_store(sync, F_STOP * LINE, 1)
    atomic_add(sync, F_CMD * LINE, 1)


@njit(cache=True, nogil=True)
def try_sleep(sync, role, seen):
    """A worker about to sleep: marks itself asleep unless a command arrived since ``seen`` (then returns False
    and stays awake)."""
    atomic_store(sync, (F_ASLEEP + role) * LINE, 1)
    if atomic_load(sync, F_CMD * LINE) != seen:
        atomic_store(sync, (F_ASLEEP + role) * LINE, 0)
        return False
    return True


@njit(cache=True, nogil=True)
def awake(sync, role):
    atomic_store(sync, (F_ASLEEP + role) * LINE, 0)


def ticks_per_second(seconds: float = 0.2) -> float:
    """The rate of ``cycles()`` (rdtsc runs at a fixed rate), measured against the wall clock (for profiles)."""
    import time

    @njit
    def now():
        return cycles()

    now()
    t0, c0 = time.perf_counter(), now()
    time.sleep(seconds)
    return (now() - c0) / (time.perf_counter() - t0)
