"""Where a numba-cpu decode step (and a prefill ubatch) spends its time: wall time per ops-table method.

    python benchmarks/cpu_profile.py -m MODEL.gguf [-t 2 --n-kv 512 --steps 32]

Each method of the ops table is wrapped with a timer (the kernels are synchronous on the CPU, so wall time per
call is the op's cost, Python dispatch included). Prints ms per token per method, calls per token, and the
bytes-per-second of the product methods against the weights they stream.
"""
from __future__ import annotations

import argparse
import functools
import time
from collections import defaultdict

import numpy as np

import sweepbench  # noqa: F401  (numpy shim before numba)
from sweepbench.engines import create_engine
from sweepbench.engines.base import EngineOptions

METHODS = ("embed", "rms_norm", "rms_norm_heads", "rope_neox", "matmul", "add", "swiglu_ffn", "rows", "split",
           "kv_store", "attention", "route_softmax_topk", "route_sigmoid_topk", "group_rows_by_expert",
           "expert_up_gate", "expert_down", "combine")


def weight_bytes(name, args) -> int:
    """Bytes of weights a product call streams (experts: only the active ones); 0 for the other ops."""
    if name == "matmul":
        return args[1].n_bytes
    if name == "swiglu_ffn":
        return sum(w.n_bytes for w in args[1:4])
    if name in ("expert_up_gate", "expert_down"):
        groups, mats = args[-1], args[1:-1]
        n_expert = groups.offsets.shape[0] - 1
        return sum(w.n_bytes for w in mats) * groups.active.shape[0] // n_expert
    return 0


def instrument(ops, stats):
    """Time the outermost ops-table calls only (matmul of a fused q/k/v part calls matmul again: counted once;
    its parts' bytes add up to the fused matrix's)."""
    depth = [0]
    for name in METHODS:
        fn = getattr(ops, name, None)
        if fn is None:
            continue

        @functools.wraps(fn)
        def timed(*a, _fn=fn, _name=name, **kw):
            depth[0] += 1
            t = time.perf_counter()
            try:
                return _fn(*a, **kw)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    s = stats[_name]
                    s[0] += 1
                    s[1] += time.perf_counter() - t
                    s[2] += weight_bytes(_name, a)

        setattr(ops, name, timed)


def report(title, stats, n, wall):
    tot = sum(v[1] for v in stats.values())
    print(f"\n## {title}: {wall / n * 1e3:.2f} ms per step wall, {tot / n * 1e3:.2f} ms inside ops")
    print("| op | calls/step | ms/step | share | weight MB/step | GB/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (c, s, b) in sorted(stats.items(), key=lambda kv: -kv[1][1]):
        rate = f"{b / s / 1e9:.1f}" if b else ""
        mb = f"{b / n / 1e6:.1f}" if b else ""
        print(f"| {name} | {c / n:.0f} | {s / n * 1e3:.3f} | {s / tot:.0%} | {mb} | {rate} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--model", required=True)
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--n-kv", type=int, default=512)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--ub", type=int, default=512)
    args = p.parse_args()
    eng = create_engine("numba-cpu")
    eng.load(args.model, EngineOptions(n_ctx=args.n_kv + args.ub + args.steps + 1, n_ubatch=args.ub,
                                       n_threads=args.threads))
    eng.warmup()
    rng = np.random.default_rng(0)
    v = eng.config.n_vocab
    if args.n_kv:
        eng.prefill(rng.integers(0, v, args.n_kv), 0)
    for i in range(4):  # warm
        eng.decode(int(rng.integers(0, v)), args.n_kv + i)
    eng.truncate(args.n_kv)
    stats = defaultdict(lambda: [0, 0.0, 0])
    instrument(eng.ops, stats)
    t = time.perf_counter()
    for i in range(args.steps):
        eng.decode(int(rng.integers(0, v)), args.n_kv + i)
    wall = time.perf_counter() - t
    report(f"decode at N_KV {args.n_kv} ({args.steps / wall:.1f} t/s)", stats, args.steps, wall)
    eng.truncate(args.n_kv)
    stats.clear()
    toks = rng.integers(0, v, args.ub)
    t = time.perf_counter()
    eng.prefill(toks, args.n_kv)
    wall = time.perf_counter() - t
    report(f"prefill of {args.ub} at N_KV {args.n_kv} ({args.ub / wall:.1f} t/s)", stats, 1, wall)


if __name__ == "__main__":
    main()
