"""The run-time-repacking layout decision, measured: Q8_0 4096x2048 products on one thread, three layouts.

    vertical   the notes' "vertical4" layout (numba_cuda_notes.md §4): per row, quants element-major inside
               blocks, plain Numba loops over blocks with a run-time trip count, auto-vectorised
               (vpmovsxbd / vpmulld); a GEMM is that GEMV per token
    row-major  the plain path (``--no-repack``): explicit SIMD on the GGUF rows, one horizontal sum per row
    R8         the repacked path: 8 rows interleaved per 4 bytes (ik's Q8_0_R8) in block records, explicit SIMD,
               4-token register tiles for GEMM

    python benchmarks/cpu_layouts.py [--rounds 15]

GEMV: T = 1 over 24 matrices (214 MB, cold in the 32 MB L3), GB/s of GGUF bytes; GEMM: T = 128 tokens on one
hot matrix, GOP/s (2 ops per multiply-add). Rounds interleave the layouts; best and median of thread CPU time
(robust to other processes on a shared machine). Also prints which vector instructions each kernel uses.
"""
from __future__ import annotations

import argparse
import collections
import time

import numba
import numpy as np
from gguf import GGMLQuantizationType as Q
from numba import njit, prange

from sweepbench.cpu_kernels.threads import init_threading, set_threads

init_threading()

from sweepbench.cpu_kernels import qmm, qtiles, rowmajor  # noqa: E402
from sweepbench.cpu_kernels.layouts import K_Q8_0, repack  # noqa: E402
from sweepbench.cpu_kernels.quant_act import QuantAct  # noqa: E402
from sweepbench.quants import random_rows  # noqa: E402

N, K = 4096, 2048


@njit(cache=True)
def _vertical_row(qT, d, xT, xd, nb):
    """One row: qT int8 [32*nb] element-major (qT[i*nb + b] = q[b, i]), 4 elements per pass (vertical4)."""
    s = np.zeros(nb, np.int32)
    for i in range(0, 32, 4):
        w0, w1, w2, w3 = qT[i * nb:(i + 1) * nb], qT[(i + 1) * nb:(i + 2) * nb], qT[(i + 2) * nb:(i + 3) * nb], \
            qT[(i + 3) * nb:(i + 4) * nb]
        x0, x1, x2, x3 = xT[i * nb:(i + 1) * nb], xT[(i + 1) * nb:(i + 2) * nb], xT[(i + 2) * nb:(i + 3) * nb], \
            xT[(i + 3) * nb:(i + 4) * nb]
        for b in range(nb):
            s[b] += (np.int32(w0[b]) * np.int32(x0[b]) + np.int32(w1[b]) * np.int32(x1[b])
                     + np.int32(w2[b]) * np.int32(x2[b]) + np.int32(w3[b]) * np.int32(x3[b]))
    acc = np.float32(0.0)
    for b in range(nb):
        acc += d[b] * xd[b] * np.float32(s[b])
    return acc


@njit(parallel=True, cache=True)
def vertical_mm(qT, d, xT, xd, y):
    """y [T, N] = W x for every token; qT int8 [N, K], d f32 [N, nb]; xT int8 [T, K], xd f32 [T, nb]."""
    nb = d.shape[1]
    for n in prange(qT.shape[0]):
        for t in range(xT.shape[0]):
            y[t, n] = _vertical_row(qT[n], d[n], xT[t], xd[t], nb)


def _vertical(raw: np.ndarray):
    b = raw.reshape(N, K // 32, 34)
    q = b[..., 2:].view(np.int8)  # [N, nb, 32]
    return np.ascontiguousarray(q.transpose(0, 2, 1)).reshape(N, K), b[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)


def _vertical_x(a: QuantAct):
    q, d = a.fields()[:2]
    t = q.shape[0]
    return np.ascontiguousarray(q.reshape(t, K // 32, 32).transpose(0, 2, 1)).reshape(t, K), np.ascontiguousarray(d)


def _vector_ops(fn, *args) -> str:
    """The dot-product instructions of a fresh compile of ``fn`` for ``args`` (cached overloads keep no asm)."""
    fresh = njit(fn.py_func)
    sig = tuple(numba.typeof(x) for x in args)
    fresh.compile(sig)
    ops = collections.Counter(ln.split()[0] for ln in fresh.inspect_asm(sig).splitlines() if ln.startswith("\tv"))
    keep = [k for k in ("vpdpbusd", "vpmaddubsw", "vpmaddwd", "vpmulld", "vpmovsxbd", "vpmovsxbw", "vpgatherqd",
                        "vpgatherdd") if ops.get(k)]
    return ", ".join(f"{k} x{ops[k]}" for k in keep) or "scalar"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    set_threads(1)
    rng = np.random.default_rng(0)
    raws = [random_rows(Q.Q8_0, N, K, rng) for _ in range(24)]
    layouts = {"vertical": [_vertical(r) for r in raws], "row-major": [r.reshape(1, -1) for r in raws],
               "R8": [repack(r, Q.Q8_0, N, K).qs for r in raws]}
    nbytes = N * K * 34 / 32
    for t in (1, 128):
        a = QuantAct(rng.standard_normal((t, K)).astype(np.float32))
        xv = _vertical_x(a)
        y = np.zeros((t, N), np.float32)
        rows, offsets, active = np.arange(t, dtype=np.int64), np.array([0, t], np.int64), np.zeros(1, np.int64)
        run = {
            "vertical": lambda m: vertical_mm(m[0], m[1], xv[0], xv[1], y),
            "row-major": lambda m: rowmajor.rm_mm(K_Q8_0, m, N, K, a.x.reshape(-1), rows, offsets, active, y.reshape(-1)),
            "R8": lambda m: qmm.q_mm(K_Q8_0, m, K, a.x.reshape(-1), rows, offsets, active, y.reshape(-1)),
        }
        times = {k: [] for k in run}
        for rnd in range(args.rounds + 1):
            for name, f in run.items():
                m = layouts[name][rnd % 24 if t == 1 else 0]
                t0 = time.thread_time()
                f(m)
                if rnd:  # round 0 compiles / loads
                    times[name].append(time.thread_time() - t0)
        print(f"\nT = {t} ({'GEMV, cold' if t == 1 else 'GEMM, hot'}), one thread:")
        for name, ts in times.items():
            best, med = min(ts), float(np.median(ts))
            fig = (f"{nbytes / best / 1e9:6.1f} GB/s best, {nbytes / med / 1e9:6.1f} median" if t == 1 else
                   f"{2 * N * K * t / best / 1e9:6.1f} GOP/s best, {2 * N * K * t / med / 1e9:6.1f} median")
            print(f"  {name:10s} {fig}")
    q8, x8 = np.zeros(K, np.int8), np.zeros(K, np.int8)
    f1 = np.zeros(K // 32, np.float32)
    rec = np.zeros(4 * K // 32 * 48, np.uint8)
    print("\nvector instructions: vertical row:", _vector_ops(_vertical_row, q8, f1, x8, f1, K // 32),
          "| R8 4-token tile:", _vector_ops(qtiles.q8_t4, np.zeros(272 * K // 32, np.uint8), 0, K, rec, 0, False))


if __name__ == "__main__":
    main()
