"""numba-cpu against ik_llama.cpp on the ``small`` presets: ``sweepbench sweep-bench --engine numba-cpu --vs ik``.

Self-contained: missing models are synthesized into the sweepbench cache ($SWEEPBENCH_CACHE, else
~/.cache/sweepbench; 5.3 GB for the three), the machine's streaming-read bandwidth is measured in the same run
(the TG roofline), each sweep's JSONL is kept under benchmarks/runs/, and the ratio table plus the bound figures
replace the block between the markers in benchmarks/NOTES.md (the prose around it is written by hand).

    python benchmarks/cpu_vs_ik.py                  # the three presets, -c 2048 -ub 512 -t 2 -r 3 -rtr
    python benchmarks/cpu_vs_ik.py --reps 5 --only qwen3moe-Q4_K
    python benchmarks/cpu_vs_ik.py --no-notes       # print the table, leave NOTES.md alone

Both engines run with -rtr (run-time repacking; ik's fastest CPU setting, numba-cpu's R8 layouts) and -fa on.
The ik wheel is a generic AVX2 build, slower than a native ik build (anchors.md: TG 0.78x, PP 0.88x on this
class of machine), so a ratio against it flatters us: the NOTES say so next to the table.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_io import read_sweep, replace_block

HERE = Path(__file__).resolve().parent
NOTES = HERE / "NOTES.md"
BEGIN, END = "<!-- cpu-vs-ik:begin (written by benchmarks/cpu_vs_ik.py) -->", "<!-- cpu-vs-ik:end -->"
PRESETS = {  # name -> (arch, expert type, extra sweep flags)
    "qwen3moe-Q8_0": ("qwen3moe", "Q8_0", []),
    "qwen3moe-Q4_K": ("qwen3moe", "Q4_K", []),
    "bailingmoe2-Q8_0": ("bailingmoe2", "Q8_0", []),
}
SIZES_GB = {"qwen3moe-Q8_0": 2.31, "qwen3moe-Q4_K": 1.41, "bailingmoe2-Q8_0": 1.53}


def ensure_model(name: str) -> Path:
    from rich.console import Console

    from sweepbench.bench.builtin_model import builtin_model_path, cache_dir, ensure_builtin_model

    arch, experts, _ = PRESETS[name]
    spec = {"preset": "small", "arch": arch, "expert_type": experts, "dense_type": "Q8_0", "seed": 0}
    path = builtin_model_path(spec)
    if not path.exists():
        cache_dir().mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(cache_dir()).free / 1e9
        if free < SIZES_GB[name] + 1:
            sys.exit(f"cpu_vs_ik: {cache_dir()} has {free:.1f} GB free, {name} needs {SIZES_GB[name]:.1f} GB")
    return ensure_builtin_model(Console(stderr=True), spec)


def read_bandwidth(threads: int, mb: int = 800) -> float:
    """Streaming-read GB/s of a plain vectorised Numba sum over ``mb`` MB (median of 7), the TG roofline."""
    code = f"""
import time, numpy as np, numba
from sweepbench.cpu_kernels.threads import init_threading, set_threads
init_threading(); set_threads({threads})
from numba import njit, prange
@njit(fastmath=True)
def part(a):
    t = np.float32(0)
    for i in range(a.shape[0]): t += a[i]
    return t
@njit(parallel=True)
def total(a, out):
    n = a.shape[0] // out.shape[0]
    for c in prange(out.shape[0]): out[c] = part(a[c * n:(c + 1) * n])
a = np.ones({mb} * 250_000, np.float32); out = np.zeros(64, np.float32); total(a, out)
ts = []
for _ in range(7):
    t0 = time.perf_counter(); total(a, out); ts.append(time.perf_counter() - t0)
print(a.nbytes / sorted(ts)[3] / 1e9)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def run_sweep(name: str, path: Path, args) -> Path:
    out = HERE / "runs" / f"cpu_vs_ik-{name}.jsonl"
    out.parent.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "sweepbench.cli", "sweep-bench", "-m", str(path), "--engine", "numba-cpu",
           "--vs", "ik", "-c", str(args.ctx), "-ub", str(args.ub), "-t", str(args.threads), "-r", str(args.reps),
           "-rtr", "-fa", "on", "--label", f"numba-cpu {name}", "-o", str(out), *PRESETS[name][2]]
    print(f"[{time.strftime('%H:%M:%S')}] load {loadavg()}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    return out


def rows_of(jsonl: Path) -> tuple[dict, dict[int, dict]]:
    """(system record, {n_kv: {"ours": row, "ik": row}}) of a --vs run."""
    system, recs = read_sweep(jsonl)
    rows: dict[int, dict] = {}
    for rec in recs:
        rows.setdefault(rec["n_kv"], {})["ik" if rec["engine"] == "ik" else "ours"] = rec
    return system, rows


def table(results: dict[str, Path], bw: dict[int, float]) -> str:
    lines = ["| model | N_KV | S_PP ours | S_PP ik | PP ratio | S_TG ours | S_TG ik | TG ratio | TG GB/s ours "
             "(% of read bw) | TG GB/s ik | PP GOP/s ours |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    roof = max(bw.values())
    for name, jsonl in results.items():
        _, rows = rows_of(jsonl)
        for n_kv in sorted(rows):
            o, k = rows[n_kv]["ours"], rows[n_kv]["ik"]
            lines.append(
                f"| {name} | {n_kv} | {o['speed_pp']:.1f} | {k['speed_pp']:.1f} | **{o['speed_pp'] / k['speed_pp']:.2f}** "
                f"| {o['speed_tg']:.2f} | {k['speed_tg']:.2f} | **{o['speed_tg'] / k['speed_tg']:.2f}** "
                f"| {o['tg_gbps']:.1f} ({o['tg_gbps'] / roof:.0%}) | {k['tg_gbps']:.1f} | {o['pp_gflops']:.0f} |")
    return "\n".join(lines)


def spreads(results: dict[str, Path]) -> str:
    """Per model: the range of the per-repetition speeds (both engines), the noise the medians sit in."""
    out = []
    for name, jsonl in results.items():
        _, rows = rows_of(jsonl)
        worst = max(max((r["speed_tg_max"] - r["speed_tg_min"]) / r["speed_tg"],
                        (r["speed_pp_max"] - r["speed_pp_min"]) / r["speed_pp"])
                    for pair in rows.values() for r in pair.values())
        out.append(f"{name}: widest repetition range {worst:.0%} of its median")
    return "; ".join(out)


def write_notes(block: str) -> None:
    replace_block(NOTES, BEGIN, END, block, before="## GPU engine")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", action="append", choices=list(PRESETS), help="run only these presets")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--ctx", type=int, default=2048)
    p.add_argument("--ub", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-notes", action="store_true", help="print the block, do not touch NOTES.md")
    args = p.parse_args()
    names = args.only or list(PRESETS)
    paths = {n: ensure_model(n) for n in names}
    bw = {t: read_bandwidth(t) for t in (1, args.threads)}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = loadavg()
    results = {n: run_sweep(n, paths[n], args) for n in names}
    system, _ = rows_of(next(iter(results.values())))
    host, ours = system.get("host", {}), system.get("engine_info", {}).get("numba-cpu", {})
    cmd = (f"python benchmarks/cpu_vs_ik.py --reps {args.reps}" + "".join(f" --only {n}" for n in args.only or []))
    block = "\n".join([
        f"Run {started}: `{cmd}` = `sweepbench sweep-bench -m <small preset> --engine numba-cpu --vs ik "
        f"-c {args.ctx} -ub {args.ub} -t {args.threads} -r {args.reps} -rtr -fa on` per model "
        f"(JSONL in benchmarks/runs/). Host: {host.get('cpu', 'n/a')}, {os.cpu_count()} cores, numba-cpu on "
        f"{ours.get('simd')} code for {ours.get('cpu_target')}, {ours.get('threading_layer')} threads, decode "
        f"{ours.get('decode_step', 'n/a')}; "
        f"load average before: {load_before}, after: {loadavg()}. "
        f"Streaming read (plain Numba sum, 800 MB): " + ", ".join(f"{v:.1f} GB/s on {t} thread(s)" for t, v in bw.items())
        + ". Medians over repetitions; ratio = numba-cpu / ik (wheel build, see above).",
        "",
        table(results, bw),
        "",
        f"Noise: {spreads(results)}.",
    ])
    print(block)
    if not args.no_notes:
        write_notes(block)
        print(f"\nwrote the table into {NOTES}", file=sys.stderr)


if __name__ == "__main__":
    main()
