"""``sweepbench sweep-bench`` through the CLI: real engines on a tiny model, fake ones for the rest."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from sweep_fakes import FailingFakeEngine, FakeEngine
from typer.testing import CliRunner

from sweepbench.bench import memory, session
from sweepbench.bench.tokens import window_tokens
from sweepbench.cli import app
from sweepbench.engines import ENGINES
from sweepbench.results.runs import load_runs

SMALL = ["-c", "64", "-ub", "16"]
ROW = re.compile(r"^\|\s+16 \|\s+4 \|\s+(\d+) \|\s+[\d.]+ \|\s+[\d.]+ \|\s+[\d.]+ \|\s+[\d.]+ \|")
HEADER = re.compile(r"^main: n_kv_max = 64, n_batch = 2048, n_ubatch = 16, flash_attn = 1, n_gpu_layers = 0, "
                    r"n_threads = \d+, n_threads_batch = \d+$")


def invoke(*args: str):
    return CliRunner().invoke(app, ["sweep-bench", *args])


@pytest.fixture
def fakes(monkeypatch):
    """Fake engines registered for the CLI; FakeEngine.instances holds those a run created."""
    for name, target in (("fake", "sweep_fakes:FakeEngine"), ("fake2", "sweep_fakes:OtherFakeEngine"),
                         ("failing", "sweep_fakes:FailingFakeEngine")):
        monkeypatch.setitem(ENGINES, name, target)
    FakeEngine.instances.clear()
    return FakeEngine.instances


def table_rows(stdout: str) -> list[int]:
    return [int(m.group(1)) for m in map(ROW.match, stdout.splitlines()) if m]


def assert_only_data_on_stdout(stdout: str) -> None:
    lines = stdout.split("\n")
    assert lines[0] == "" and HEADER.match(lines[1]) and lines[2] == "", lines[:3]
    assert lines[3].startswith("|    PP |") and lines[4].startswith("|-------|")
    assert all(line.startswith("|") for line in lines[3:-1]) and lines[-1] == ""


@pytest.mark.parametrize("engine", ["ik", "reference"])
def test_sweep_of_a_tiny_model_with_a_real_engine(tiny_model, engine):
    result = invoke("-m", str(tiny_model()), *SMALL, "--engine", engine)
    assert result.exit_code == 0, result.stderr
    assert_only_data_on_stdout(result.stdout)
    assert table_rows(result.stdout) == [0, 16, 32, 48]
    assert f"engine '{engine}': loaded in" in result.stderr and "done: 4 rows" in result.stderr


def test_vs_ik_writes_both_engines_ratios_and_the_wheel_note(tiny_model, tmp_path):
    out = tmp_path / "vs.jsonl"
    result = invoke("-m", str(tiny_model()), *SMALL, "--engine", "reference", "--vs", "ik", "--vs-settle", "0",
                    "-r", "2", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    header = result.stdout.split("\n")[3]
    assert header.endswith("|  S_PP ik |  S_TG ik | PP ratio | TG ratio |")
    assert table_rows(result.stdout) == [0, 16, 32, 48]
    assert "generic AVX2 build" in result.stderr and "flatter us" in result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [r["type"] for r in records]
    assert kinds == ["system"] + ["row", "row", "ratio"] * 4 + ["end"]
    system = records[0]
    assert system["engines"] == ["reference", "ik"] and system["options"]["vs"] == "ik"
    assert set(system["engine_info"]) == {"reference", "ik"} and "load_s" in system["engine_info"]["ik"]
    rows = [r for r in records if r["type"] == "row"]
    assert [r["engine"] for r in rows[:4]] == ["reference", "ik", "reference", "ik"]
    ratio = records[3]
    assert ratio["ratio_pp"] == pytest.approx(rows[0]["speed_pp"] / rows[1]["speed_pp"])
    runs = load_runs([out])
    assert [r.engine for r in runs] == ["reference", "ik"] and all(len(r.rows) == 4 for r in runs)
    assert [r.label for r in runs] == ["vs (reference)", "vs (ik)"]  # one run in the file: no "#i"
    assert all(len(row.samples("tg")) == 2 for r in runs for row in r.rows)


def test_llama_cpp_spellings_set_every_option(fakes, tiny_model):
    result = invoke("-m", str(tiny_model()), "--engine", "fake", "-c", "96", "-ub", "32", "-b", "64", "-n", "5",
                    "-t", "2", "-nrep", "3", "--sweep-stride", "2", "-wb", "--seed", "7", "-ctk", "q8_0",
                    "-ctv", "q8_0", "-fa", "off", "-ger", "-rtr", "-no-fmoe", "--sweep-memory",
                    "--output-format", "jsonl", "--label", "mine")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    options = records[0]["options"]
    assert {k: options[k] for k in ("n_ctx", "n_ubatch", "n_batch", "tg", "repetitions", "sweep_stride", "seed",
                                    "warmup_batch", "type_k", "type_v", "flash_attn", "grouped_routing", "repack",
                                    "fused_moe", "memory", "n_threads")} == {
        "n_ctx": 96, "n_ubatch": 32, "n_batch": 64, "tg": 5, "repetitions": 3, "sweep_stride": 2, "seed": 7,
        "warmup_batch": True, "type_k": "q8_0", "type_v": "q8_0", "flash_attn": "off", "grouped_routing": True,
        "repack": True, "fused_moe": False, "memory": True, "n_threads": 2}
    assert records[0]["label"] == "mine"
    (engine,) = fakes
    o = engine.options
    assert (o.n_ctx, o.n_ubatch, o.n_batch, o.n_threads, o.type_k, o.type_v) == (96, 32, 64, 2, "q8_0", "q8_0")
    assert (o.flash_attn, o.grouped_routing, o.repack, o.fused_moe, o.seed) == (False, True, True, False, 7)
    rows = [r for r in records if r["type"] == "row"]
    assert [r["n_kv"] for r in rows] == [0, 64] and all(r["reps"] == 3 and r["tg"] == 5 for r in rows)
    assert all(r["rss_hwm_mib"] == 300.0 and r["vram_delta_mib"] is None for r in rows)
    # the fake engine ignores -rtr: said once on stderr, recorded in the file
    assert result.stderr.count("engine 'fake' ignores -rtr") == 1
    assert records[0]["ignored"]["fake"]["repack"].startswith("fake engines")


@pytest.mark.parametrize("flag, fused", [("-fmoe", True), ("--fused-moe", True), ("--no-fused-moe", False)])
def test_fused_moe_switch_spellings(fakes, tiny_model, flag, fused):
    result = invoke("-m", str(tiny_model()), *SMALL, "--engine", "fake", flag, "--output-format", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])["options"]["fused_moe"] is fused
    assert fakes[-1].options.fused_moe is fused


def test_notes_only_for_ignored_flags_the_user_gave(fakes, tiny_model):
    result = invoke("-m", str(tiny_model()), *SMALL, "--engine", "fake")
    assert result.exit_code == 0 and "ignores" not in result.stderr


def test_csv_output_reads_with_pandas(fakes, tiny_model):
    result = invoke("-m", str(tiny_model()), *SMALL, "--engine", "fake", "--vs", "fake2", "--vs-settle", "0",
                    "--output-format", "csv")
    assert result.exit_code == 0, result.stderr
    import io

    df = pd.read_csv(io.StringIO(result.stdout))
    assert list(df["engine"]) == ["fake", "fake2"] * 4 and list(df["n_kv"]) == [0, 0, 16, 16, 32, 32, 48, 48]
    assert df["ratio_pp"].notna().tolist() == [True, False] * 4


def test_same_seed_same_tokens_other_seed_other_tokens(fakes, tiny_model):
    streams = []
    for seed in ("5", "5", "6"):
        assert invoke("-m", str(tiny_model()), *SMALL, "--engine", "fake", "--seed", seed).exit_code == 0
        engine = fakes[-1]
        streams.append([c[2] for c in engine.calls if c[0] in ("decode", "prefill")])
    assert streams[0] == streams[1] and streams[0] != streams[2]
    first_pp = next(c for c in fakes[0].calls if c[0] == "prefill" and c[1] == 0)
    assert list(first_pp[2]) == window_tokens(5, 0, "pp", 0, 16, 512).tolist()


def test_an_engine_failing_in_a_row_keeps_the_rows_before_it(fakes, tiny_model, tmp_path):
    out = tmp_path / "fail.jsonl"
    result = invoke("-m", str(tiny_model()), *SMALL, "--engine", "failing", "-o", str(out))
    assert result.exit_code == 1
    assert table_rows(result.stdout) == [0, 16]
    assert "error: engine 'fake' failed in the PP of the window at N_KV = 32" in result.stderr
    assert "stopped after 2 of 4 rows" in result.stderr and "Traceback" not in result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["type"] for r in records] == ["system", "row", "row", "end"]
    assert records[-1]["status"] == "error" and "fake failure in prefill" in records[-1]["message"]
    (run,) = load_runs([out])
    assert run.status == "error" and [r.n_kv for r in run.rows] == [0, 16]
    assert all(isinstance(e, FailingFakeEngine) and e.calls[-1] == ("close",) for e in fakes)


def test_a_context_that_cannot_fit_is_refused_before_loading(fakes, tiny_model, monkeypatch):
    monkeypatch.setattr(memory, "meminfo_bytes", lambda key, path="/proc/meminfo": 1_000_000)
    result = invoke("-m", str(tiny_model()), *SMALL, "--engine", "fake", "--vs", "fake2")
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert re.search(r"needs 0\.01 GB of RAM \(fake: weights 0\.00 GB, KV 0\.00 GB \+ fake2: .*KV for -c 64 at "
                     r"f16/f16\) but only 0\.00 GB are available", line), line
    assert all(not e.of("load") for e in fakes)  # refused before loading
    assert invoke("-m", str(tiny_model()), *SMALL, "--engine", "fake", "--no-fit-check").exit_code == 0


def test_default_engine_resolution():
    gpu, no_gpu = (lambda: True), (lambda: False)
    assert session.default_engine({"reference": 1, "ik": 1}, gpu) == "reference"
    assert session.default_engine({"reference": 1, "numba-cpu": 1}, gpu) == "numba-cpu"
    assert session.default_engine({"reference": 1, "numba-cpu": 1, "numba-cuda": 1}, gpu) == "numba-cuda"
    assert session.default_engine({"reference": 1, "numba-cpu": 1, "numba-cuda": 1}, no_gpu) == "numba-cpu"
    assert session.default_engine({"reference": 1, "numba-cuda": 1}, no_gpu) == "reference"


BAD_FLAGS = [
    (["-c", "abc"], "-c 'abc': expected a whole number"),
    (["-c", "100"], "-c 100 is not a multiple of -ub 16"),
    (["-n", "17"], "-n 17 exceeds -ub 16"),
    (["-r", "0"], "-r 0: must be at least 1"),
    (["-nrep", "x"], "-r 'x'"),
    (["--sweep-stride", "0"], "--sweep-stride 0"),
    (["-t", "-1"], "-t -1"),
    (["--seed", "-3"], "--seed -3"),
    (["--delay", "soon"], "--delay 'soon'"),
    (["-ctk", "q4_0"], "-ctk q4_0: not a supported KV-cache type"),
    (["-ctv", "bf16"], "-ctv bf16"),
    (["-fa", "maybe"], "-fa maybe: expected on, off or auto"),
    (["-fa", "-ub", "16"], "bare -fa is -fa on"),
    (["model.gguf"], "unexpected argument 'model.gguf'"),
    (["--output-format", "xml"], "--output-format xml"),
    (["--engine", "nope"], "unknown engine 'nope'"),
    (["--engine", "ik", "--vs", "ik"], "--vs ik: name an engine other than --engine ik"),
    (["--engine", "ik", "-ctv", "q8_0", "-fa", "off"], "quantizes the V cache only with flash attention"),
    (["-o", "{tmp}"], "is a directory"),
    (["-o", "{tmp}/missing/run.jsonl"], "does not exist"),
]


@pytest.mark.parametrize("args, needle", BAD_FLAGS)
def test_bad_flag_values_are_one_line_and_exit_2(tiny_model, tmp_path, args, needle):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = invoke("-m", str(tiny_model()), *SMALL, *args)
    assert result.exit_code == 2, (result.exit_code, result.output)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("sweepbench: error: ") and needle in line, line
    assert result.stdout == "" and not list(tmp_path.glob("*.jsonl"))


def test_a_bad_model_is_one_line_and_exit_1(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_text("hello\n")
    result = invoke("-m", str(bad), *SMALL, "--engine", "ik")
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert str(bad) in line and "not a GGUF file" in line


@pytest.mark.parametrize("flags, recorded, loaded", [((), None, False), (("-rtr",), True, True),
                                                     (("--no-repack",), False, False)])
def test_repack_switch_spellings(fakes, tiny_model, flags, recorded, loaded):
    """-rtr / --no-repack; without either each engine loads with its own default (the fake: off)."""
    result = invoke("-m", str(tiny_model()), *SMALL, "--engine", "fake", *flags, "--output-format", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])["options"]["repack"] is recorded
    assert fakes[-1].options.repack is loaded


def test_repack_defaults_on_for_numba_cpu_only():
    from sweepbench.bench.session import SweepRequest

    assert SweepRequest().engine_options("numba-cpu").repack is True  # its kernels are built for the R8 layouts
    assert SweepRequest().engine_options("ik").repack is False  # as llama-sweep-bench
    assert SweepRequest(repack=False).engine_options("numba-cpu").repack is False
    assert SweepRequest(repack=True).engine_options("ik").repack is True
