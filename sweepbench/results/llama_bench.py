"""llama-bench results (markdown rows, JSON array, JSONL) as sweep runs: a ``pp``/``tg`` test at depth d is the S_PP /
S_TG of the row N_KV = d. Tests that share every setting but the test itself form one run (per PP size x TG size).

Test names: ``pp512``, ``tg128`` (depth 0), mainline's ``pp512 @ d4096`` / ``tg128 @ d4096`` (``-d``), and ik's
``tg64@pp512`` (``-gp``: 64 tokens generated after a 512-token prompt, i.e. TG at depth 512). ``pp512+tg128`` (``-pg``)
mixes both phases in one number and has no sweep equivalent, so it is skipped.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from sweepbench.errors import SweepbenchError
from sweepbench.results.records import ParsedRun, foreign_header

TEST_FIELDS = {"n_prompt", "n_gen", "n_depth", "test_time", "avg_ns", "stddev_ns", "avg_ts", "stddev_ts",
               "samples_ns", "samples_ts"}
# Markdown column titles / JSON keys -> our header options.
OPTION_NAMES = {"threads": "n_threads", "ngl": "n_gpu_layers", "fa": "flash_attn", "backends": "backend",
                "n_threads": "n_threads", "n_gpu_layers": "n_gpu_layers", "flash_attn": "flash_attn"}
MODEL_FIELDS = {"model": "name", "size": "size", "params": "params", "model_filename": "path",
                "model_type": "name", "model_size": "size_bytes", "model_n_params": "n_params"}
HOST_FIELDS = {"cpu_info": "cpu", "gpu_info": "gpu"}
SIMPLE_TEST = re.compile(r"(pp|tg)(\d+)(?:\s*@\s*d(\d+))?")
IK_GP_TEST = re.compile(r"tg(\d+)\s*@\s*pp(\d+)")
COMBINED_TEST = re.compile(r"pp\d+\s*\+\s*tg\d+")
MEAN_SD = re.compile(r"([\d.]+)(?:\s*±\s*([\d.]+))?")


@dataclass(frozen=True)
class BenchTest:
    config: tuple  # ((field, value), ...): every setting but the test, identifies the run
    kind: str  # "pp" or "tg"
    n_tokens: int
    depth: int
    mean_ts: float
    stddev_ts: float | None
    samples_ts: tuple[float, ...]
    source_format: str
    line: int


def is_bench_record(record: dict) -> bool:
    return "avg_ts" in record and ("n_prompt" in record or "n_gen" in record)


def tests_from_cells(cells: dict[str, str], line: int) -> list[BenchTest]:
    """One markdown row (column title -> cell). Raises ValueError naming the bad cell."""
    name = cells["test"].strip()
    if COMBINED_TEST.fullmatch(name):
        return []
    if m := SIMPLE_TEST.fullmatch(name):
        kind, n_tokens, depth = m.group(1), int(m.group(2)), int(m.group(3) or 0)
    elif m := IK_GP_TEST.fullmatch(name):
        kind, n_tokens, depth = "tg", int(m.group(1)), int(m.group(2))
    else:
        raise ValueError(f"unknown test {name!r}")
    if not (m := MEAN_SD.fullmatch(cells["t/s"].strip())):
        raise ValueError(f"t/s = {cells['t/s']!r}")
    config = tuple((k, v) for k, v in cells.items() if k not in ("test", "t/s"))
    sd = float(m.group(2)) if m.group(2) else None
    return [BenchTest(config, kind, n_tokens, depth, float(m.group(1)), sd, (), "llama-bench-md", line)]


def tests_from_record(record: dict, where: str, line: int = 0) -> list[BenchTest]:
    """One llama-bench JSON object (one test with its repetitions); ``where`` names it in errors."""
    try:
        n_prompt, n_gen = int(record.get("n_prompt") or 0), int(record.get("n_gen") or 0)
        if (n_prompt > 0) == (n_gen > 0):  # pp+tg mixed, or nothing
            return []
        depth, mean = int(record.get("n_depth") or 0), float(record["avg_ts"])
        stddev = None if record.get("stddev_ts") is None else float(record["stddev_ts"])
        samples = tuple(float(s) for s in record.get("samples_ts") or ())
    except (TypeError, ValueError):
        keys = {k: record.get(k) for k in ("n_prompt", "n_gen", "n_depth", "avg_ts", "stddev_ts")}
        raise SweepbenchError(f"{where}: llama-bench record with unreadable numbers {keys}") from None
    if min(n_prompt, n_gen, depth) < 0 or not mean >= 0:
        raise SweepbenchError(f"{where}: llama-bench record with negative or missing numbers")
    config = tuple((k, json.dumps(v) if isinstance(v, (list, dict)) else v)
                   for k, v in record.items() if k not in TEST_FIELDS)
    return [BenchTest(config, "pp" if n_prompt else "tg", n_prompt or n_gen, depth, mean, stddev, samples,
                      "llama-bench-json", line)]


def runs_from_json(path: Path, data) -> list[ParsedRun]:
    if not isinstance(data, list) or not all(isinstance(r, dict) and is_bench_record(r) for r in data):
        raise SweepbenchError(f"{path}: JSON array is not llama-bench output (objects with n_prompt/n_gen/avg_ts)")
    tests = [t for i, r in enumerate(data) for t in tests_from_record(r, f"{path}: record {i + 1}")]
    return runs_from_tests(path, tests)


def runs_from_tests(path: Path, tests: list[BenchTest]) -> list[ParsedRun]:
    """Group tests into runs: same settings, one PP size and one TG size per run, rows keyed by depth."""
    groups: dict[tuple, list[BenchTest]] = {}
    for t in tests:
        groups.setdefault(t.config, []).append(t)
    runs = []
    for group in groups.values():
        pp_sizes = sorted({t.n_tokens for t in group if t.kind == "pp"}) or [None]
        tg_sizes = sorted({t.n_tokens for t in group if t.kind == "tg"}) or [None]
        for pp in pp_sizes:
            for tg in tg_sizes:
                chosen = [t for t in group if (t.kind, t.n_tokens) in (("pp", pp), ("tg", tg))]
                runs.append(ParsedRun(_header(path, group[0]), _rows(chosen, pp, tg)))
    return runs


def _header(path: Path, test: BenchTest) -> dict:
    header = foreign_header(path, test.source_format, test.line)
    for key, value in test.config:
        if key in MODEL_FIELDS:
            header["model"][MODEL_FIELDS[key]] = value
        elif key in HOST_FIELDS:
            header.setdefault("host", {})[HOST_FIELDS[key]] = value
        elif key == "build_commit":
            header["engine_info"] = {"build": value}
        else:
            header["options"][OPTION_NAMES.get(key, key)] = value
    return header


def _rows(tests: list[BenchTest], pp: int | None, tg: int | None) -> list[dict]:
    rows: dict[int, dict] = {}
    for t in sorted(tests, key=lambda t: t.depth):
        row = rows.setdefault(t.depth, {"type": "row", "pp": pp, "tg": tg, "n_kv": t.depth})
        row[f"speed_{t.kind}"] = t.mean_ts
        row[f"t_{t.kind}"] = t.n_tokens / t.mean_ts if t.mean_ts > 0 else None
        if t.samples_ts:
            row[f"samples_speed_{t.kind}"] = list(t.samples_ts)
            row[f"samples_t_{t.kind}"] = [t.n_tokens / s for s in t.samples_ts if s > 0]
        if t.stddev_ts is not None:
            row[f"stddev_speed_{t.kind}"] = t.stddev_ts
    return list(rows.values())
