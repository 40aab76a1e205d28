"""Verdict of `gpu_check_and_sweep.sh ab`: should the decode tails be on? Prints the evidence, then `on` or `off`
as its last line.

    python benchmarks/ab_verdict.py TESTS_LOG PROFILE_DIR

`on` only where the CUDA tests log shows no failure and, for every preset profiled and in every round, the fused
step's graph decode (each `gpu_profile.py` run's median ms per token) is below the base step's. Per round, not
the median over rounds: on the 15:05 UTC H100 run the first profile of a fresh machine ran 8% slow, and a median
of two rounds called a step faster that round 2 measured 3% slower.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

PROFILE = re.compile(r"prof-(?P<model>\w+)-(?P<cfg>base|fused)-(?P<round>\d+)\.txt$")
DECODE = re.compile(r"graph decode: median ([0-9.]+) ms")


def verdict(tests_log: Path, profile_dir: Path) -> tuple[list[str], str]:
    lines = []
    log = tests_log.read_text(errors="replace") if tests_log.exists() else ""
    # pytest's closing line ("53 passed, 1 skipped, 231 warnings in 170.00s"); a run killed by its timeout has none
    summary = re.findall(r"^=*\s*(\d+ \w+(?:, \d+ \w+)* in [0-9.]+s\b.*?)\s*=*$", log, re.M)
    tests_ok = bool(summary) and " passed" in summary[-1] and not re.search(r"\d+ (failed|errors?)\b", summary[-1])
    lines.append(f"tests: {summary[-1] if summary else 'no pytest summary'}")
    times: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for f in sorted(profile_dir.glob("prof-*.txt")):
        m, d = PROFILE.search(f.name), DECODE.search(f.read_text(errors="replace"))
        if m and d:
            times[m["model"]][m["round"]][m["cfg"]] = float(d.group(1))
    faster = bool(times)
    for model, rounds in sorted(times.items()):
        for rnd, cfg in sorted(rounds.items()):
            if not ("base" in cfg and "fused" in cfg):
                lines.append(f"{model} round {rnd}: a side has no graph decode figure")
                faster = False
                continue
            base, fused = cfg["base"], cfg["fused"]
            lines.append(f"{model} round {rnd}: base {base:.3f} ms, fused {fused:.3f} ms per token "
                         f"({base / fused:.3f}x)")
            faster &= fused < base
    return lines, "on" if tests_ok and faster else "off"


if __name__ == "__main__":
    evidence, answer = verdict(Path(sys.argv[1]), Path(sys.argv[2]))
    print("\n".join(evidence + [answer]))
