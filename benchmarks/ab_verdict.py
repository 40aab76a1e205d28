"""Verdict of `gpu_check_and_sweep.sh ab`: which setting of the switch under test should a following sweep use?
Prints the evidence, then the setting as its last line: a variant's name, or `off`.

    python benchmarks/ab_verdict.py TESTS_LOG PROFILE_DIR
    python benchmarks/ab_verdict.py --pdl-ab PROFILE_OUTPUT    # the lines of gpu_profile.py --pdl-ab

Profiles are `prof-<preset>-<setting>-<round>.txt` (each a `gpu_profile.py` run; its median graph decode in ms
per token), `base` the switch off. A variant wins only where the CUDA tests log shows no failure and, for every
preset profiled and in every round, its graph decode is below base's; among winners the lowest total time. Per
round, not the median over rounds: on the 15:05 UTC H100 run the first profile of a fresh machine ran 8% slow, and
a median of two rounds called a step faster that round 2 measured 3% slower.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

PROFILE = re.compile(r"prof-(?P<model>\w+)-(?P<cfg>[a-z0-9]+)-(?P<round>\d+)\.txt$")
DECODE = re.compile(r"graph decode: median ([0-9.]+) ms")


def tests_passed(tests_log: Path) -> tuple[bool, str]:
    """pytest's closing line ("53 passed, 1 skipped, 231 warnings in 170.00s") without a failure or an error; a
    run killed by its timeout has none."""
    log = tests_log.read_text(errors="replace") if tests_log.exists() else ""
    summary = re.findall(r"^=*\s*(\d+ \w+(?:, \d+ \w+)* in [0-9.]+s\b.*?)\s*=*$", log, re.M)
    ok = bool(summary) and " passed" in summary[-1] and not re.search(r"\d+ (failed|errors?)\b", summary[-1])
    return ok, f"tests: {summary[-1] if summary else 'no pytest summary'}"


PDL_LINE = re.compile(r"^pdl (?P<cfg>[\w-]+) round (?P<round>\d+): (?P<ms>[0-9.]+) ms per step back to back", re.M)


def verdict(tests_log: Path, profile_dir: Path) -> tuple[list[str], str]:
    tests_ok, line = tests_passed(tests_log)
    times: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for f in sorted(profile_dir.glob("prof-*.txt")):
        m, d = PROFILE.search(f.name), DECODE.search(f.read_text(errors="replace"))
        if m and d:
            times[m["model"]][m["round"]][m["cfg"]] = float(d.group(1))
    return judge(times, tests_ok, [line])


def pdl_verdict(text: str, model: str = "q") -> tuple[list[str], str]:
    """The same rule over ``gpu_profile.py --pdl-ab`` lines (GPU time per step, replays back to back; off is
    the base); the device tests of the programmatic edges ran in an earlier call."""
    times: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for m in PDL_LINE.finditer(text):
        times[model][m["round"]]["base" if m["cfg"] == "off" else m["cfg"]] = float(m["ms"])
    return judge(times, True, [])


def judge(times, tests_ok: bool, lines: list[str]) -> tuple[list[str], str]:
    """times[preset][round][setting] (ms, base = the switch off) -> (evidence lines, the winner or off)."""
    variants = sorted({c for rounds in times.values() for cfg in rounds.values() for c in cfg} - {"base"})
    winners = {}
    for v in variants:
        wins, total = bool(times), 0.0
        for model, rounds in sorted(times.items()):
            for rnd, cfg in sorted(rounds.items()):
                if not ("base" in cfg and v in cfg):
                    lines.append(f"{model} round {rnd}: base or {v} has no graph decode figure")
                    wins = False
                    continue
                base, var = cfg["base"], cfg[v]
                lines.append(f"{model} round {rnd}: base {base:.3f} ms, {v} {var:.3f} ms per token "
                             f"({base / var:.3f}x)")
                wins &= var < base
                total += var
        if wins:
            winners[v] = total
    if not variants:
        lines.append("no variant profiled")
    best = min(winners, key=winners.get) if winners and tests_ok else "off"
    return lines, best


if __name__ == "__main__":
    if sys.argv[1] == "--pdl-ab":  # ab_verdict.py --pdl-ab PROFILE_OUTPUT
        evidence, answer = pdl_verdict(Path(sys.argv[2]).read_text(errors="replace"))
    else:
        evidence, answer = verdict(Path(sys.argv[1]), Path(sys.argv[2]))
    print("\n".join(evidence + [answer]))
