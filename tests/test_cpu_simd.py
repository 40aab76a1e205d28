"""The generated code is what the kernels were designed for, on every instruction path the engine can take.

In this process: the host's path (VNNI: vpdpbusd; AVX2: vpmaddubsw + vpmaddwd; vpshufb for IQ4_XS).
In subprocesses, Numba told to compile for another CPU (NUMBA_CPU_NAME): the AVX2 path when the host can run
it, and always the portable fallback, which must use neither instruction and still compute the same numbers.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numba
import numpy as np
from numba import njit

from sweepbench.cpu_kernels import qtiles, simd

EXPECTED = {
    "vnni": {"present": ["vpdpbusd"], "absent": ["vpmaddubsw"]},
    "avx2": {"present": ["vpmaddubsw", "vpmaddwd", "vpsignb"], "absent": ["vpdpbusd"]},
    "generic": {"present": [], "absent": ["vpdpbusd", "vpmaddubsw", "pmaddubsw"]},
}


def _asm(fn) -> str:
    """Assembly of a fresh compile of an njit kernel (cached overloads keep no assembly)."""
    fresh = njit(fn.py_func)
    args = {
        "q8_t1": (np.zeros(272 * 8, np.uint8), 0, 256, np.zeros(8 * 48, np.uint8), 0, False),
        "iq4_t1": (np.zeros(1104, np.uint8), 0, 256, np.zeros(8 * 48, np.uint8), 0),
    }[fn.py_func.__name__]
    sig = tuple(numba.typeof(a) for a in args)
    fresh.compile(sig)  # compile only: the tiles return registers, which Python cannot hold
    return fresh.inspect_asm(sig)


def _check(isa: str, asm: str) -> None:
    for ins in EXPECTED[isa]["present"]:
        assert f"\t{ins}" in asm, f"{isa}: {ins} missing"
    for ins in EXPECTED[isa]["absent"]:
        assert f"\t{ins}" not in asm, f"{isa}: unexpected {ins}"


def test_host_path_emits_the_expected_instructions():
    assert simd.ISA in EXPECTED
    _check(simd.ISA, _asm(qtiles.q8_t1))
    if simd.ISA != "generic":
        assert "\tvpshufb" in _asm(qtiles.iq4_t1)  # IQ4_XS values by table lookup
        assert "ymm" in _asm(qtiles.q8_t1)


_CHILD = r"""
import json, sys
import numpy as np
from gguf import GGMLQuantizationType as Q
from sweepbench.cpu_kernels import simd
from sweepbench.engines.numba_cpu import CpuOps, _prepare
from sweepbench.cpu_kernels.quant_act import QuantAct
from sweepbench.quants import random_rows, dequantize
sys.path.insert(0, sys.argv[1])
from test_cpu_simd import _asm
from sweepbench.cpu_kernels import qtiles
rng = np.random.default_rng(0)
errs = {}
for qt in (Q.Q8_0, Q.IQ4_XS, Q.Q4_K):
    raw = random_rows(qt, 16, 256, rng)
    class T: pass
    t = T(); t.raw, t.qtype, t.row_len = raw, qt, 256
    x = rng.standard_normal((5, 256)).astype(np.float32)
    y = CpuOps().matmul(x, _prepare(t, 1, True))
    ref = QuantAct(x).dequantize().astype(np.float64) @ dequantize(raw, qt, 256).T
    errs[qt.name] = float(np.abs(y - ref).max() / np.abs(ref).max())
print(json.dumps({"isa": simd.ISA, "asm": _asm(qtiles.q8_t1), "errs": errs}))
"""


def _child(cpu: str) -> dict:
    env = {**os.environ, "NUMBA_CPU_NAME": cpu}
    env.pop("NUMBA_CPU_FEATURES", None)
    out = subprocess.run([sys.executable, "-c", _CHILD, os.path.dirname(__file__)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_other_paths_compile_and_compute_the_same():
    """AVX2 (if this CPU can run it) and the portable fallback, each in a process compiling for that target."""
    targets = ["x86-64"]
    if "avx2" in simd.CPU_FEATURES and "fma" in simd.CPU_FEATURES:
        targets.insert(0, "haswell")
    else:
        assert simd.ISA == "generic"  # no AVX2 here: the host itself must be on the fallback
    for cpu in targets:
        got = _child(cpu)
        assert got["isa"] == ("avx2" if cpu == "haswell" else "generic"), got["isa"]
        _check(got["isa"], got["asm"])
        assert all(e < 1e-5 for e in got["errs"].values()), (cpu, got["errs"])
