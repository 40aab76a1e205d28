"""What a first run of the numba-cpu engine compiles, and for how long (an empty Numba cache in a temp directory).

    python benchmarks/cpu_compile_times.py [--arch qwen3moe --expert-type Q4_K --top 25]

Loads and warms up a tiny synthetic model exactly as ``sweep-bench`` does, with a listener on Numba's
"numba:compile" events: per function, the compile time including the functions it compiles on the way
(top-level calls only) and its self time (without them), per signature.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="qwen3moe")
    p.add_argument("--expert-type", default="Q4_K")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sweepbench-compile-"))
    os.environ["NUMBA_CACHE_DIR"] = str(tmp / "numba-cache")  # before numba is imported: nothing cached

    import sweepbench  # noqa: F401  (numpy shim before numba)
    from numba.core import event

    from sweepbench.engines import create_engine
    from sweepbench.engines.base import EngineOptions
    from sweepbench.synth import write_synthetic_model

    total, self_time, stack = Counter(), Counter(), []

    class Timer(event.Listener):
        def on_start(self, ev):
            stack.append([time.perf_counter(), 0.0])

        def on_end(self, ev):
            t0, children = stack.pop()
            t = time.perf_counter() - t0
            fn = ev.data["dispatcher"].py_func
            name = f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__qualname__}"
            if stack:
                stack[-1][1] += t
            else:
                total[name] += t
            self_time[f"{name}{ev.data.get('args')}"[:110]] += t - children

    event.register("numba:compile", Timer())
    model = tmp / "tiny.gguf"
    write_synthetic_model(model, "tiny", args.arch, args.expert_type, "Q8_0", seed=0, threads=2)
    engine = create_engine("numba-cpu")
    t0 = time.perf_counter()
    engine.load(str(model), EngineOptions(n_ctx=64, n_threads=2))
    t1 = time.perf_counter()
    engine.warmup()
    t2 = time.perf_counter()
    print(f"tiny {args.arch}, {args.expert_type} experts: load {t1 - t0:.1f} s, warm-up {t2 - t1:.1f} s, "
          f"compiling {sum(total.values()):.1f} s\n\n| s, with callees | function (top-level compiles) |\n|---:|---|")
    for name, t in total.most_common(args.top):
        print(f"| {t:.2f} | {name} |")
    print("\n| s, self | function and signature |\n|---:|---|")
    for name, t in self_time.most_common(args.top):
        print(f"| {t:.2f} | {name} |")


if __name__ == "__main__":
    main()
