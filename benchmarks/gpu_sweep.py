"""numba-cuda on an H200 against ik_llama.cpp's published H200 figures (shared/reference/anchors.md).

Runs ``sweepbench sweep-bench --engine numba-cuda`` on the full-size presets (Q4_K experts, Q8_0 dense) with
-c 16384 and -ub 2048 / 512, measures the device-to-device copy bandwidth in the same run (the TG roofline),
keeps every JSONL, and writes a table: our S_PP / S_TG per N_KV, ik's figures at the N_KV the anchors give
(0, 2048, the last window), the ratios, TG GB/s against the copy bandwidth and PP TFLOP/s.

    python benchmarks/gpu_sweep.py --models-dir /tmp/models --runs-dir $OUT        # on the GPU machine
    python benchmarks/gpu_sweep.py --table-only --runs-dir benchmarks/runs --notes   # rebuild the table here

Models missing from --models-dir are synthesized there first (18 GB + 9.7 GB).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench_io import read_sweep, replace_block

HERE = Path(__file__).resolve().parent
NOTES = HERE / "NOTES.md"
BEGIN, END = "<!-- gpu-sweep:begin (written by benchmarks/gpu_sweep.py) -->", "<!-- gpu-sweep:end -->"
ANCHOR_CARD = "H200"  # the card of anchors.md: a run on another one goes into a block of its own (``markers``)

# ik_llama.cpp on one H200 (anchors.md): S_PP at N_KV 0 / 2048 / last window, S_TG at N_KV 0 / last window.
# None: the anchor gives no figure there ("~" figures are kept: they are what the anchors table prints).
ANCHORS = {
    ("qwen3-30b-a3b", 2048, ""): ((6474, 7641, 5740), (242.4, 192.6)),
    ("qwen3-30b-a3b", 512, ""): ((3855, 6900, 5106), (242.9, 190.6)),
    ("qwen3-30b-a3b", 2048, "q8kv"): ((6557, 7696, 5617), (228.4, 167.3)),
    ("ling-mini-2.0", 2048, ""): ((15579, 17500, 18308), (535.4, 408.8)),
    ("ling-mini-2.0", 2048, "ger"): ((15100, 17500, 18326), (496.3, 402.6)),
    ("ling-mini-2.0", 512, ""): ((5254, 13568, 10911), (524.7, 417.1)),
    ("ling-mini-2.0", 512, "ger"): ((4454, 12863, 10442), (481.2, 391.6)),
}
ARCH = {"qwen3-30b-a3b": "qwen3moe", "ling-mini-2.0": "bailingmoe2"}
VARIANT_FLAGS = {"": [], "ger": ["-ger"], "q8kv": ["-ctk", "q8_0", "-ctv", "q8_0"]}


def copy_bandwidth(gb: float = 4.0) -> float:
    """Device-to-device copy GB/s (bytes read + written), median of 10 copies of a gb-GB buffer."""
    import numpy as np

    import sweepbench  # noqa: F401  (numpy shim)
    from numba import cuda

    n = int(gb * 1e9) // 4
    a, b = cuda.device_array(n, np.float32), cuda.device_array(n, np.float32)
    b.copy_to_device(a)
    times = []
    for _ in range(10):
        e0, e1 = cuda.event(), cuda.event()
        e0.record()
        b.copy_to_device(a)
        e1.record()
        e1.synchronize()
        times.append(cuda.event_elapsed_time(e0, e1) / 1e3)
    return 2 * a.nbytes / sorted(times)[5] / 1e9


def ensure_model(models: Path, preset: str) -> Path:
    path = models / f"{preset}-Q4_K-Q8_0.gguf"
    if not path.exists():
        models.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "sweepbench.cli", "synth", preset, "--expert-type", "Q4_K",
                        "--dense-type", "Q8_0", "-o", str(path)], check=True, stdout=sys.stderr)
        os.sync()  # the page cache's writeback of a new 9-18 GB file slowed the host's launches in timed rows
        print(f"synth {preset}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return path


def run_name(preset: str, ub: int, variant: str) -> str:
    return f"gpu-{preset}-ub{ub}{'-' + variant if variant else ''}"


def run_sweep(path: Path, preset: str, ub: int, variant: str, args) -> Path:
    out = Path(args.runs_dir) / f"{run_name(preset, ub, variant)}.jsonl"
    cmd = [sys.executable, "-m", "sweepbench.cli", "sweep-bench", "-m", str(path), "--engine", "numba-cuda",
           "-c", str(args.ctx), "-ub", str(ub), "-b", str(max(ub, 2048)), "-r", str(args.reps), "-fa", "on",
           "--label", f"numba-cuda {preset} ub{ub} {variant}".strip(), "-o", str(out), *VARIANT_FLAGS[variant]]
    print(f"[{time.strftime('%H:%M:%S')}] {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=False, stdout=sys.stderr)  # a failed row keeps the rows before it
    return out


def read_run(jsonl: Path) -> tuple[dict, list[dict]]:
    system, rows = read_sweep(jsonl)
    return system, sorted(rows, key=lambda r: r["n_kv"])


def _ratio(ours: float | None, theirs: float | None) -> str:
    return f"**{ours / theirs:.2f}**" if ours and theirs else "-"


def table(runs: dict[tuple[str, int, str], Path], copy_gbps: float) -> str:
    lines = ["| model, -ub, flags | N_KV | S_PP ours | S_PP ik | PP ratio | PP TFLOP/s | S_TG ours | S_TG ik | TG ratio "
             f"| TG GB/s (% of {copy_gbps:.0f} GB/s copy) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (preset, ub, variant), jsonl in runs.items():
        if not jsonl.exists():
            continue
        _, rows = read_run(jsonl)
        (pp0, pp2k, pp_last), (tg0, tg_last) = ANCHORS.get((preset, ub, variant), ((None,) * 3, (None,) * 2))
        last = rows[-1]["n_kv"] if rows else -1
        for r in rows:
            n = r["n_kv"]
            ik_pp = pp0 if n == 0 else pp2k if n == 2048 else pp_last if n == last else None
            ik_tg = tg0 if n == 0 else tg_last if n == last else None
            label = f"{preset} -ub {ub}{' ' + ' '.join(VARIANT_FLAGS[variant]) if variant else ''}"
            lines.append(
                f"| {label} | {n} | {r['speed_pp']:.0f} | {ik_pp or ''} | {_ratio(r['speed_pp'], ik_pp)} "
                f"| {r['pp_gflops'] / 1e3:.1f} | {r['speed_tg']:.1f} | {ik_tg or ''} | {_ratio(r['speed_tg'], ik_tg)} "
                f"| {r['tg_gbps']:.0f} ({r['tg_gbps'] / copy_gbps:.0%}) |")
    return "\n".join(lines)


def markers(gpu: str) -> tuple[str, str]:
    """The NOTES block of a run on this card: the anchors' card has the main one, any other card one per model
    name (an H100 table never replaces the H200 one)."""
    if ANCHOR_CARD in gpu:
        return BEGIN, END
    slug = "-".join(w for w in gpu.lower().replace("nvidia", "").split() if w.isalnum())[:24] or "other"
    return (f"<!-- gpu-sweep-{slug}:begin (written by benchmarks/gpu_sweep.py) -->",
            f"<!-- gpu-sweep-{slug}:end -->")


def card_note(gpu: str, copy_gbps: float) -> str:
    """How ik's figures relate to this run's card."""
    if ANCHOR_CARD in gpu:
        return "same H200 class, not measured in this run"
    return (f"measured on an H200, not on this run's {gpu or 'GPU'}: a card with {copy_gbps:.0f} GB/s of copy "
            "bandwidth against the H200's ~4000, so the ratios are not the issue's H200 comparison")


def write_notes(block: str, gpu: str) -> None:
    replace_block(NOTES, *markers(gpu), block, before="### What bounds each figure now")


def _shown(path: Path) -> str:
    """A path as the repo names it (relative to its root where it lies inside)."""
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return str(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models-dir", default="/tmp/models")
    p.add_argument("--runs-dir", default=str(HERE / "runs"))
    p.add_argument("--only", action="append", help="run only these: PRESET:UB[:VARIANT] (e.g. ling-mini-2.0:512:ger)")
    p.add_argument("--ctx", type=int, default=16384)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--table-only", action="store_true", help="rebuild the table from the JSONL in --runs-dir")
    p.add_argument("--copy-gbps", type=float, help="the copy bandwidth (with --table-only: from the run's meta)")
    p.add_argument("--notes", action="store_true", help="write the block into benchmarks/NOTES.md")
    args = p.parse_args()
    wanted = [tuple(s.split(":")) for s in args.only] if args.only else [
        ("qwen3-30b-a3b", "2048"), ("ling-mini-2.0", "2048"), ("qwen3-30b-a3b", "512"), ("ling-mini-2.0", "512"),
        ("ling-mini-2.0", "2048", "ger"), ("qwen3-30b-a3b", "2048", "q8kv")]  # most wanted first
    keys = [(w[0], int(w[1]), w[2] if len(w) > 2 else "") for w in wanted]
    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    meta_path = runs_dir / "gpu-sweep-meta.json"
    if args.table_only:
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        copy_gbps = args.copy_gbps or meta.get("copy_gbps", 0)
        runs = {k: runs_dir / f"{run_name(*k)}.jsonl" for k in keys}
    else:
        copy_gbps = copy_bandwidth()
        meta = {"copy_gbps": copy_gbps, "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "argv": sys.argv, "ctx": args.ctx, "reps": args.reps}
        meta_path.write_text(json.dumps(meta))
        print(f"copy bandwidth {copy_gbps:.0f} GB/s", file=sys.stderr, flush=True)
        runs = {}
        for preset, ub, variant in keys:
            runs[(preset, ub, variant)] = run_sweep(ensure_model(Path(args.models_dir), preset), preset, ub, variant, args)
    system = next((read_run(p)[0] for p in runs.values() if p.exists()), {})
    host = system.get("host", {})
    block = "\n".join([
        f"Run {meta.get('started', '?')}: `python benchmarks/gpu_sweep.py` = `sweepbench sweep-bench -m <preset, Q4_K "
        f"experts, Q8_0 dense> --engine numba-cuda -c {meta.get('ctx', args.ctx)} -ub <ub> -fa on` per row group "
        f"(JSONL in {_shown(runs_dir)}/gpu-*.jsonl). GPU: {host.get('gpu') or 'n/a'}, "
        f"driver {host.get('cuda_driver')}. "
        f"Device-to-device copy: {copy_gbps:.0f} GB/s. ik = ik_llama.cpp's figures from anchors.md "
        f"({card_note(host.get('gpu') or '', copy_gbps)}; its N_KV 2048 S_PP for qwen3 -ub 512 (6900) and ling -ub "
        "2048 (17500) are the "
        "approximate '~' figures of anchors.md); PP TFLOP/s and TG GB/s as sweepbench counts them (weights + KV "
        "read per token).",
        "",
        table(runs, copy_gbps or 1.0),
    ])
    print(block)
    if args.notes:
        write_notes(block, host.get("gpu") or "")


if __name__ == "__main__":
    main()
