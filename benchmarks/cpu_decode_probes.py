"""Probes behind the CPU decode-step analysis in NOTES.md (each prints what it measures; medians).

    python benchmarks/cpu_decode_probes.py launch                 # a small op's cost after a 2-thread region
    python benchmarks/cpu_decode_probes.py attention [--n-kv ..]  # decode attention of one layer, hot and cold
    python benchmarks/cpu_decode_probes.py stream                 # the host's streaming-read ceiling, 2 threads
    python benchmarks/cpu_decode_probes.py products -m MODEL      # the step's products alone vs the step vs ik
    python benchmarks/cpu_decode_probes.py decode -m MODEL -t 1   # decode steps only (for perf record -p / --)
    python benchmarks/cpu_decode_probes.py states -m MODEL [--seconds 150]
                                     # compiled step vs op by op vs ik, rounds labelled by the host's read rate
    python benchmarks/cpu_decode_probes.py steps -m MODEL [--seconds 150]
                                     # the compiled step's layouts A/B'd in one process: per-layer outputs or
                                     # one copy, products all in fixed shares or 3/4, per host state, vs ik
    python benchmarks/cpu_decode_probes.py pingpong [--seconds 60]
                                     # a cache line's round trip between the 2 threads, per host state

"cold" means right after a 2-thread read of 64 MB (twice the L3), as a decode step's products leave the caches.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import sweepbench  # noqa: F401  (numpy shim before numba)
from sweepbench.cpu_kernels.threads import init_threading, set_threads

init_threading()

from numba import njit, prange, set_num_threads, set_parallel_chunksize  # noqa: E402

from sweepbench.cpu_kernels.simd import fadd, hsum, ldf, prefetch, zf  # noqa: E402


@njit(parallel=True)
def _read(a, out):
    """2-thread streaming read of a (one contiguous half per thread)."""
    n = a.shape[0] // 2
    for c in prange(2):
        acc = zf()
        for i in range(c * n, (c + 1) * n, 8):
            acc = fadd(acc, ldf(a, i))
        out[c] = hsum(acc)


def _by_state(read_gbs, with_all=False):
    """(label, mask) per host memory state of rounds labelled by their 2-thread read rate (GB/s); NOTES.md, CPU:
    the slow state is the two vCPUs on one CCX, the fast one on two CCDs."""
    bands = [("slow (< 40)", 0, 40), ("between", 40, 45), ("fast (>= 45)", 45, 1e9)]
    for label, lo, hi in bands + ([("all", 0, 1e9)] if with_all else []):
        yield label, (read_gbs >= lo) & (read_gbs < hi)


def _median_us(f, before=lambda: None, n=200) -> float:
    ts = []
    for _ in range(n):
        before()
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e6


def launch(_args) -> None:
    @njit
    def small_serial(y, out):
        for i in range(y.shape[0]):
            out[i] = y[i] * 2

    @njit(parallel=True)
    def small_parallel(y, out):
        for t in prange(1):
            for i in range(y.shape[0]):
                out[i] = y[i] * 2

    big, o = np.ones(16 << 20, np.float32), np.zeros(2, np.float32)  # 64 MB: caches cold, as after products
    y, out = np.ones(2048, np.float32), np.empty(2048, np.float32)
    set_threads(2)
    _read(big, o), small_serial(y, out), small_parallel(y, out)

    def after_product():
        set_num_threads(2)
        _read(big, o)

    print("| a 2048-float op right after a 2-thread read of 64 MB | us |\n|---|---:|")
    print(f"| plain serial call | {_median_us(lambda: small_serial(y, out), after_product):.1f} |")
    print(f"| set_num_threads(1) + serial call | "
          f"{_median_us(lambda: (set_num_threads(1), small_serial(y, out)), after_product):.1f} |")
    print(f"| set_num_threads(1) + parallel kernel on 1 thread | "
          f"{_median_us(lambda: (set_num_threads(1), small_parallel(y, out)), after_product):.1f} |")


def attention(args) -> None:
    from sweepbench.cpu_kernels import attention as att

    set_threads(2)
    set_parallel_chunksize(0)  # a decode step's items: static halves, as the engine hands them out
    rng = np.random.default_rng(0)
    h, h_kv, d, n_ctx = 32, 4, 128, max(args.n_kv) + 1  # qwen3moe's heads
    flush, o = np.ones(16 << 20, np.float32), np.zeros(2, np.float32)  # 64 MB
    print(f"| N_KV | {h} heads over {h_kv} KV heads, f16 cache: hot us | cold us |\n|---:|---:|---:|")
    for n_kv in args.n_kv:
        cache = att.KVCache(1, n_ctx, h_kv, d, "f16", "f16")
        kv = rng.standard_normal((n_kv + 1, h_kv * d)).astype(np.float32)
        att.kv_store(kv, kv, cache.k[0], cache.v[0], cache.vs[0], 0, False, False)
        q = rng.standard_normal((1, h * d)).astype(np.float32)
        out = np.empty_like(q)

        def run():
            att.flash_attn(q, out, n_kv, h, cache.k[0], cache.v[0], cache.vs[0], False, False)

        run()
        hot = _median_us(run, n=50)
        cold = _median_us(run, lambda: _read(flush, o), n=30)
        print(f"| {n_kv} | {hot:.1f} | {cold:.1f} |")


def stream(_args) -> None:
    @njit(parallel=True)
    def read(a, out, streams, dist):
        n = a.shape[0] // 2
        b = a.view(np.uint8)
        for c in prange(2):
            per = n // streams
            a0, a1 = zf(), zf()
            for off in range(0, per, 1024):  # `streams` sub-ranges per thread, 4 KB from each in turn
                for k in range(streams):
                    lo = c * n + k * per + off
                    for i in range(lo, lo + 1024, 16):
                        if dist > 0:
                            prefetch(b, 4 * i + dist)
                        a0, a1 = fadd(a0, ldf(a, i)), fadd(a1, ldf(a, i + 8))
            out[c] = hsum(fadd(a0, a1))

    set_threads(2)
    a, out = np.ones(200 << 20, np.float32), np.zeros(2, np.float32)  # 800 MB
    print("| streams per thread | prefetch distance (bytes) | GB/s |\n|---:|---:|---:|")
    for streams, dist in ((1, 0), (2, 0), (4, 0), (8, 0), (1, 1024), (1, 4096), (1, 16384)):
        read(a, out, streams, dist)
        best = min(_median_us(lambda: read(a, out, streams, dist), n=1) for _ in range(3))
        print(f"| {streams} | {dist} | {a.nbytes / best / 1e3:.1f} |")


def _load(name, args):
    from sweepbench.engines import create_engine
    from sweepbench.engines.base import EngineOptions

    e = create_engine(name)
    e.load(args.model, EngineOptions(n_ctx=args.tokens + 8, n_ubatch=512, n_threads=args.threads, repack=True,
                                     flash_attn=True))
    e.warmup()
    return e


def products(args) -> None:
    """The step's products (fused QKV, O, router, 8 experts' up/gate and down, head) called back to back with
    nothing else, in blocks alternated with whole decode steps of numba-cpu and of ik. qwen3moe models."""
    from sweepbench.engines.numba_cpu import ExpertRows, FusedPart

    ours, ik = _load("numba-cpu", args), _load("ik", args)
    ops, w, cfg = ours.ops, ours.weights, ours.config
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, cfg.n_embd)).astype(np.float32)
    xo = rng.standard_normal((1, cfg.n_head * cfg.head_dim)).astype(np.float32)
    h = rng.standard_normal((cfg.n_expert_used, cfg.n_ff_exp)).astype(np.float32)

    def step_products():
        for il in range(cfg.n_layer):
            p = f"blk.{il}."
            q = w[p + "attn_q.weight"]
            ops.matmul(x.copy(), q.whole if isinstance(q, FusedPart) else q)
            ops.matmul(xo.copy(), w[p + "attn_output.weight"])
            ops.matmul(x.copy(), w[p + "ffn_gate_inp.weight"])
            ids = rng.choice(cfg.n_expert, cfg.n_expert_used, replace=False).astype(np.int32)[None]
            g = ops.group_rows_by_expert(ids, cfg.n_expert)
            ops.expert_up_gate(x.copy(), w[p + "ffn_gate_exps.weight"], w[p + "ffn_up_exps.weight"], g)
            ops.expert_down(ExpertRows(h.copy(), g), w[p + "ffn_down_exps.weight"], g)
        ops.matmul(x.copy(), w["output.weight"])

    tokens = rng.integers(0, cfg.n_vocab, args.tokens)

    def steps(e):
        for i, t in enumerate(tokens):
            e.decode(int(t), i)
        e.truncate(0)

    runs = {"products alone": lambda: [step_products() for _ in tokens], "numba-cpu step": lambda: steps(ours),
            "ik step": lambda: steps(ik)}
    ms = {k: [] for k in runs}
    for b in range(args.blocks):
        for k in (list(runs) if b % 2 == 0 else list(runs)[::-1]):
            time.sleep(0.25)
            t = time.perf_counter()
            runs[k]()
            ms[k].append((time.perf_counter() - t) / len(tokens) * 1e3)
    print("| per token, N_KV 0.. | ms (median of blocks) |\n|---|---:|")
    for k, v in ms.items():
        print(f"| {k} | {np.median(v):.2f} |")


def decode(args) -> None:
    e = _load("numba-cpu", args)
    tokens = np.random.default_rng(0).integers(0, e.config.n_vocab, args.tokens)
    t = time.perf_counter()
    for _ in range(args.blocks):
        for i, tok in enumerate(tokens):
            e.decode(int(tok), i)
        e.truncate(0)
    print(f"{(time.perf_counter() - t) / (args.blocks * len(tokens)) * 1e3:.2f} ms per decode step")


def states(args) -> None:
    """This host's memory runs in two states (a 2-thread read of 800 MB: ~33 or ~55-62 GB/s, switching within
    seconds). Rounds of 8 decodes (N_KV 0..8) of the compiled step, the op-by-op path and ik, plus a read that
    labels the round; medians of each engine's implied GB/s (weights per token / time) per state."""
    import os

    engines = {}
    for name in ("step", "ops", "ik"):
        os.environ["SWEEPBENCH_DECODE_STEP"] = "ops" if name == "ops" else "compiled"
        engines[name] = _load("ik" if name == "ik" else "numba-cpu", args)
    os.environ.pop("SWEEPBENCH_DECODE_STEP")
    from cpu_profile import step_phase_bytes  # (this directory is on sys.path when run as a script)

    per_token = sum(step_phase_bytes(engines["step"]).values())
    set_threads(args.threads)
    buf, out = np.ones(per_token // 4, np.float32), np.zeros(2, np.float32)
    _read(buf, out)
    tokens = np.random.default_rng(0).integers(0, engines["step"].config.n_vocab, 8)

    def steps(e):
        for i, t in enumerate(tokens):
            e.decode(int(t), i)
        e.truncate(0)

    runs = {"read": lambda: [_read(buf, out) for _ in tokens]}
    runs.update({k: (lambda e=e: steps(e)) for k, e in engines.items()})
    rows, t_end, k = [], time.time() + args.seconds, 0
    while time.time() < t_end:
        r = {}
        for name in (list(runs) if k % 2 == 0 else list(runs)[::-1]):
            t = time.perf_counter()
            runs[name]()
            r[name] = per_token * len(tokens) / (time.perf_counter() - t) / 1e9
        rows.append([r[n] for n in runs])
        k += 1
    a = np.array(rows)
    print(f"{per_token / 1e6:.0f} MB of weights per token, {len(a)} rounds; GB/s = those bytes / time per token")
    print("| host state (read GB/s) | rounds | read | compiled step | op by op | ik | step / ik | ops / ik |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, m in _by_state(a[:, 0], with_all=True):
        if m.sum():
            med = np.median(a[m], axis=0)
            print(f"| {label} | {m.sum()} | " + " | ".join(f"{v:.1f}" for v in med)
                  + f" | {np.median(a[m, 1] / a[m, 3]):.2f} | {np.median(a[m, 2] / a[m, 3]):.2f} |")


def steps(args) -> None:
    """Compiled-step variants in one process (same compiled code, run-time layouts), rounds of 8 decodes
    alternated and labelled by a read: "perlayer" (the engine's default), "one" (one copy of the shared phase
    outputs for all layers), "s6" (three quarters of each product's items in fixed shares, the rest from the
    counter), and ik. Prints ours / ik per state; the logits must agree bit for bit across our variants."""
    import os

    from sweepbench.cpu_kernels import decode_step as ds

    os.environ["SWEEPBENCH_DECODE_STEP"] = "compiled"
    engines = {}
    for name in ("perlayer", "one", "s6", "ik"):
        e = engines[name] = _load("ik" if name == "ik" else "numba-cpu", args)
        if name in ("one", "s6"):
            st = e._step
            st.close()  # the workers hold the step's arrays: restart them on the changed ones
            if name == "one":
                shared = ("qkv", "att", "o", "rl", "h", "hs", "y", "ys")
                st.B = st.B._replace(**{f: getattr(st.B, f)[:1].copy() for f in shared})
            else:
                st.C[ds.C_STATIC8] = 6
            st.sync[:] = 0
            st.start()
    from cpu_profile import step_phase_bytes

    per_token = sum(step_phase_bytes(engines["perlayer"]).values())
    set_threads(args.threads)
    buf, out = np.ones(per_token // 4, np.float32), np.zeros(2, np.float32)
    tokens = np.random.default_rng(0).integers(0, engines["ik"].config.n_vocab, 8)
    names, rows, logits, k = list(engines), [], {}, 0
    t_end = time.time() + args.seconds
    while time.time() < t_end:
        t = time.perf_counter()
        _read(buf, out)
        r = {"read": per_token / (time.perf_counter() - t) / 1e9}
        for name in (names if k % 2 == 0 else names[::-1]):
            e = engines[name]
            t = time.perf_counter()
            for i, tok in enumerate(tokens):
                last = e.decode(int(tok), i)
            r[name] = per_token * len(tokens) / (time.perf_counter() - t) / 1e9
            e.truncate(0)
            if name != "ik":
                logits.setdefault(name, last.copy())
                assert np.array_equal(logits[name], last) and np.array_equal(logits["perlayer"], last), name
        rows.append(r)
        k += 1
    a = np.array([[r["read"]] + [r[n] / r["ik"] for n in names[:-1]] for r in rows])
    print(f"{len(a)} rounds; ours / ik (median of rounds); logits bit-identical across our variants")
    print("| host state (read GB/s) | rounds | " + " | ".join(names[:-1]) + " |")
    print("|---|---:|" + "---:|" * (len(names) - 1))
    for label, m in _by_state(a[:, 0]):
        if m.sum():
            print(f"| {label} | {m.sum()} | " + " | ".join(f"{v:.3f}" for v in np.median(a[m, 1:], axis=0)) + " |")


def pingpong(args) -> None:
    """How far apart the two threads' cores are, per host state: the round trip of one cache line bounced
    between two threads (atomic store, spin on the other's), in rounds labelled by a 2-thread read of 400 MB.
    Same-CCX cores answer in tens of ns; cores on different CCDs (separate L3s and memory links) in hundreds."""
    import threading

    from sweepbench.cpu_kernels.spin import atomic_load, atomic_store

    @njit(nogil=True)
    def bounce(line, role, n):
        for i in range(n):
            while atomic_load(line, 0) != 2 * i + role:
                pass
            atomic_store(line, 0, 2 * i + role + 1)

    def round_trip_ns(n=20000):
        line = np.zeros(8, np.int64)
        th = threading.Thread(target=bounce, args=(line, 1, n))
        th.start()
        t = time.perf_counter()
        bounce(line, 0, n)
        dt = time.perf_counter() - t
        th.join()
        return dt / n * 1e9

    set_threads(2)
    buf, out = np.ones(100 << 20, np.float32), np.zeros(2, np.float32)
    _read(buf, out)
    round_trip_ns(100)
    rows, t_end = [], time.time() + args.seconds
    while time.time() < t_end:
        t = time.perf_counter()
        _read(buf, out)
        rows.append((buf.nbytes / (time.perf_counter() - t) / 1e9, round_trip_ns()))
    a = np.array(rows)
    print("| host state (read GB/s) | rounds | read GB/s | round trip ns (median) | p10 | p90 |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, m in _by_state(a[:, 0]):
        if m.sum():
            rt = a[m, 1]
            print(f"| {label} | {m.sum()} | {np.median(a[m, 0]):.1f} | {np.median(rt):.0f} | "
                  f"{np.percentile(rt, 10):.0f} | {np.percentile(rt, 90):.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("probe", choices=["launch", "attention", "stream", "products", "decode", "states", "steps",
                                          "pingpong"])
    p.add_argument("--seconds", type=float, default=150)
    p.add_argument("-m", "--model")
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--n-kv", type=int, nargs="+", default=[0, 512, 1536])
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--blocks", type=int, default=6)
    args = p.parse_args()
    if args.probe in ("products", "decode", "states", "steps") and not args.model:
        p.error(f"{args.probe} needs -m MODEL")
    globals()[args.probe](args)


if __name__ == "__main__":
    main()
