"""Real logs the fixtures do not show: line endings, encodings, extra columns, warnings between rows, missing values,
and bad values (one line naming file and line, never a traceback)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweepbench.errors import SweepbenchError
from sweepbench.results.runs import load_runs

LOGS = Path(__file__).parent / "data" / "sweep-logs"
HYBRID = LOGS / "ik-pr838-ling-1t-hybrid-2x3090.log"
HEADER = "|    PP |     TG |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |"
SEPARATOR = "|-------|--------|--------|----------|----------|----------|----------|"


def row(n_kv: int, s_pp: str = "1024.00", s_tg: str = "64.00") -> str:
    return f"|   512 |    128 | {n_kv:6d} |    0.500 | {s_pp:>8} |    2.000 | {s_tg:>8} |"


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def as_tuples(run) -> list[tuple]:
    return [(r.pp, r.tg, r.n_kv, r.t_pp, r.speed_pp, r.t_tg, r.speed_tg) for r in run.rows]


@pytest.mark.parametrize("encode", [
    lambda t: t.replace("\n", "\r\n").encode(),  # CRLF, a log saved on Windows
    lambda t: "\n".join(line + "  \t" for line in t.splitlines()).encode(),  # trailing blanks
    lambda t: b"\xef\xbb\xbf" + t.encode(),  # UTF-8 with a BOM
    lambda t: t.replace("\n", "\r\n").encode("utf-16"),  # PowerShell's `llama-sweep-bench ... > log.txt`
], ids=["crlf", "trailing-spaces", "utf8-bom", "utf16"])
def test_same_log_other_bytes_same_run(tmp_path, encode):
    (expected,) = load_runs([HYBRID])
    text = HYBRID.read_text(encoding="utf-8")
    (run,) = load_runs([write(tmp_path, HYBRID.name, encode(text))])
    assert as_tuples(run) == as_tuples(expected) and len(run.rows) == 4
    assert run.header["options"] == expected.header["options"] and run.header["options"]["n_ctx"] == 65536
    assert (run.status, run.engine) == ("interrupted", "ik_llama.cpp")


def test_sweep_memory_columns_as_ik_prints_them(tmp_path):
    # --sweep-memory adds "| %10s | %10s |" columns titled RSS HWM and VRAM delta: %.1f MiB or n/a.
    head = HEADER + "    RSS HWM | VRAM delta |"
    sep = SEPARATOR + "------------|------------|"
    rows = [row(0) + "     2345.6 |        n/a |", row(512) + "     2350.1 |      812.5 |"]
    (run,) = load_runs([write(tmp_path, "mem.md", "\n".join([head, sep, *rows]) + "\n")])
    assert [(r.extra["rss_hwm_mib"], r.extra["vram_delta_mib"]) for r in run.rows] == [(2345.6, None), (2350.1, 812.5)]
    assert run.rows[1].speed_pp == 1024.0 and run.rows[1].n_kv == 512


def test_ik_jsonl_with_sweep_memory_keys(tmp_path):
    line = ('{{"n_kv_max": 1024, "n_batch": 2048, "n_ubatch": 512, "flash_attn": 1, "n_gpu_layers": 0, '
            '"n_threads": 2, "n_threads_batch": 2, "pp": 512, "tg": 128, "n_kv": {}, "t_pp": 0.5, '
            '"speed_pp": 1024.0, "t_tg": 2.0, "speed_tg": 64.0, "rss_hwm_mib": 2345.625, "vram_delta_mib": null }}')
    (run,) = load_runs([write(tmp_path, "ik.jsonl", "\n".join(line.format(k) for k in (0, 512)) + "\n")])
    assert [r.n_kv for r in run.rows] == [0, 512] and run.rows[0].extra["vram_delta_mib"] is None
    assert run.status == "complete" and run.header["options"]["n_ctx"] == 1024


def test_warnings_between_rows_keep_one_table(tmp_path):
    text = "\n".join([
        "main: n_kv_max = 2048, n_batch = 2048, n_ubatch = 512, flash_attn = 1, n_gpu_layers = 99, n_threads = 8, "
        "n_threads_batch = 8", "", HEADER, SEPARATOR, row(0),
        "ggml_backend_cuda_graph_compute: disabling CUDA graphs due to too many consecutive updates", row(512),
        "", "llama_kv_cache: warning: cache fragmented", "", row(1024), row(1536), "", "llama_print_timings: load"])
    (run,) = load_runs([write(tmp_path, "warn.log", text + "\n")])
    assert [r.n_kv for r in run.rows] == [0, 512, 1024, 1536] and run.status == "complete"


def test_a_later_table_after_text_is_not_glued_on(tmp_path):
    # a row whose N_KV does not grow after other lines belongs to someone else's (headerless) paste: not resumed
    text = "\n".join([HEADER, SEPARATOR, row(0), row(512), "and with -fa:", row(0), row(512)])
    (run,) = load_runs([write(tmp_path, "two.md", text + "\n")])
    assert [r.n_kv for r in run.rows] == [0, 512]


def test_missing_and_infinite_values_are_null(tmp_path):
    text = "\n".join([HEADER, SEPARATOR, row(0, s_pp="inf"), row(512, s_tg="n/a"), row(1024, s_pp="-")])
    (run,) = load_runs([write(tmp_path, "na.md", text + "\n")])
    assert [(r.speed_pp, r.speed_tg) for r in run.rows] == [(None, 64.0), (1024.0, None), (None, 64.0)]
    assert run.rows[0].samples("pp") == () and run.rows[1].samples("pp") == (1024.0,)


def test_nested_quotes_and_indented_tables(tmp_path):
    text = "\n".join(["> > " + HEADER, "> > " + SEPARATOR, "> >    " + row(0), "    " + row(512)])
    (run,) = load_runs([write(tmp_path, "quoted.md", text + "\n")])
    assert [r.n_kv for r in run.rows] == [0, 512]


SYSTEM = {"type": "system", "schema": 1, "label": "x"}


@pytest.mark.parametrize("lines, line_no, what", [
    ([HEADER, SEPARATOR, row(0), "|   512 |    128 |    n/a |    0.500 |  1024.00 |    2.000 |    64.00 |"], 4,
     "n_kv = None"),
    ([HEADER, SEPARATOR, "|   512 |    128 |    -64 |    0.500 |  1024.00 |    2.000 |    64.00 |"], 3, "n_kv = -64"),
    ([json.dumps(SYSTEM), json.dumps({"type": "row", "n_kv": "zero", "speed_pp": 1.0})], 2, "n_kv = 'zero'"),
    ([json.dumps(SYSTEM), json.dumps({"type": "row", "speed_pp": 1.0})], 2, "n_kv = None"),
    ([json.dumps(SYSTEM), json.dumps({"type": "row", "n_kv": 0, "speed_tg": "fast"})], 2, "speed_tg = 'fast'"),
    ([json.dumps(SYSTEM), json.dumps({"type": "row", "n_kv": 0, "samples_speed_tg": 5})], 2, "samples_speed_tg"),
    ([json.dumps({**SYSTEM, "model": "qwen"})], 1, "model = 'qwen'"),
    ([json.dumps({**SYSTEM, "label": 7})], 1, "label = 7"),
    (['{"n_kv": 1.5, "speed_pp": 1.0}'], 1, "n_kv = 1.5"),
    (['{"avg_ts": "fast", "n_prompt": 512, "n_gen": 0}'], 1, "llama-bench record"),
])
def test_bad_values_name_file_and_line(tmp_path, lines, line_no, what):
    path = write(tmp_path, "bad.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(SweepbenchError) as err:
        load_runs([path])
    message = str(err.value)
    assert message.startswith(f"{path}:{line_no}:") and what in message and "\n" not in message


def test_bad_llama_bench_json_array_names_the_record(tmp_path):
    path = write(tmp_path, "bench.json", json.dumps([{"avg_ts": None, "n_prompt": 512, "n_gen": 0}]))
    with pytest.raises(SweepbenchError, match=r"bench.json: record 1: llama-bench record"):
        load_runs([path])
