"""The prefill attention's variants as sm_90 machine code, without a GPU: per variant the registers, and the
instructions per warp and KV tile (those between the tile loop's two barriers) by opcode.

    python benchmarks/gpu_sass_counts.py [--dim 128] [--variants ex2,ex2-wide-trans] [--nvdisasm PATH]
    python benchmarks/gpu_sass_counts.py --gemm [--nvdisasm PATH]   # the prefill GEMMs' k loop, in issue order
    python benchmarks/gpu_sass_counts.py --ptx-hashes [--variants ...]  # a hash of each variant's PTX (no tools)
    python benchmarks/gpu_sass_counts.py --ptx-hashes --gemm            # ... of each GEMM variant's

``--ptx-hashes`` prints a hash of each variant's sm_90 PTX (f16 and q8_0 caches, head dims 64 and 128; kernel
names normalised), or with ``--gemm`` of each SWEEPBENCH_CUDA_GEMM variant's dense Q8_0 and fused grouped Q4_K
GEMM: run at two commits, equal hashes mean a refactor left that variant's code as it was.
``--gemm`` compiles every GEMM the compile check's quick dry run meets and prints its k loop's instructions in
program order, runs of one opcode collapsed (``4 LDG``): whether the next step's global loads are consumed
before or after this step's mma shows there.

Needs ptxas (the CUDA toolkit) and nvdisasm, which is not a dependency of sweepbench: ``pip download --no-deps
nvidia-cuda-nvdisasm`` and unzip the wheel (nvidia/cu13/bin/nvdisasm), or a toolkit that has it.
"""
from __future__ import annotations

import argparse
import collections
import itertools
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import gpu_compile_check  # noqa: F401  (sets the sm_90 compile environment before numba loads)

SHOWN = ("HMMA", "LDS", "LDSM", "LDG", "STS", "MUFU", "IMAD", "ISETP", "IADD3", "LEA", "BRA", "BSSY")


def opcodes(sass: str) -> list[str]:
    """The opcode of each instruction line of nvdisasm's output (predicates dropped), in order."""
    ops = []
    for line in sass.splitlines():
        m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(.*?);", line)
        if m:
            toks = m.group(1).split()
            ops.append((toks[1] if toks[0].startswith("@") else toks[0]).split(".")[0])
    return ops


def tile_loop(ops: list[str]) -> collections.Counter:
    """Opcode counts between the first two barriers (the kernel's tile loop: stored tile -> next barrier)."""
    bars = [i for i, op in enumerate(ops) if op == "BAR"]
    if len(bars) < 2:
        raise SystemExit("error: fewer than two barriers in the kernel: not the prefill tile loop")
    return collections.Counter(ops[bars[0]:bars[1] + 1])


def sass_of(fn, sig, nvdisasm: str) -> tuple[str, str]:
    """(registers, nvdisasm listing) of a kernel function compiled for sm_90."""
    from numba import cuda

    ptx, _ = cuda.compile_ptx(fn, sig, cc=(9, 0))
    with tempfile.TemporaryDirectory() as d:
        src, cubin = Path(d) / "k.ptx", Path(d) / "k.cubin"
        src.write_text(re.sub(r"^\.version \d+\.\d+", ".version 9.0", ptx, flags=re.M))
        res = subprocess.run(["ptxas", "-arch=sm_90", "-v", str(src), "-o", str(cubin)], capture_output=True,
                             text=True, check=True)
        regs = re.findall(r"Used (\d+) registers", res.stderr)
        sass = subprocess.run([nvdisasm, "-c", str(cubin)], capture_output=True, text=True, check=True)
    return (regs[0] if regs else "?"), sass.stdout


def prefill_sig():
    from numba import types as nt

    f32, u32, i32, i64 = nt.float32[::1], nt.uint32[::1], nt.int32[::1], nt.int64
    return (f32, u32, f32, u32, f32, i32, f32, i64, i64, i64, nt.float32)


def ptx_hash(fn, sig) -> str:
    """A hash of a kernel's sm_90 PTX, comments dropped and mangled names replaced (they carry addresses)."""
    import hashlib

    from numba import cuda

    ptx, _ = cuda.compile_ptx(fn, sig, cc=(9, 0))
    body = re.sub(r"_Z\w+", "K", "\n".join(x for x in ptx.splitlines() if not x.startswith("//")))
    return hashlib.sha1(body.encode()).hexdigest()[:12]


def ptx_hashes(variants: list[str]) -> None:
    """variant, cache, head dim and a hash of its PTX."""
    from cuda_kernels import flash

    for v in variants:
        for q8 in (False, True):
            for d in (64, 128):
                cache = "q8_0" if q8 else "f16"
                print(f"{v} {cache} D{d} {ptx_hash(flash.prefill_kernel(d, q8, q8, v).py_func, prefill_sig())}",
                      flush=True)


def gemm_ptx_hashes() -> None:
    """Each SWEEPBENCH_CUDA_GEMM variant's dense Q8_0 and fused grouped Q4_K GEMM, and a hash of its PTX."""
    from numba import types as nt

    from cuda_kernels import gemm

    u32, f32, i32, i64 = nt.uint32[::1], nt.float32[::1], nt.int32[::1], nt.int64
    sig = (u32, u32, u32, u32, f32, f32, i64, i64, i64, i32, i32, i32, i64, i64)
    for name, late, swz in (("early", False, False), ("late", True, False), ("late-swz", True, True)):
        for kind, gathered, fused in (("q8_0", False, False), ("q4_k", True, True)):
            k = gemm.kernel(kind, gathered, fused, late, *((True,) if swz else ()))  # as before swz existed
            print(f"{name} {kind} gathered={gathered} fused={fused} {ptx_hash(k.py_func, sig)}", flush=True)


def gemm_sequences(nvdisasm: str) -> None:
    """Each GEMM of the quick dry run: its k loop (first barrier to the last) as runs of the opcodes that matter."""
    gpu_compile_check._dry_patches()  # before cuda_kernels loads: its kernels become recorders
    gpu_compile_check._patch_arrays()
    gpu_compile_check.dry_run(True)
    from cuda_kernels import gemm
    kinds = {k.py_func: key for key, k in gemm._CACHE.items()}
    keep = {"HMMA", "LDSM", "LDS", "STS", "LDG", "BAR", "F2FP", "I2F", "PRMT"}
    for (fn, sig), _ in gpu_compile_check.RECORDED.items():
        if fn not in kinds:
            continue
        regs, sass = sass_of(fn, sig, nvdisasm)
        ops = [o for o in opcodes(sass) if o in keep]
        bars = [i for i, o in enumerate(ops) if o == "BAR"]
        runs = [(op, len(list(g))) for op, g in itertools.groupby(ops[bars[0]:bars[-1] + 1])]
        kind, gathered, fused, late, swz = kinds[fn]
        print(f"{kind} gathered={gathered} fused={fused} late={late} swz={swz}, {regs} registers:")
        print("  " + "  ".join(f"{n} {op}" for op, n in runs), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--variants", default="ex2,ex2-wide-trans")
    p.add_argument("--nvdisasm", default=shutil.which("nvdisasm"))
    p.add_argument("--listing", type=Path, help="write each variant's disassembly to this folder")
    p.add_argument("--gemm", action="store_true", help="the prefill GEMMs' k loops instead, in issue order")
    p.add_argument("--ptx-hashes", action="store_true", help="a hash of each variant's PTX instead")
    args = p.parse_args()
    if args.ptx_hashes:
        gemm_ptx_hashes() if args.gemm else ptx_hashes(args.variants.split(","))
        return 0
    if not args.nvdisasm or not Path(args.nvdisasm).is_file() or not shutil.which("ptxas"):
        print("error: needs ptxas on PATH and nvdisasm (--nvdisasm PATH); see this script's docstring",
              file=sys.stderr)
        return 2
    if args.gemm:
        gemm_sequences(args.nvdisasm)
        return 0
    from cuda_kernels import flash

    sig = prefill_sig()
    print(f"prefill attention, D = {args.dim}, f16 cache, sm_90; per warp and tile (between the barriers)")
    print("| variant | registers | instructions | " + " | ".join(SHOWN) + " |")
    print("|---|---:|---:|" + "---:|" * len(SHOWN))
    for v in args.variants.split(","):
        k = flash.prefill_kernel(args.dim, False, False, v)
        regs, sass = sass_of(k.py_func, sig, args.nvdisasm)
        if args.listing:
            args.listing.mkdir(parents=True, exist_ok=True)
            (args.listing / f"{v}.sass").write_text(sass)
        c = tile_loop(opcodes(sass))
        print(f"| {v} | {regs} | {sum(c.values())} | " + " | ".join(str(c[o]) for o in SHOWN)
              + " |", flush=True)
    print("(the span counted loads the next tile and computes this one; the tile's stores follow the second barrier)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
