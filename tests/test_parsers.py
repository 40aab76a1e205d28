"""Readers of published llama-sweep-bench / llama-bench output and of our JSONL (sweepbench.results)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sweepbench.commands import convert as convert_command
from sweepbench.errors import SweepbenchError, UsageError
from sweepbench.results.convert import convert_files
from sweepbench.results.parsers import parse_file
from sweepbench.results.runs import Row, Run, load_runs, merge_repeats

# Copies of /work/shared/fixtures/sweep-logs (real logs from ik_llama.cpp PRs/discussions), so CI needs no shared/.
LOGS = Path(__file__).parent / "data" / "sweep-logs"
DISCUSSION = LOGS / "ik-discussion357-qwen3-30b-a3b-comparisons.md"
TABLE_HEADER = "|    PP |     TG |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |"
ROW_RE = re.compile(r"^\s*(?:>\s*)?\|" + r"\s*(\d+) \|" * 3 + r"\s*([\d.]+) \|" * 4)


def raw_tables(path: Path) -> list[list[tuple]]:
    """An independent, deliberately naive reading of the fixture: consecutive row lines after each header."""
    tables, current = [], None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if "N_KV" in line and "S_PP t/s" in line:
            current = []
            tables.append(current)
        elif current is not None and (m := ROW_RE.match(line)):
            current.append(tuple(float(g) for g in m.groups()))
        elif current is not None and "|---" not in line:
            current = None
    return tables


@pytest.mark.parametrize("name", sorted(p.name for p in LOGS.iterdir() if p.name != "README.md"))
def test_every_fixture_converts_to_its_tables(name):
    path = LOGS / name
    runs = load_runs([path])
    expected = raw_tables(path)
    assert len(runs) == len(expected)
    for run, table in zip(runs, expected):
        got = [(r.pp, r.tg, r.n_kv, r.t_pp, r.speed_pp, r.t_tg, r.speed_tg) for r in run.rows]
        assert got == table
        assert run.label == path.stem + (f"#{runs.index(run) + 1}" if len(runs) > 1 else "")


def test_fixture_run_counts_match_the_readme():
    counts = {p.name: [len(r.rows) for r in load_runs([p])] for p in LOGS.iterdir() if p.name != "README.md"}
    assert counts["ik-pr838-ling-mini-2.0-q4_k_m-standard-routing.md"] == [16]
    assert counts["ik-pr838-ling-mini-2.0-q4_k_m-grouped-routing.md"] == [16]
    assert counts["ik-pr838-ling-1t-hybrid-2x3090.log"] == [4]
    assert counts["ik-pr861-crash-after-header.log"] == [0]
    assert len(counts[DISCUSSION.name]) == 18


# (file, run index) -> (rows, first row, last row) as (pp, tg, n_kv, t_pp, speed_pp, t_tg, speed_tg), read by eye.
SPOT_VALUES = {
    ("ik-pr838-ling-mini-2.0-q4_k_m-standard-routing.md", 0):
        (16, (2048, 512, 0, 0.151, 13527.88, 1.290, 396.98), (2048, 512, 30720, 0.214, 9552.51, 2.344, 218.43)),
    ("ik-pr838-ling-mini-2.0-q4_k_m-grouped-routing.md", 0):
        (16, (2048, 512, 0, 0.154, 13270.44, 1.358, 376.95), (2048, 512, 30720, 0.217, 9448.63, 2.416, 211.91)),
    ("ik-pr838-ling-1t-hybrid-2x3090.log", 0):
        (4, (8192, 2048, 0, 40.398, 202.78, 477.660, 4.29), (8192, 2048, 24576, 44.050, 185.97, 528.828, 3.87)),
    (DISCUSSION.name, 0): (32, (512, 128, 0, 3.610, 141.84, 5.067, 25.26), None),  # line 36, bare in <details>
    (DISCUSSION.name, 12): (32, (512, 128, 0, 3.957, 129.39, 7.209, 17.75), None),  # line 3260, quoted with "> "
    (DISCUSSION.name, 14):  # line 3676: crashed after 31 rows
        (31, (512, 128, 0, 4.591, 111.51, 14.650, 8.74), (512, 128, 15360, 4.931, 103.83, 18.383, 6.96)),
}


@pytest.mark.parametrize("name, index", sorted(SPOT_VALUES))
def test_fixture_spot_values(name, index):
    n_rows, first, last = SPOT_VALUES[(name, index)]
    run = load_runs([LOGS / name])[index]
    as_tuple = [(r.pp, r.tg, r.n_kv, r.t_pp, r.speed_pp, r.t_tg, r.speed_tg) for r in run.rows]
    assert len(as_tuple) == n_rows and as_tuple[0] == first
    assert last is None or as_tuple[-1] == last


def test_log_parameter_line_and_load_messages_describe_the_run():
    (run,) = load_runs([LOGS / "ik-pr838-ling-1t-hybrid-2x3090.log"])
    opts = run.header["options"]
    assert (opts["n_ctx"], opts["n_batch"], opts["n_ubatch"], opts["n_threads"]) == (65536, 8192, 8192, 12)
    assert (opts["flash_attn"], opts["n_gpu_layers"], opts["type_k"], opts["type_v"]) == (1, 99, "q8_0", "q8_0")
    assert opts["grouped_routing"] == 0 and run.engine == "ik_llama.cpp"
    assert run.rows[0].extra["n_kv_max"] == 65536  # rows carry ik's JSONL parameter keys too
    # 4 rows of 8192 tokens stop at 32768 of 65536: the user stopped it
    assert run.status == "interrupted"


def test_crash_after_header_is_a_run_without_rows():
    (run,) = load_runs([LOGS / "ik-pr861-crash-after-header.log"])
    assert run.rows == () and run.status == "interrupted"
    assert "unexpected situation" in run.message
    assert run.header["options"]["n_ubatch"] == 1024


def test_discussion_export_quoted_logged_and_crashed_tables():
    runs = load_runs([DISCUSSION])
    by_line = {r.header["source_line"]: r for r in runs}
    quoted = by_line[3260]  # "> |    PP |..." inside a quoted reply
    assert len(quoted.rows) == 32 and quoted.header["options"]["n_threads"] == 48
    assert quoted.model["arch"] == "qwen3moe" and quoted.engine == "ik_llama.cpp"
    crashed = by_line[3676]
    assert len(crashed.rows) == 31 and crashed.status == "interrupted" and "CUDA error" in crashed.message
    mainline = by_line[2386]
    assert mainline.engine == "llama.cpp" and mainline.model["ftype"] == "Q6_K"
    assert by_line[36].header["description"] == "llama.cpp CPU-only performance data without FA"
    assert by_line[36].header["options"] == {}  # a bare table: nothing invented
    complete = [r for r in runs if r.status == "complete"]
    assert len(complete) == 17


def test_convert_round_trip(tmp_path):
    inputs = sorted(p for p in LOGS.iterdir() if p.name != "README.md")
    out = tmp_path / "all.jsonl"
    runs = convert_files(inputs, out)
    again = load_runs([out])
    assert [r.label for r in again] == [r.label for r in runs]
    assert [r.rows for r in again] == [r.rows for r in runs]
    assert [(r.status, r.message) for r in again] == [(r.status, r.message) for r in runs]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    # per run: its header record, then its rows, then its end record
    types = "".join({"system": "S", "row": "r", "end": "E"}[r["type"]] for r in records)
    assert types == "".join("S" + "r" * len(run.rows) + "E" for run in runs)
    rows = [r for r in records if r["type"] == "row"]
    assert all({"n_kv", "pp", "tg", "t_pp", "speed_pp", "t_tg", "speed_tg"} <= set(r) for r in rows)
    assert sum(len(run.rows) for run in runs) == len(rows) == 16 + 16 + 4 + 0 + sum(
        len(r.rows) for r in load_runs([DISCUSSION]))
    headers = [r for r in records if r["type"] == "system"]
    hybrid = next(h for h in headers if h["label"] == "ik-pr838-ling-1t-hybrid-2x3090")
    assert hybrid["options"]["n_ctx"] == 65536 and hybrid["engine"] == "ik_llama.cpp"
    assert hybrid["source_format"] == "sweep-bench-log" and hybrid["source"].endswith("2x3090.log")


def test_labels_per_file_per_run_and_mismatch():
    a, b = LOGS / "ik-pr838-ling-mini-2.0-q4_k_m-standard-routing.md", LOGS / "ik-pr838-ling-1t-hybrid-2x3090.log"
    assert [r.label for r in load_runs([a, b], ["std", "1t"])] == ["std", "1t"]
    with pytest.raises(UsageError, match="--label given 3 times"):
        load_runs([a, b], ["x", "y", "z"])
    per_run = load_runs([DISCUSSION], [f"r{i}" for i in range(18)])
    assert [r.label for r in per_run][:2] == ["r0", "r1"]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


IK_ROW = ('{{"n_kv_max": 2048, "n_batch": 2048, "n_ubatch": 512, "flash_attn": 1, "n_gpu_layers": 99, "n_threads": 8, '
          '"n_threads_batch": 8, "pp": 512, "tg": 128, "n_kv": {n_kv}, "t_pp": 0.5, "speed_pp": {pp}, "t_tg": 2.0, '
          '"speed_tg": 64.0 }}')


def test_ik_jsonl_runs_split_on_restart_and_inside_logs(tmp_path):
    two_runs = "\n".join(IK_ROW.format(n_kv=k, pp=1000 + k) for k in (0, 512, 1024, 0, 512)) + "\n"
    runs = load_runs([write(tmp_path, "ik.jsonl", two_runs)])
    assert [len(r.rows) for r in runs] == [3, 2]
    assert runs[0].header["source_format"] == "ik-jsonl" and runs[0].header["options"]["n_ctx"] == 2048
    assert runs[0].rows[2].speed_pp == 2024.0
    log = "llama_new_context_with_model: fused_moe  = 1\n{%- if tools %} template, not JSON\n" + two_runs
    assert [len(r.rows) for r in load_runs([write(tmp_path, "ik.log", log)])] == [3, 2]


def test_sweepbench_jsonl_vs_engines_repeats_and_truncation(tmp_path):
    system = {"type": "system", "schema": 1, "tool": "sweepbench", "label": "mine", "engines": ["numpy", "numba"]}
    rows = [{"type": "row", "engine": e, "pp": 64, "tg": 16, "n_kv": k, "t_pp": 0.1, "speed_pp": 640.0,
             "t_tg": 0.2, "speed_tg": 80.0, "samples_speed_pp": [600.0, 640.0, 700.0]}
            for k in (0, 64) for e in ("numpy", "numba")]
    text = "\n".join(json.dumps(r) for r in [system, *rows]) + '\n{"type": "row", "engine": "nu'
    runs = load_runs([write(tmp_path, "vs.jsonl", text)])
    assert [r.label for r in runs] == ["mine (numpy)", "mine (numba)"]
    assert [r.engine for r in runs] == ["numpy", "numba"]
    assert runs[0].rows[0].samples("pp") == (600.0, 640.0, 700.0) and runs[0].rows[0].samples("tg") == (80.0,)
    assert all(r.status == "interrupted" for r in runs)  # killed while writing the last line


def test_merge_repeats_pools_samples():
    rows_a = (Row(n_kv=0, pp=512, tg=128, speed_pp=100.0, speed_tg=10.0),)
    rows_b = (Row(n_kv=0, pp=512, tg=128, speed_pp=110.0, speed_tg=12.0),)
    rows_c = (Row(n_kv=0, pp=512, tg=128, speed_pp=130.0, speed_tg=11.0),)
    (merged,) = merge_repeats([Run("x", rows_a), Run("x", rows_b), Run("x", rows_c)])
    row = merged.rows[0]
    assert row.samples("pp") == (100.0, 110.0, 130.0) and row.speed_pp == 110.0
    assert row.t_pp == pytest.approx(512 / 110.0)


LLAMA_BENCH_MD = """\
| model | size | params | backend | threads | test | t/s |
| ------ | ---: | ---: | ------- | ---: | ---: | ---: |
| qwen3moe 30B.A3B IQ4_XS | 15.25 GiB | 30.53 B | CPU | 16 | pp512 | 150.12 ± 1.50 |
| qwen3moe 30B.A3B IQ4_XS | 15.25 GiB | 30.53 B | CPU | 16 | tg128 | 25.10 ± 0.20 |
| qwen3moe 30B.A3B IQ4_XS | 15.25 GiB | 30.53 B | CPU | 16 | pp512 @ d512 | 140.00 ± 2.00 |
| qwen3moe 30B.A3B IQ4_XS | 15.25 GiB | 30.53 B | CPU | 16 | tg128 @ d512 | 24.00 ± 0.30 |
| qwen3moe 30B.A3B IQ4_XS | 15.25 GiB | 30.53 B | CPU | 16 | pp512+tg128 | 60.00 ± 1.00 |
| qwen3moe 30B.A3B IQ4_XS | 15.25 GiB | 30.53 B | CPU | 8 | tg64@pp512 | 20.00 ± 0.10 |

build: 5a32f10 (1234)
"""


def test_llama_bench_markdown_rows_with_depth(tmp_path):
    runs = load_runs([write(tmp_path, "bench.md", LLAMA_BENCH_MD)])
    assert len(runs) == 2  # 16 threads and 8 threads
    full, gp = runs
    assert [(r.n_kv, r.pp, r.tg, r.speed_pp, r.speed_tg) for r in full.rows] == [
        (0, 512, 128, 150.12, 25.10), (512, 512, 128, 140.0, 24.0)]
    assert full.rows[0].extra["stddev_speed_pp"] == 1.5 and full.rows[0].t_pp == pytest.approx(512 / 150.12)
    assert full.model["name"] == "qwen3moe 30B.A3B IQ4_XS" and full.header["options"]["n_threads"] == "16"
    assert [(r.n_kv, r.tg, r.speed_tg, r.speed_pp) for r in gp.rows] == [(512, 64, 20.0, None)]


def test_llama_bench_json_with_samples(tmp_path):
    common = {"model_type": "qwen3moe 30B.A3B Q4_K", "model_filename": "q.gguf", "cpu_info": "EPYC", "gpu_info": "",
              "n_threads": 16, "n_batch": 2048, "n_ubatch": 512, "type_k": "f16", "flash_attn": True}
    tests = [dict(common, n_prompt=512, n_gen=0, n_depth=d, avg_ts=100.0 - d / 100, stddev_ts=1.0,
                  samples_ts=[99.0, 100.0, 101.0]) for d in (0, 4096)]
    tests += [dict(common, n_prompt=0, n_gen=32, n_depth=d, avg_ts=20.0, stddev_ts=0.5, samples_ts=[19.5, 20.5])
              for d in (0, 4096)]
    (run,) = load_runs([write(tmp_path, "bench.json", json.dumps(tests, indent=2))])
    assert [(r.n_kv, r.pp, r.tg) for r in run.rows] == [(0, 512, 32), (4096, 512, 32)]
    assert run.rows[1].speed_pp == pytest.approx(100.0 - 40.96)
    assert run.rows[0].samples("pp") == (99.0, 100.0, 101.0) and run.rows[0].samples("tg") == (19.5, 20.5)
    assert run.header["host"]["cpu"] == "EPYC" and run.model["path"] == "q.gguf"
    jsonl = "\n".join(json.dumps(t) for t in tests)
    (again,) = load_runs([write(tmp_path, "bench.jsonl", jsonl)])
    assert again.rows == run.rows


def test_concatenated_tables_are_repeats_under_one_label(tmp_path):
    # ik's plot script draws error bars from `cat run1.md run2.md > runs.md`; no blank line between the tables.
    one, two = (LOGS / "ik-pr838-ling-mini-2.0-q4_k_m-standard-routing.md").read_text().strip(), \
        (LOGS / "ik-pr838-ling-mini-2.0-q4_k_m-grouped-routing.md").read_text().strip()
    path = write(tmp_path, "cat.md", one + "\n" + two + "\n")
    runs = load_runs([path])
    assert [r.label for r in runs] == ["cat#1", "cat#2"] and [len(r.rows) for r in runs] == [16, 16]
    (merged,) = merge_repeats(load_runs([path], ["both"]))
    assert merged.rows[0].samples("tg") == (runs[0].rows[0].speed_tg, runs[1].rows[0].speed_tg)


def test_sweep_memory_columns(tmp_path):
    text = ("|    PP |     TG |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |    RSS HWM | VRAM delta |\n"
            "|-------|--------|--------|----------|----------|----------|----------|------------|------------|\n"
            "|   512 |    128 |      0 |    0.500 |  1024.00 |    2.000 |    64.00 |     1234.5 |        n/a |\n")
    (run,) = load_runs([write(tmp_path, "mem.md", text)])
    assert run.rows[0].extra["rss_hwm_mib"] == 1234.5 and run.rows[0].extra["vram_delta_mib"] is None


@pytest.mark.parametrize("text, where", [
    (TABLE_HEADER + "\n|---|---|---|---|---|---|---|\n|   512 |    128 |      0 |    0.5 | fast |    2.0 |   64.0 |\n",
     ":3: unparseable sweep-bench row"),
    (TABLE_HEADER + "\n|---|---|---|---|---|---|---|\n|   512 |    128 |      0 |\n", ":3: table row has 3 cells"),
    ('{"type": "system"}\n{"type": "row", "n_kv": 0\n{"type": "end"}\n', ":2: unparseable JSON record"),
    ("just some text\nwithout any table\n", "no llama-sweep-bench table"),
    ("[1, 2, 3]", "JSON array is not llama-bench output"),
])
def test_unparseable_input_is_one_line_naming_file_and_line(tmp_path, text, where):
    path = write(tmp_path, "bad.md", text)
    with pytest.raises(SweepbenchError) as err:
        parse_file(path)
    message = str(err.value)
    assert str(path) in message and where in message and "\n" not in message


def test_cli_convert(tmp_path):
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # keeps `convert` a subcommand in this one-command app
        pass

    convert_command.register(app)
    out = tmp_path / "runs.jsonl"
    crash = LOGS / "ik-pr861-crash-after-header.log"
    ok = CliRunner().invoke(app, ["convert", str(DISCUSSION), str(crash), "-o", str(out)])
    assert ok.exit_code == 0 and "wrote 19 runs" in ok.stderr and "interrupted" in ok.stderr
    assert len(load_runs([out])) == 19
    bad = write(tmp_path, "bad.md", TABLE_HEADER + "\n|---|\n| 1 | 2 | x | 4 | 5 | 6 | 7 |\n")
    failed = CliRunner().invoke(app, ["convert", str(bad), "-o", str(out)])
    assert failed.exit_code == 1 and failed.stderr.startswith("sweepbench: error:") and "bad.md:3" in failed.stderr
    assert failed.stderr.count("\n") == 1


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(SweepbenchError, match="cannot read"):
        parse_file(tmp_path / "nope.md")


def test_cli_convert_bad_inputs_one_line(tmp_path):
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    convert_command.register(app)
    empty, binary = write(tmp_path, "empty.md", ""), tmp_path / "noise.bin"
    binary.write_bytes(bytes(range(256)) * 16)
    out = str(tmp_path / "out.jsonl")
    good = str(LOGS / "ik-pr838-ling-1t-hybrid-2x3090.log")
    for args in ([str(tmp_path / "missing.md"), "-o", out], [str(empty), "-o", out], [str(binary), "-o", out],
                 [str(tmp_path), "-o", out], [good, "-o", str(tmp_path / "no-such-dir" / "x.jsonl")],
                 [good, "-o", out, "-l", "a", "-l", "b"]):
        result = CliRunner().invoke(app, ["convert", *args])
        assert result.exit_code != 0 and result.stderr.startswith("sweepbench: error:"), args
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
