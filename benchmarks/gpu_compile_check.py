"""Compile every kernel the numba-cuda engine launches to sm_90 PTX, without a GPU, and report ptxas resources.

The engine runs "dry" on tiny synthetic models: device arrays are NumPy arrays, launches record the kernel and its
argument types instead of running. Each distinct (kernel, types) is then compiled with ``cuda.compile_ptx`` (real
numba-cuda typing and lowering, which the simulator never does) and, with --ptxas, assembled for sm_90 to read
registers, stack frame and spills. Exit 1 if anything fails to compile, or a kernel lacks the grid-dependency wait
that programmatic graph edges (``graph.programmatic_edges``) rely on.

    python benchmarks/gpu_compile_check.py [--ptxas] [--quick] [--waits-only]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import sweepbench  # noqa: F401  (numpy shim)

os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
os.environ.setdefault("SWEEPBENCH_CUDA_GRIDDEP", "1")  # compile as for sm_90: every kernel waits on its grid deps
from numba import cuda, typeof  # noqa: E402

RECORDED: dict = {}
MAX_REGS: dict = {}  # function -> its jit's register cap (``max_registers``), passed on to ptxas


class _Recorder:
    """Stands in for a cuda.jit kernel: kernel[grid, block, stream](*args) records (function, argument types)."""

    def __init__(self, fn):
        self.py_func = fn

    def __getitem__(self, config):
        def launch(*args):
            types = tuple(typeof(a) for a in args)
            RECORDED.setdefault((self.py_func, types), self.py_func.__qualname__)

        return launch


class _Stream:
    def synchronize(self):
        pass


def _dry_patches():
    import cuda_kernels.env as env

    def jit(fn=None, **kw):
        if fn is None:
            return lambda f: jit(f, **kw)
        if kw.get("max_registers"):
            MAX_REGS[fn] = kw["max_registers"]
        return _Recorder(fn)

    env.jit = jit
    cuda.device_array = lambda n, dtype=np.float32, **kw: wrap(np.zeros(n, dtype))
    cuda.to_device = lambda a, stream=None, **kw: wrap(np.array(a))
    cuda.pinned_array = lambda n, dtype=np.float32: np.zeros(n, dtype)
    cuda.stream = _Stream
    cuda.is_available = lambda: True
    cuda.defer_cleanup = __import__("contextlib").nullcontext

    class _Ctx:
        def get_memory_info(self):
            return 0, 0

    cuda.current_context = lambda: _Ctx()


class Arr(np.ndarray):
    """A NumPy array that pretends to be a device array (copy_to_device / copy_to_host)."""

    def copy_to_device(self, src, stream=None):
        self[...] = src

    def copy_to_host(self, dst=None, stream=None):
        return np.array(self) if dst is None else dst


def wrap(a):
    return a.view(Arr)


def _patch_arrays():
    """NumPy arrays pretend to be device arrays for the ops table."""
    import cuda_kernels.ops_table as ot

    real_get = ot.Pool.get
    ot.Pool.get = lambda self, n, dtype=np.float32: wrap(real_get(self, n, dtype))
    real_init = ot.CudaOps.__init__

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        self.io = wrap(np.zeros(self.io.shape[0], np.int32))
        self.posv, self.tokv = self.io[0:1], self.io[1:]

    ot.CudaOps.__init__ = init


def dry_run(quick: bool) -> None:
    from sweepbench.engines import numba_cuda
    from sweepbench.engines.base import EngineOptions
    from sweepbench.synth import write_synthetic_model

    numba_cuda.gpu_present = lambda: True
    cases = [("qwen3moe", "Q4_K", "Q8_0", "f16", False), ("bailingmoe2", "Q4_K", "Q8_0", "q8_0", True)]
    if not quick:
        cases += [("qwen3moe", t, t, "f16", False) for t in ("Q8_0", "F16", "Q6_K", "IQ4_XS")]
        cases += [("bailingmoe2", "F16", "F16", "f16", False)]
    tmp = Path(tempfile.mkdtemp())
    for arch, et, dt, kv, ger in cases:
        path = tmp / f"{arch}-{et}-{dt}.gguf"
        write_synthetic_model(path, "tiny", arch, et, dt, seed=0, threads=2)
        eng = numba_cuda.NumbaCudaEngine()
        eng.use_graphs = False
        eng.load(str(path), EngineOptions(n_ctx=64, n_ubatch=32, type_k=kv, type_v=kv, grouped_routing=ger))
        eng.warmup()
        eng.prefill(np.arange(20) % 300, 0)
        eng.ops.q8_prefill = "stage"  # a q8_0 cache dequantized per tile (SWEEPBENCH_CUDA_Q8_PREFILL=stage)
        eng.prefill(np.arange(20) % 300, 0)
        eng.decode(5, 20)
        eng.decode(6, 21)
        eng.ops.gemv_prefetch = eng.ops.route_tails = True  # the L2-prefetching GEMVs (SWEEPBENCH_CUDA_PREFETCH=on)
        eng.decode(7, 22)
        print(f"dry run {arch} {et}/{dt} kv {kv}{' -ger' if ger else ''}: {len(RECORDED)} kernel variants so far")


def full_size_attention() -> None:
    """The decode split kernels (f16 and q8_0 caches) and the prefill kernel's variants at the full models' head
    size (D = 128): the tiny models' heads are smaller, and register use (hence blocks per SM) depends on D."""
    from numba import types as nt

    from cuda_kernels import attention as att

    f32, u32, i32, i64 = nt.float32[::1], nt.uint32[::1], nt.int32[::1], nt.int64
    sig = (f32, u32, f32, u32, f32, i32, f32, f32, i64, i64, i64, nt.float32, i64)
    tail = (f32, u32, f32, i32, nt.boolean)  # the warp split's out, xq, xa, counter, q8
    for q8 in (False, True):
        kv = "q8_0" if q8 else "f16"
        for name, k, extra in ((f"warp_split D128 {kv}", att.warp_split_kernel(128, q8, q8), tail),
                               (f"warp_split fused D128 {kv}", att.warp_split_kernel(128, q8, q8, fused=True), tail),
                               (f"split(tile) D128 {kv}", att.split_kernel(128, q8, q8), ())):
            RECORDED[(k.py_func, sig + extra)] = name
    low = att.warp_split_kernel(128, True, True, tpw=2)  # SWEEPBENCH_CUDA_Q8_DECODE=inline, shallow steps
    RECORDED[(low.py_func, sig + tail)] = "warp_split 2 tiles D128 q8_0"
    for tpw in (4, 2):  # the default q8_0 decode (SWEEPBENCH_CUDA_Q8_DECODE=hoist)
        k = att.warp_split_kernel(128, True, True, tpw=tpw, hoist=True)
        RECORDED[(k.py_func, sig + tail)] = f"warp_split hoisted {tpw} tiles D128 q8_0"
    from cuda_kernels import flash

    prefill_sig = (f32, u32, f32, u32, f32, i32, f32, i64, i64, i64, nt.float32)
    for variant in flash.VARIANTS:  # SWEEPBENCH_CUDA_FLASH; the f16 cache every default prefill reads
        k = flash.prefill_kernel(128, False, False, variant)
        RECORDED[(k.py_func, prefill_sig)] = f"prefill {variant} D128 f16"
    k = flash.prefill_kernel(128, False, False, "ex2-wide-trans", split=True)  # SWEEPBENCH_CUDA_FLASH_SPLIT
    RECORDED[(k.py_func, prefill_sig)] = "prefill ex2-wide-trans split D128 f16"
    k = flash.prefill_kernel(128, False, False, "ex2-wide-trans", yh=True)  # f16 pairs for the O projection
    RECORDED[(k.py_func, prefill_sig[:6] + (u32,) + prefill_sig[7:])] = "prefill ex2-wide-trans f16-out D128 f16"


def gemm_variants() -> None:
    """The prefill GEMMs the default engine launches on a Q4_K / Q8_0 model, named (the dry run names every GEMM
    ``kernel.<locals>.gemm``), with float32 and f16 activations (SWEEPBENCH_CUDA_GEMM_X), late and late-swz
    staging: the register counts benchmarks/NOTES.md quotes."""
    from numba import types as nt

    from cuda_kernels import gemm

    f32, u32, i32, i64 = nt.float32[::1], nt.uint32[::1], nt.int32[::1], nt.int64
    for variant in ("late", "late-swz"):
        for xact in ("f32", "f16"):
            for name, kind, gathered, fused in (("dense Q8_0", "q8_0", False, False),
                                                ("grouped down Q4_K", "q4_k", True, False),
                                                ("grouped fused gate/up Q4_K", "q4_k", True, True)):
                xh = xact == "f16"
                yh = xh and fused  # the fused output, held as f16 for the down projection
                k = gemm.kernel(kind, gathered, fused, True, variant == "late-swz", 0, xh, yh)
                sig = (u32, u32, u32, u32, u32 if xh else f32, u32 if yh else f32, i64, i64, i64, i32, i32, i32,
                       i64, i64)
                RECORDED[(k.py_func, sig)] = f"gemm {variant} {xact} {name}"


def missing_waits() -> list[str]:
    """The recorded kernels whose first statement is not the grid-dependency wait."""
    from cuda_kernels.lint import waits_first

    return sorted({name for (fn, _), name in RECORDED.items() if not waits_first(fn)})


def compile_all(ptxas: bool) -> int:
    failures = 0
    rows = []
    for (fn, types), name in RECORDED.items():
        try:
            ptx, _ = cuda.compile_ptx(fn, types, cc=(9, 0))
        except Exception as e:  # noqa: BLE001 - report every kernel, then fail
            failures += 1
            print(f"FAIL {name}{types}:\n  {type(e).__name__}: {str(e).splitlines()[0][:400]}")
            continue
        info = ""
        if os.environ["SWEEPBENCH_CUDA_GRIDDEP"] == "1" and "griddepcontrol.wait" not in ptx:
            # a kernel without the wait would race its predecessor in a graph with programmatic edges
            failures += 1
            print(f"FAIL {name}{types}: no griddepcontrol.wait (call env.grid_dep_wait() first in the kernel)")
        if ptxas:
            with tempfile.TemporaryDirectory() as d:
                src = Path(d) / "k.ptx"
                src.write_text(re.sub(r"^\.version \d+\.\d+", ".version 9.0", ptx, flags=re.M))
                cap = [f"--maxrregcount={MAX_REGS[fn]}"] if fn in MAX_REGS else []
                out = subprocess.run(["ptxas", "-arch=sm_90", "-v", *cap, str(src), "-o", str(Path(d) / "k.cubin")],
                                     capture_output=True, text=True)
                regs = re.findall(r"Used (\d+) registers", out.stderr)
                stack = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores", out.stderr)
                info = f"regs {regs[0] if regs else '?'} stack/spill {stack[0] if stack else '?'}"
                if out.returncode:
                    failures += 1
                    info = "PTXAS FAIL " + out.stderr[-300:]
        rows.append(f"ok   {name:28s} {info}")
    print("\n".join(sorted(set(rows))))
    print(f"{len(RECORDED)} kernel variants, {failures} failed")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ptxas", action="store_true", help="also assemble for sm_90 and report registers / spills")
    ap.add_argument("--quick", action="store_true", help="two model mixes instead of seven")
    ap.add_argument("--waits-only", action="store_true", help="only check that every kernel starts with the "
                                                              "grid-dependency wait (no compilation; seconds)")
    args = ap.parse_args()
    _dry_patches()
    _patch_arrays()
    dry_run(args.quick)
    full_size_attention()
    gemm_variants()
    missing = missing_waits()
    for name in missing:
        print(f"FAIL {name}: its first statement is not grid_dep_wait()")
    if args.waits_only:
        print(f"{len(RECORDED)} kernel variants, {len(missing)} without the wait first")
        return 1 if missing else 0
    return 1 if compile_all(args.ptxas) or missing else 0


if __name__ == "__main__":
    sys.exit(main())
