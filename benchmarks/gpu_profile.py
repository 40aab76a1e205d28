"""Where the numba-cuda engine's GPU time goes: each distinct kernel launch of a decode step timed as a CUDA-graph
node (a graph of 32 copies, replayed), every kernel of a prefill ubatch timed with CUDA events, and the wall time
of CUDA-graph decode replays.

    python benchmarks/gpu_profile.py -m MODEL.gguf [--ctx 4096 --ub 2048 --n-kv 2048]

Graph-node figures are L2-warm (the same launch repeated) and leave out launch overhead; event figures of the
prefill include the host's launch time, which matters only for kernels shorter than ~50 us.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict

import numpy as np

import sweepbench  # noqa: F401  (numpy shim before numba)
from sweepbench.engines import create_engine
from sweepbench.engines.base import EngineOptions


def _name(kernel) -> str:
    fn = getattr(kernel, "py_func", None)
    q = getattr(fn, "__qualname__", repr(kernel))
    return q.split(".<locals>")[0]


def profiled(engine, step) -> list[tuple[str, float, int]]:
    """Run step() with every launch bracketed by events; [(label, microseconds, n_threads)] in launch order."""
    from numba import cuda

    ops = engine.ops
    real = ops.launch
    recs = []

    def launch(kernel, grid, block, *args):
        caller = sys._getframe(1).f_code.co_name
        if caller in ("_gemm", "_expert_rows", "_up_gate", "_norm_rope", "act", "q8"):
            caller = sys._getframe(2).f_code.co_name + "/" + caller
        e0, e1 = cuda.event(), cuda.event()
        e0.record(ops.stream)
        real(kernel, grid, block, *args)
        e1.record(ops.stream)
        g = grid if isinstance(grid, tuple) else (grid,)
        recs.append((f"{caller}:{_name(kernel)}", e0, e1, int(np.prod(g)) * int(block)))
        LAUNCHES.append((f"{caller}:{_name(kernel)}", kernel, grid, block, args))

    ops.launch = launch
    try:
        step()
        engine.synchronize()
    finally:
        ops.launch = real
    return [(label, cuda.event_elapsed_time(e0, e1) * 1e3, n) for label, e0, e1, n in recs]


LAUNCHES: list = []  # (label, kernel, grid, block, args) of the last profiled step


def in_graph_us(ops, kernel, grid, block, args, reps: int = 32) -> float:
    """GPU microseconds of one launch as a CUDA-graph node: a graph of reps copies, replayed 4 times."""
    from cuda_kernels.graph import launches_us

    return launches_us(ops.stream, [(kernel, grid, block, args)] * reps, 4)


def graph_report(ops, title: str) -> None:
    """Per distinct (label, grid): its cost as a graph node x how often the step launches it."""
    from numba import cuda

    from cuda_kernels.env import jit

    groups: dict = {}
    for label, kernel, grid, block, args in LAUNCHES:
        key = (label, str(grid), block)
        if key not in groups:
            groups[key] = [0, (kernel, grid, block, args)]
        groups[key][0] += 1
    rows, total = [], 0.0
    for (label, grid, block), (count, launch) in groups.items():
        us = in_graph_us(ops, *launch)
        total += us * count
        rows.append((us * count, label, grid, block, count, us))

    @jit
    def empty(x):
        pass

    dummy = cuda.device_array(1, np.float32)
    node = in_graph_us(ops, empty, 1, 32, (dummy,))
    print(f"\n## {title}, kernels as graph nodes: sum {total / 1e3:.3f} ms over {len(LAUNCHES)} nodes "
          f"(an empty kernel node: {node:.2f} us)")
    print("| method:kernel | grid x block | calls | us per node | total ms |")
    print("|---|---|---:|---:|---:|")
    for tot, label, grid, block, count, us in sorted(rows, reverse=True):
        print(f"| {label} | {grid} x {block} | {count} | {us:.1f} | {tot / 1e3:.3f} |")


def report(title: str, recs, wall_us: float | None = None) -> None:
    agg = defaultdict(lambda: [0, 0.0, 0])
    for label, us, n in recs:
        a = agg[label]
        a[0] += 1
        a[1] += us
        a[2] = n
    total = sum(a[1] for a in agg.values())
    print(f"\n## {title}: {len(recs)} launches, kernels {total / 1e3:.3f} ms"
          + (f", wall {wall_us / 1e3:.3f} ms" if wall_us else ""))
    print(f"| {'method:kernel':58s} | calls | total ms | mean us | share | threads |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, (c, us, n) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f"| {label:58s} | {c} | {us / 1e3:.3f} | {us / c:.1f} | {us / total:.0%} | {n} |")


def pdl_ab(eng, n_kv: int, rounds: int, reps: int = 300) -> None:
    """SWEEPBENCH_CUDA_PDL off / order / exit, order with the host copies outside the graph and order with the
    GEMVs' L2 prefetch, in one process (no reload between them): per round and setting the decode graphs are
    captured again, then timed two ways: ``reps`` replays back to back between two events (the GPU's time per
    step, no host in the loop) and 200 host-synced decode steps (median, as ``graph decode``: what a sweep's TG
    row pays)."""
    from cuda_kernels.env import GRID_DEP

    if not GRID_DEP:
        print("pdl A/B: this GPU has no grid-dependency wait (before sm_90)")
        return
    ops = eng.ops
    ops.pdl_deep = 0  # no deep graph: each setting's graph serves every position, the host-synced steps included
    # "order-out": order with the token upload and the logits' read-back as separate calls, not graph nodes;
    # "order-pf": order with the dense GEMVs' L2 prefetch before their wait (SWEEPBENCH_CUDA_PREFETCH=on)
    settings = ["off", "order", "exit", "order-out", "order-pf"]
    for r in range(rounds):
        k = r % len(settings)
        for setting in settings[k:] + settings[:k]:  # each setting first once every len(settings) rounds
            eng.drop_graphs()
            ops.pdl = setting.split("-")[0]
            eng.copies_in_graph = not setting.endswith("-out")
            ops.gemv_prefetch = setting.endswith("-pf")
            eng.decode(0, n_kv)  # captures the graphs at this setting, then replays once
            gpu_ms = eng.graph_at(n_kv)[0].replay_ms(reps)
            ts = []
            for i in range(200):
                t = time.perf_counter()
                eng.decode(i % eng.config.n_vocab, n_kv)
                ts.append(time.perf_counter() - t)
            print(f"pdl {setting} round {r + 1}: {gpu_ms:.3f} ms per step back to back on the GPU, decode median "
                  f"{np.median(ts) * 1e3:.3f} ms per token ({eng.describe().get('cuda_pdl')}, host copies "
                  f"{eng.describe().get('graph_host_copies')})", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--model", required=True)
    p.add_argument("--ctx", type=int, default=4096)
    p.add_argument("--ub", type=int, default=2048)
    p.add_argument("--n-kv", type=int, default=2048, help="cache depth at which the steps are profiled")
    p.add_argument("--replays", type=int, default=64)
    p.add_argument("-ctk", default="f16")
    p.add_argument("-ger", action="store_true")
    p.add_argument("--att-split", choices=["warp", "tile"], help="the decode attention's split kernel (A/B)")
    p.add_argument("--decode-only", action="store_true", help="skip the prefill ubatch's profile")
    p.add_argument("--fuse-route", action="store_true", help="the up/gate kernel routes (no routing launch; A/B)")
    p.add_argument("--att-fuse-parts", type=int, help="parts up to which the decode split merges them (0: always "
                                                        "a combine launch; A/B)")
    p.add_argument("--norm-tails", choices=["on", "off"], help="one token's add -> rms_norm as the tail of the GEMV "
                                                                "that makes the addend, or its own launch (A/B)")
    p.add_argument("--route-tails", choices=["on", "off"], help="one token's routing as the router GEMV's tail, or "
                                                                 "its own launch (A/B)")
    p.add_argument("--pdl", choices=["off", "order", "exit"], help="programmatic edges in the decode graphs (A/B; "
                                                                     "cuda_kernels.graph.programmatic_edges)")
    p.add_argument("--pdl-ab", type=int, metavar="ROUNDS", help="only the PDL A/B (``pdl_ab``), ROUNDS rounds")
    args = p.parse_args()
    if args.pdl:
        os.environ["SWEEPBENCH_CUDA_PDL"] = args.pdl  # read (and checked against the GPU) by the ops table
    eng = create_engine("numba-cuda")
    t0 = time.time()
    eng.load(args.model, EngineOptions(n_ctx=args.ctx, n_ubatch=args.ub, n_batch=args.ub, type_k=args.ctk,
                                       type_v=args.ctk, grouped_routing=args.ger))
    if args.att_split:
        eng.ops.att_split = args.att_split
    eng.ops.fuse_route = args.fuse_route
    if args.norm_tails:
        eng.ops.norm_tails = args.norm_tails == "on"
    if args.route_tails:
        eng.ops.route_tails = args.route_tails == "on"
    if args.att_fuse_parts is not None:
        eng.ops.att_fuse_parts = args.att_fuse_parts
    eng.warmup()
    print(f"load + warmup {time.time() - t0:.1f} s", file=sys.stderr)
    rng = np.random.default_rng(0)
    v = eng.config.n_vocab
    pos = 0
    while pos < args.n_kv:
        n = min(args.ub, args.n_kv - pos)
        eng.prefill(rng.integers(0, v, n), pos)
        pos += n
    n_kv = pos
    if args.pdl_ab:
        pdl_ab(eng, n_kv, args.pdl_ab)
        eng.close()
        return
    # decode: eager steps (the graph is already captured by warmup; prefill() runs the eager path)
    for i in range(2):
        LAUNCHES.clear()
        recs = profiled(eng, lambda: eng.prefill(rng.integers(0, v, 1), n_kv))
    try:
        graph_report(eng.ops, f"decode step at N_KV {n_kv}")
    except Exception as e:  # noqa: BLE001 - the rest of the profile still says something
        print(f"graph report failed: {type(e).__name__}: {e}")
    eng.truncate(n_kv)
    eng.synchronize()
    ts = []
    for i in range(args.replays):
        t = time.perf_counter()
        eng.decode(int(rng.integers(0, v)), n_kv + i)
        ts.append(time.perf_counter() - t)
    print(f"\ngraph decode: median {np.median(ts) * 1e3:.3f} ms per token ({1 / np.median(ts):.1f} t/s), "
          f"min {min(ts) * 1e3:.3f} ms, graph nodes {eng.describe().get('graph_nodes')}, decode attention split "
          f"{eng.ops.att_split}, routing fused: {eng.ops.fuse_route}, parts merged in the split up to "
          f"{eng.ops.att_fuse_parts} (shallow graph: {eng.describe().get('graph_nodes_shallow')}), norm tails "
          f"{eng.ops.norm_tails}, route tails {eng.ops.route_tails}, pdl {eng.describe().get('cuda_pdl')}")
    if args.decode_only:
        eng.close()
        return
    eng.truncate(n_kv)
    toks = rng.integers(0, v, args.ub)
    eng.prefill(toks, n_kv)
    eng.truncate(n_kv)
    t = time.perf_counter()
    eng.prefill(toks, n_kv)
    wall = (time.perf_counter() - t) * 1e6
    eng.truncate(n_kv)
    LAUNCHES.clear()
    recs = profiled(eng, lambda: eng.prefill(toks, n_kv))
    report(f"prefill of {args.ub} tokens at N_KV {n_kv} ({args.ub / wall * 1e6:.0f} t/s unprofiled)", recs, wall)
    eng.close()


if __name__ == "__main__":
    main()
