"""numba-cpu's decode step against ik's, alternated in blocks of a few tokens in one process.

    python benchmarks/cpu_decode_vs_ik.py -m MODEL.gguf [--n-kv 0 1536] [--blocks 6] [--tokens 32] [-t 2]

Why beside the sweep (``cpu_vs_ik.py``): on this shared host the memory bandwidth drifts by 30% within a minute,
and a sweep row times each engine's 128-token window seconds apart. Here both engines hold the same prefilled
cache and take turns every ``--tokens`` decodes (order swapped every block, a 0.25 s pause before each turn), so
each block's ratio compares two measurements taken under the same conditions; the table gives the median of
those ratios. Both engines load with -rtr and flash attention, as the sweep runs them.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import sweepbench  # noqa: F401  (numpy shim before numba)
from sweepbench.engines import create_engine
from sweepbench.engines.base import EngineOptions


def timed_block(engine, tokens, n_kv: int) -> float:
    """ms per token of len(tokens) decodes at n_kv.., then the cache rolled back to n_kv."""
    time.sleep(0.25)  # the other engine's threads go idle first
    t = time.perf_counter()
    for i, tok in enumerate(tokens):
        engine.decode(int(tok), n_kv + i)
    ms = (time.perf_counter() - t) / len(tokens) * 1e3
    engine.truncate(n_kv)
    return ms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--model", required=True)
    p.add_argument("--n-kv", type=int, nargs="+", default=[0, 1536])
    p.add_argument("--blocks", type=int, default=6)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("-t", "--threads", type=int, default=2)
    args = p.parse_args()
    n_ctx = max(args.n_kv) + args.tokens
    engines = {}
    for name in ("numba-cpu", "ik"):
        e = create_engine(name)
        e.load(args.model, EngineOptions(n_ctx=n_ctx, n_ubatch=512, n_threads=args.threads, repack=True,
                                         flash_attn=True))
        e.warmup()
        engines[name] = e
    tokens = np.random.default_rng(0).integers(0, engines["numba-cpu"].config.n_vocab, n_ctx)
    print("| N_KV | numba-cpu ms/token | ik ms/token | TG ratio (median of blocks) | block ratios |")
    print("|---:|---:|---:|---:|---|")
    filled = 0
    for n_kv in sorted(args.n_kv):
        for e in engines.values():
            for c in range(filled, n_kv, 512):
                e.prefill(tokens[c : min(c + 512, n_kv)], c)
        filled = n_kv
        ms = {name: [] for name in engines}
        for b in range(args.blocks):
            for name in (("numba-cpu", "ik") if b % 2 == 0 else ("ik", "numba-cpu")):
                ms[name].append(timed_block(engines[name], tokens[n_kv : n_kv + args.tokens], n_kv))
        ratios = np.array(ms["ik"]) / np.array(ms["numba-cpu"])
        print(f"| {n_kv} | {np.median(ms['numba-cpu']):.2f} | {np.median(ms['ik']):.2f} | "
              f"**{np.median(ratios):.3f}** | {' '.join(f'{r:.2f}' for r in ratios)} |", flush=True)


if __name__ == "__main__":
    main()
