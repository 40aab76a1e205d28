"""Verdict of `gpu_check_and_sweep.sh ab`: should the decode tails be on? Prints the evidence, then `on` or `off`
as its last line.

    python benchmarks/ab_verdict.py TESTS_LOG PROFILE_DIR

`on` only where the CUDA tests log shows no failure and, for every preset profiled, the fused step's graph decode
(median over rounds of each `gpu_profile.py` run's median ms per token) is below the base step's.
"""

from __future__ import annotations

import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

PROFILE = re.compile(r"prof-(?P<model>\w+)-(?P<cfg>base|fused)-\d+\.txt$")
DECODE = re.compile(r"graph decode: median ([0-9.]+) ms")


def verdict(tests_log: Path, profile_dir: Path) -> tuple[list[str], str]:
    lines = []
    log = tests_log.read_text(errors="replace") if tests_log.exists() else ""
    summary = re.findall(r"^=*\s*(.*\b(?:passed|failed|error)\b.*?)\s*=*$", log, re.M)
    tests_ok = bool(summary) and not re.search(r"\b\d+ (failed|errors?)\b", summary[-1])
    lines.append(f"tests: {summary[-1] if summary else 'no pytest summary'}")
    times: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for f in sorted(profile_dir.glob("prof-*.txt")):
        m, d = PROFILE.search(f.name), DECODE.search(f.read_text(errors="replace"))
        if m and d:
            times[m["model"]][m["cfg"]].append(float(d.group(1)))
    faster = bool(times)
    for model, cfgs in sorted(times.items()):
        if not (cfgs["base"] and cfgs["fused"]):
            lines.append(f"{model}: a side has no graph decode figure")
            faster = False
            continue
        base, fused = statistics.median(cfgs["base"]), statistics.median(cfgs["fused"])
        lines.append(f"{model}: base {base:.3f} ms, fused {fused:.3f} ms per token ({base / fused:.3f}x)")
        faster &= fused < base
    return lines, "on" if tests_ok and faster else "off"


if __name__ == "__main__":
    evidence, answer = verdict(Path(sys.argv[1]), Path(sys.argv[2]))
    print("\n".join(evidence + [answer]))
