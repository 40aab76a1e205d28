"""Simulator switch, warp helpers and one-instruction PTX intrinsics, each with a plain-Python twin.

The CUDA simulator (NUMBA_ENABLE_CUDASIM=1, what CI runs) has no warp intrinsics and no inline PTX. Every helper
here therefore exists twice: the GPU version (shuffles, ``@intrinsic`` inline PTX) and a simulator version with
the same results, written with shared memory and ``syncthreads``. Kernels call only these names, so the kernel
code that runs in CI is the code that runs on the GPU.

Rule for kernels (the simulator versions synchronise the whole block): call every warp helper uniformly, from
every thread of the block, the same number of times (mask the work, never skip the call). Blocks are 1-D.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from numba import cuda

# decode-step kernels are small on purpose (one token): numba's low-occupancy note would flood stderr
warnings.filterwarnings("ignore", message=r".*will likely result in GPU under-utilization")

# The simulator swaps numba.cuda's API for Python versions; its jit lives in numba.cuda.simulator.
SIM = cuda.jit.__module__.startswith("numba.cuda.simulator") or "simulator" in getattr(cuda.jit, "__module__", "")
FULL = 0xFFFFFFFF
MAX_THREADS = 1024  # exchange buffers of the simulator versions cover the largest block


def jit(*args, **kw):
    """``cuda.jit`` with the disk cache on where it works (compile time never lands in a measured row); the
    simulator takes no register cap (``max_registers``)."""
    if SIM:
        kw.pop("max_registers", None)
    else:
        kw.setdefault("cache", True)
    return cuda.jit(*args, **kw)


def device(fn):
    return cuda.jit(device=True, inline=True)(fn) if not SIM else cuda.jit(device=True)(fn)


def _grid_dep_supported() -> bool:
    """Whether kernels carry ``griddepcontrol.wait`` (sm_90 and later: Hopper's programmatic dependent launch).
    SWEEPBENCH_CUDA_GRIDDEP=1 / 0 decides without asking the GPU (the compile check targets sm_90 with none)."""
    forced = os.environ.get("SWEEPBENCH_CUDA_GRIDDEP")
    if forced is not None:
        return forced == "1"
    try:
        return cuda.is_available() and tuple(cuda.get_current_device().compute_capability) >= (9, 0)
    except Exception:  # noqa: BLE001 - no driver, no device: plain kernels
        return False


# ------------------------------------------------------------------------------------------------ GPU versions
if not SIM:
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    _I32, _F32 = ir.IntType(32), ir.FloatType()

    def _cast_all(context, builder, sig, args, to):
        return [context.cast(builder, a, t, to) for a, t in zip(args, sig.args)]

    def _int_asm(text: str, n_in: int, ret=types.uint32):
        """An intrinsic for a PTX instruction on n_in 32-bit registers returning one 32-bit register."""

        def typer(typingctx, *args):
            if len(args) != n_in or not all(isinstance(a, types.Integer) for a in args):
                return None

            def codegen(context, builder, sig, a):
                fnty = ir.FunctionType(_I32, [_I32] * n_in)
                asm = ir.InlineAsm(fnty, text, "=r" + ",r" * n_in)
                return builder.call(asm, _cast_all(context, builder, sig, a, types.uint32))

            return ret(*args), codegen

        return typer

    @intrinsic
    def dp4a(typingctx, a, b, c):
        """c + sum of the 4 signed byte products of a and b (IDP.4A.S8.S8)."""
        return _int_asm("dp4a.s32.s32 $0, $1, $2, $3;", 3, types.int32)(typingctx, a, b, c)

    @intrinsic
    def prmt(typingctx, a, b, sel):
        """Byte permute: result byte i = byte (sel >> 4i) & 7 of the 8-byte value b:a."""
        return _int_asm("prmt.b32 $0, $1, $2, $3;", 3)(typingctx, a, b, sel)

    @intrinsic
    def hsub2(typingctx, a, b):
        return _int_asm("sub.rn.f16x2 $0, $1, $2;", 2)(typingctx, a, b)

    @intrinsic
    def hmul2(typingctx, a, b):
        return _int_asm("mul.rn.f16x2 $0, $1, $2;", 2)(typingctx, a, b)

    @intrinsic
    def hfma2(typingctx, a, b, c):
        return _int_asm("fma.rn.f16x2 $0, $1, $2, $3;", 3)(typingctx, a, b, c)

    @intrinsic
    def pack_h2(typingctx, lo, hi):
        """Two float32 -> one f16x2 word (lo in the low half), round to nearest even."""
        sig = types.uint32(lo, hi)

        def codegen(context, builder, sig, args):
            x, y = [context.cast(builder, v, t, types.float32) for v, t in zip(args, sig.args)]
            asm = ir.InlineAsm(ir.FunctionType(_I32, [_F32, _F32]), "cvt.rn.f16x2.f32 $0, $1, $2;", "=r,f,f")
            return builder.call(asm, [y, x])  # PTX puts its first source operand in the upper half

        return sig, codegen

    @intrinsic
    def unpack_h2(typingctx, w):
        """One f16x2 word -> (low, high) as float32."""
        sig = types.UniTuple(types.float32, 2)(w)

        def codegen(context, builder, sig, args):
            v = context.cast(builder, args[0], sig.args[0], types.uint32)
            fnty = ir.FunctionType(ir.LiteralStructType([_F32, _F32]), [_I32])
            asm = ir.InlineAsm(fnty, "{ .reg .b16 l, h; mov.b32 {l, h}, $2; cvt.f32.f16 $0, l; cvt.f32.f16 $1, h; }",
                               "=f,=f,r")
            st = builder.call(asm, [v])
            return context.make_tuple(builder, sig.return_type, [builder.extract_value(st, i) for i in range(2)])

        return sig, codegen

    @intrinsic
    def ex2(typingctx, x):
        """2**x in float32 on the special-function unit (MUFU.EX2: one instruction, ~2 ulp; -inf -> 0),
        where math.exp compiles to a precise expf of a dozen instructions."""
        if not isinstance(x, (types.Float, types.Integer)):
            return None
        sig = types.float32(x)

        def codegen(context, builder, sig, args):
            v = context.cast(builder, args[0], sig.args[0], types.float32)
            asm = ir.InlineAsm(ir.FunctionType(_F32, [_F32]), "ex2.approx.ftz.f32 $0, $1;", "=f,f")
            return builder.call(asm, [v])

        return sig, codegen

    @intrinsic
    def mma_f16(typingctx, a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
        """D = A B + C for one m16n8k16 tile (f16 inputs as f16x2 words, f32 accumulators): HMMA.16816.F32."""
        sig = types.UniTuple(types.float32, 4)(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3)

        def codegen(context, builder, sig, args):
            ins = [context.cast(builder, v, t, types.uint32) for v, t in zip(args[:6], sig.args[:6])]
            ins += [context.cast(builder, v, t, types.float32) for v, t in zip(args[6:], sig.args[6:])]
            fnty = ir.FunctionType(ir.LiteralStructType([_F32] * 4), [_I32] * 6 + [_F32] * 4)
            asm = ir.InlineAsm(fnty, "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                               "{$0,$1,$2,$3}, {$4,$5,$6,$7}, {$8,$9}, {$10,$11,$12,$13};",
                               "=f,=f,=f,=f,r,r,r,r,r,r,f,f,f,f")
            st = builder.call(asm, ins)
            return context.make_tuple(builder, sig.return_type, [builder.extract_value(st, i) for i in range(4)])

        return sig, codegen

    def _ldg4_of(elem, reg, ptx, cons):
        """An intrinsic (arr, i) -> arr[i:i+4] of a 1-D array as one 16-byte non-coherent load (i a multiple
        of 4); ``elem`` accepts the array's dtype, ``reg`` / ``ptx`` / ``cons`` name the register type."""

        def typer(typingctx, arr, i):
            if not (isinstance(arr, types.Array) and arr.ndim == 1 and elem(arr.dtype)):
                return None
            sig = types.UniTuple(types.float32 if reg is _F32 else types.uint32, 4)(arr, i)

            def codegen(context, builder, sig, args):
                aryty, idxty = sig.args
                ary = context.make_array(aryty)(context, builder, value=args[0])
                ptr = builder.gep(ary.data, [context.cast(builder, args[1], idxty, types.intp)])
                fnty = ir.FunctionType(ir.LiteralStructType([reg] * 4), [ptr.type])
                asm = ir.InlineAsm(fnty, f"ld.global.nc.v4.{ptx} {{$0,$1,$2,$3}}, [$4];",
                                   f"{cons},{cons},{cons},{cons},l")
                st = builder.call(asm, [ptr])
                return context.make_tuple(builder, sig.return_type, [builder.extract_value(st, k) for k in range(4)])

            return sig, codegen

        return intrinsic(typer)

    @intrinsic
    def smem_base(typingctx, arr):
        """The shared-window address (32 bits) of a shared array's first element, for ``ldsm4``: taken once per
        kernel, so each ldmatrix costs an add (or an immediate offset) instead of a 64-bit address conversion."""
        if not (isinstance(arr, types.Array) and arr.ndim == 1):
            return None

        def codegen(context, builder, sig, args):
            ary = context.make_array(sig.args[0])(context, builder, value=args[0])
            fnty = ir.FunctionType(_I32, [ary.data.type])
            asm = ir.InlineAsm(fnty, "{ .reg .u64 a; cvta.to.shared.u64 a, $1; cvt.u32.u64 $0, a; }", "=r,l")
            return builder.call(asm, [ary.data])

        return types.uint32(arr), codegen

    def _ldsm4_of(trans: bool):
        """An intrinsic (arr, base, i) -> 4 words: one ldmatrix.x4 over a shared uint32 array (16-byte aligned;
        base = ``smem_base(arr)``; i a multiple of 4): lane l names the 16-byte row arr[i:i+4]; the rows of lanes
        8m .. 8m+7 are matrix m (8 x 8 f16), and every lane receives, as its m-th word, word (lane & 3) of row
        (lane >> 2) of matrix m, or with ``trans`` of matrix m transposed (halves (lane >> 2) of rows 2 (lane & 3)
        and 2 (lane & 3) + 1): an mma B fragment's word for 4 row bases in one instruction instead of 4 LDS.
        Ordered like a memory access (side effect, memory clobber): it must not move across the barrier that
        publishes the tile."""
        op = "ldmatrix.sync.aligned.m8n8.x4" + (".trans" if trans else "") + ".shared.b16"

        def typer(typingctx, arr, base, i):
            if not (isinstance(arr, types.Array) and isinstance(base, types.Integer) and isinstance(i, types.Integer)):
                return None
            sig = types.UniTuple(types.uint32, 4)(arr, base, i)

            def codegen(context, builder, sig, args):
                b = context.cast(builder, args[1], sig.args[1], types.uint32)
                off = context.cast(builder, args[2], sig.args[2], types.uint32)
                addr = builder.add(b, builder.shl(off, ir.Constant(_I32, 2)))
                fnty = ir.FunctionType(ir.LiteralStructType([_I32] * 4), [_I32])
                asm = ir.InlineAsm(fnty, op + " {$0,$1,$2,$3}, [$4];", "=r,=r,=r,=r,r,~{memory}", side_effect=True)
                st = builder.call(asm, [addr])
                return context.make_tuple(builder, sig.return_type, [builder.extract_value(st, k) for k in range(4)])

            return sig, codegen

        return intrinsic(typer)

    ldsm4, ldsm4t = _ldsm4_of(False), _ldsm4_of(True)

    @intrinsic
    def sts4(typingctx, arr, base, i, a, b, c, d):
        """arr[i:i+4] = a, b, c, d as one 16-byte shared store (st.shared.v4.b32; base = ``smem_base(arr)``, i a
        multiple of 4): a quarter of the instructions of four 4-byte stores, and where the 8 lanes of each
        quarter warp write 8 different 16-byte bank groups, one wavefront per quarter."""
        words = (arr, base, i, a, b, c, d)
        if not (isinstance(arr, types.Array) and all(isinstance(x, types.Integer) for x in words[1:])):
            return None

        def codegen(context, builder, sig, args):
            vals = [context.cast(builder, v, t, types.uint32) for v, t in zip(args[1:], sig.args[1:])]
            addr = builder.add(vals[0], builder.shl(vals[1], ir.Constant(_I32, 2)))
            fnty = ir.FunctionType(ir.VoidType(), [_I32] * 5)
            asm = ir.InlineAsm(fnty, "st.shared.v4.b32 [$0], {$1,$2,$3,$4};", "r,r,r,r,r,~{memory}",
                               side_effect=True)
            builder.call(asm, [addr] + vals[2:])
            return context.get_dummy_value()

        return types.void(*words), codegen

    ldg4 = _ldg4_of(lambda dt: isinstance(dt, types.Integer) and dt.bitwidth == 32, _I32, "u32", "=r")  # words
    ldg4f = _ldg4_of(lambda dt: dt == types.float32, _F32, "f32", "=f")  # float32

    GRID_DEP = _grid_dep_supported()

    @intrinsic
    def _griddep_wait(typingctx):
        def codegen(context, builder, sig, args):
            asm = ir.InlineAsm(ir.FunctionType(ir.VoidType(), []), "griddepcontrol.wait;", "~{memory}",
                               side_effect=True)
            builder.call(asm, [])
            return context.get_dummy_value()

        return types.void(), codegen

    @intrinsic
    def prefetch_l2(typingctx, arr, i):
        """Ask L2 to fetch the 128-byte line holding arr[i] (1-D global array); no register, no wait."""
        if not (isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(i, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            aryty, idxty = sig.args
            ary = context.make_array(aryty)(context, builder, value=args[0])
            ptr = builder.gep(ary.data, [context.cast(builder, args[1], idxty, types.intp)])
            asm = ir.InlineAsm(ir.FunctionType(ir.VoidType(), [ptr.type]), "prefetch.global.L2 [$0];", "l",
                               side_effect=True)
            builder.call(asm, [ptr])
            return context.get_dummy_value()

        return types.void(arr, i), codegen

    if GRID_DEP:
        @device
        def grid_dep_wait():
            """Every kernel's first statement: wait until the grids this one depends on have finished and their
            writes are visible. A no-op for a normal launch; in a CUDA graph whose edges are programmatic
            (``graph.Graph(pdl=...)``) the kernel's blocks start while its predecessor still runs and park here,
            so the launch latency overlaps the predecessor's tail instead of following it."""
            _griddep_wait()
    else:
        @device
        def grid_dep_wait():
            pass

    @device
    def lane_id():
        return cuda.threadIdx.x & 31

    @device
    def shfl_xor(v, m):
        return cuda.shfl_xor_sync(FULL, v, m)

    @device
    def warp_barrier():
        """Orders the shared-memory traffic of one warp (the simulator's version synchronises the block)."""
        cuda.syncwarp(FULL)

    @device
    def shfl_idx(v, src):
        return cuda.shfl_sync(FULL, v, src)

    @device
    def warp_sum(v):
        for m in (16, 8, 4, 2, 1):
            v += cuda.shfl_xor_sync(FULL, v, m)
        return v

    @device
    def warp_max(v):
        for m in (16, 8, 4, 2, 1):
            v = max(v, cuda.shfl_xor_sync(FULL, v, m))
        return v

    @device
    def warp_argmax(v, i):
        """(max value, its index) over the warp; ties go to the larger index (ik's CPU order)."""
        for m in (16, 8, 4, 2, 1):
            ov = cuda.shfl_xor_sync(FULL, v, m)
            oi = cuda.shfl_xor_sync(FULL, i, m)
            if ov > v or (ov == v and oi > i):
                v, i = ov, oi
        return v, i

    @device
    def warp_prefix_count(flag):
        """(number of lanes below this one with flag set, total over the warp)."""
        bal = cuda.ballot_sync(FULL, flag)
        below = bal & ((np.uint32(1) << np.uint32(cuda.threadIdx.x & 31)) - np.uint32(1))
        return cuda.popc(below), cuda.popc(bal)


# ------------------------------------------------------------------------------------------ simulator versions
else:
    def _u32(x) -> int:
        return int(x) & 0xFFFFFFFF

    def _h2(w) -> np.ndarray:
        return np.array([_u32(w) & 0xFFFF, _u32(w) >> 16], np.uint16).view(np.float16).astype(np.float64)

    def _from_h2(lo: float, hi: float) -> np.uint32:
        b = np.array([lo, hi], np.float64).astype(np.float16).view(np.uint16).astype(np.uint32)
        return np.uint32(int(b[0]) | (int(b[1]) << 16))

    def _dp4a(a, b, c):
        av = np.array([_u32(a)], np.uint32).view(np.int8).astype(np.int64)
        bv = np.array([_u32(b)], np.uint32).view(np.int8).astype(np.int64)
        return np.int32(np.int64(int(c) + int((av * bv).sum())))

    def _prmt(a, b, sel):
        v = _u32(a) | (_u32(b) << 32)
        s = _u32(sel)
        out = 0
        for k in range(4):
            byte = (v >> (8 * ((s >> (4 * k)) & 7))) & 0xFF
            out |= byte << (8 * k)
        return np.uint32(out)

    def _hsub2(a, b):
        x, y = _h2(a), _h2(b)
        return _from_h2(x[0] - y[0], x[1] - y[1])

    def _hmul2(a, b):
        x, y = _h2(a), _h2(b)
        return _from_h2(x[0] * y[0], x[1] * y[1])

    def _hfma2(a, b, c):
        x, y, z = _h2(a), _h2(b), _h2(c)
        return _from_h2(x[0] * y[0] + z[0], x[1] * y[1] + z[1])

    def _pack_h2(lo, hi):
        return _from_h2(np.float32(lo), np.float32(hi))

    def _unpack_h2(w):
        v = _h2(w)
        return np.float32(v[0]), np.float32(v[1])

    def _ldg4(arr, i):
        return np.uint32(arr[i]), np.uint32(arr[i + 1]), np.uint32(arr[i + 2]), np.uint32(arr[i + 3])

    def _ex2(x):
        return np.float32(np.exp2(np.float32(x)))

    def _ldg4f(arr, i):
        return np.float32(arr[i]), np.float32(arr[i + 1]), np.float32(arr[i + 2]), np.float32(arr[i + 3])

    dp4a, prmt, hsub2, hmul2, hfma2 = (device(f) for f in (_dp4a, _prmt, _hsub2, _hmul2, _hfma2))
    pack_h2, unpack_h2, ldg4, ldg4f = device(_pack_h2), device(_unpack_h2), device(_ldg4), device(_ldg4f)
    ex2 = device(_ex2)

    def _tid():
        return cuda.threadIdx.x

    def _lane_id():
        return cuda.threadIdx.x & 31

    lane_id = device(_lane_id)
    GRID_DEP = False  # the simulator runs launches one after the other

    def _grid_dep_wait():
        pass

    grid_dep_wait = device(_grid_dep_wait)

    def _prefetch_l2(arr, i):
        pass

    prefetch_l2 = device(_prefetch_l2)

    import threading

    _calls = threading.local()  # each simulated CUDA thread is an OS thread: its own call counter

    def _parity(name: str) -> int:
        """Alternate between two buffers per call: one barrier per exchange suffices, because nobody can write
        a buffer again before every thread has passed the next barrier, i.e. finished reading it."""
        n = getattr(_calls, name, 0)
        setattr(_calls, name, n + 1)
        return n & 1

    def _exchange(v):
        """Every thread's v -> the block-wide array of them (one barrier; see the rule in the docstring)."""
        buf = cuda.shared.array((2, MAX_THREADS), np.float64)
        p = _parity("x")
        buf[p, _tid()] = v
        cuda.syncthreads()
        return buf[p]

    def _warp_vals(v):
        buf = _exchange(float(v))
        base = _tid() & ~31
        return [buf[base + k] for k in range(32)]

    def _typed(like, x):
        return type(like)(x) if isinstance(like, np.generic) else x

    def _shfl_xor(v, m):
        vals = _warp_vals(v)
        return _typed(v, vals[_lane_id() ^ int(m)])

    def _shfl_idx(v, src):
        vals = _warp_vals(v)
        return _typed(v, vals[int(src) & 31])

    def _warp_sum(v):
        vals = [np.float32(x) for x in _warp_vals(v)]
        for m in (16, 8, 4, 2, 1):  # the GPU's butterfly order, so both give the same bits
            vals = [np.float32(vals[k] + vals[k ^ m]) for k in range(32)]
        return _typed(v, vals[_lane_id()])

    def _warp_max(v):
        return _typed(v, max(_warp_vals(v)))

    def _warp_argmax(v, i):
        vals, idx = _warp_vals(v), _warp_vals(i)
        best = 0
        for k in range(1, 32):
            if vals[k] > vals[best] or (vals[k] == vals[best] and idx[k] > idx[best]):
                best = k
        return _typed(v, vals[best]), _typed(i, int(idx[best]))

    def _warp_prefix_count(flag):
        flags = _warp_vals(1.0 if flag else 0.0)
        lane = _lane_id()
        return int(sum(flags[:lane])), int(sum(flags))

    shfl_xor, shfl_idx, warp_sum, warp_max = (device(f) for f in (_shfl_xor, _shfl_idx, _warp_sum, _warp_max))

    def _warp_barrier():
        cuda.syncthreads()

    warp_barrier = device(_warp_barrier)
    warp_argmax, warp_prefix_count = device(_warp_argmax), device(_warp_prefix_count)

    def _mma_f16(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
        """The warp's fragments gathered through shared memory, then the tile product in float64."""
        buf = cuda.shared.array((2, MAX_THREADS, 6), np.uint32)
        p, t = _parity("mma"), _tid()
        regs = buf[p]
        for k, r in enumerate((a0, a1, a2, a3, b0, b1)):
            regs[t, k] = _u32(r)
        cuda.syncthreads()
        base = t & ~31
        a = np.zeros((16, 16))
        bt = np.zeros((8, 16))
        for ln in range(32):
            g, q = ln >> 2, ln & 3
            for k, (row, col) in enumerate(((g, 2 * q), (g + 8, 2 * q), (g, 2 * q + 8), (g + 8, 2 * q + 8))):
                a[row, col : col + 2] = _h2(regs[base + ln, k])
            bt[g, 2 * q : 2 * q + 2] = _h2(regs[base + ln, 4])
            bt[g, 2 * q + 8 : 2 * q + 10] = _h2(regs[base + ln, 5])
        d = a @ bt.T  # [16, 8]
        g, q = _lane_id() >> 2, _lane_id() & 3
        return (np.float32(d[g, 2 * q] + c0), np.float32(d[g, 2 * q + 1] + c1),
                np.float32(d[g + 8, 2 * q] + c2), np.float32(d[g + 8, 2 * q + 1] + c3))

    mma_f16 = device(_mma_f16)

    def _smem_base(arr):
        return np.uint32(0)  # unused here: the twin reads arr itself

    def _aligned16(i, op):
        """A word index i of a 16-byte access: an error where it is not a multiple of 4, as on the GPU."""
        if int(i) % 4:
            raise ValueError(f"{op}: word {int(i)} is not 16-byte aligned")

    def _ldsm4(arr, base, i):
        """ldmatrix.x4 from the warp's row addresses: word (lane & 3) of row (lane >> 2) of each matrix m (the
        rows named by lanes 8m .. 8m+7); a row that is not 16-byte aligned is an error, as on the GPU."""
        _aligned16(i, "ldsm4")
        rows = _warp_vals(i)
        g, q = _lane_id() >> 2, _lane_id() & 3
        return tuple(np.uint32(arr[int(rows[8 * m + g]) + q]) for m in range(4))

    def _half(arr, row, col):
        return (int(arr[row + (col >> 1)]) >> (16 * (col & 1))) & 0xFFFF

    def _ldsm4t(arr, base, i):
        """ldmatrix.x4.trans: each matrix transposed, so a lane's m-th word packs half (lane >> 2) of rows
        2 (lane & 3) (low) and 2 (lane & 3) + 1 (high) of matrix m."""
        _aligned16(i, "ldsm4t")
        rows = _warp_vals(i)
        g, q = _lane_id() >> 2, _lane_id() & 3
        return tuple(np.uint32(_half(arr, int(rows[8 * m + 2 * q]), g) | _half(arr, int(rows[8 * m + 2 * q + 1]), g)
                               << 16) for m in range(4))

    def _sts4(arr, base, i, a, b, c, d):
        _aligned16(i, "sts4")
        arr[i], arr[i + 1], arr[i + 2], arr[i + 3] = a, b, c, d

    smem_base, ldsm4, ldsm4t, sts4 = device(_smem_base), device(_ldsm4), device(_ldsm4t), device(_sts4)
