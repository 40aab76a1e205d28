"""Where a numba-cpu decode step (and a prefill ubatch) spends its time.

    python benchmarks/cpu_profile.py -m MODEL.gguf [-t 2 --n-kv 512 --steps 32]
    SWEEPBENCH_DECODE_STEP=ops python benchmarks/cpu_profile.py ...   # the op-by-op decode (ms per op)

Decode through the compiled step (``engines.cpu_step``): the step's own cycle counters per phase and thread,
work and barrier wait apart, with the weight bytes each phase streams. Op by op (the default; every prefill): each
method of the ops table is wrapped with a timer (the kernels are synchronous on the CPU, so wall time per call
is the op's cost, Python dispatch included): ms per token per method, calls per token, and the bytes-per-second
of the product methods against the weights they stream.
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


def step_phase_bytes(eng) -> dict[str, int]:
    """Weight bytes a one-token decode streams in each phase of the compiled step (experts: the K used ones)."""
    cfg, w = eng.config, eng.weights
    whole = lambda m: getattr(m, "whole", m)  # noqa: E731  (a fused QKV part: the step runs the whole)
    used = lambda m: m.n_bytes * cfg.n_expert_used // cfg.n_expert  # noqa: E731
    b = defaultdict(int)
    for il in range(cfg.n_layer):
        p = f"blk.{il}."
        b["qkv"] += whole(w.get(p + "attn_q.weight") or w[p + "attn_qkv.weight"]).n_bytes
        b["o"] += w[p + "attn_output.weight"].n_bytes
        if cfg.is_moe_layer(il):
            b["router"] += w[p + "ffn_gate_inp.weight"].n_bytes
            b["up_gate"] += used(w[p + "ffn_gate_exps.weight"]) + used(w[p + "ffn_up_exps.weight"])
            b["down"] += used(w[p + "ffn_down_exps.weight"])
        kind = "_shexp" if cfg.is_moe_layer(il) else ""
        if p + f"ffn_gate{kind}.weight" in w:
            b["up_gate"] += w[p + f"ffn_gate{kind}.weight"].n_bytes + w[p + f"ffn_up{kind}.weight"].n_bytes
            b["down"] += w[p + f"ffn_down{kind}.weight"].n_bytes
    b["head"] = w["output.weight"].n_bytes
    return b


def report_step(eng, n, wall) -> None:
    """The compiled step's phase counters (``decode_step.PHASES``), per thread, in ms per token."""
    from sweepbench.cpu_kernels.decode_step import PHASES
    from sweepbench.cpu_kernels.spin import ticks_per_second

    prof, hz, nbytes = eng._step.B.prof, ticks_per_second(), step_phase_bytes(eng)
    roles = prof.shape[0]
    print(f"\n## decode, compiled step ({roles} threads): {wall / n * 1e3:.2f} ms per step wall "
          f"({n / wall:.1f} t/s); work | barrier wait per thread, ms per step")
    head = " | ".join(f"t{r} work | t{r} wait" for r in range(roles))
    print(f"| phase | {head} | weight MB/step | GB/s (slowest thread's work + wait) |")
    print("|---|" + "---:|" * (2 * roles + 2))
    for i, name in enumerate(PHASES):
        ms = prof[:, i, :] / n / hz * 1e3
        cells = " | ".join(f"{ms[r, 0]:.3f} | {ms[r, 1]:.3f}" for r in range(roles))
        mb = nbytes.get(name, 0)
        span = float(ms.sum(axis=1).max())
        rate = f"{mb / span / 1e6:.1f}" if mb and span else ""
        print(f"| {name} | {cells} | {mb / 1e6:.1f} | {rate} |" if mb else f"| {name} | {cells} | | |")
    total = prof.sum(axis=(1, 2)).max() / n / hz * 1e3
    print(f"| (in the step) | {total:.2f} ms of {wall / n * 1e3:.2f} | | | |")


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
    if eng._step is not None:
        eng._step.B.prof[:] = 0
    t = time.perf_counter()
    for i in range(args.steps):
        eng.decode(int(rng.integers(0, v)), args.n_kv + i)
    wall = time.perf_counter() - t
    if eng._step is not None:
        report_step(eng, args.steps, wall)
    else:
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
