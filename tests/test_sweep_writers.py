"""The md / JSONL / CSV writers (sweepbench.results.writers) against golden files, and their readers.

Golden files live in tests/data/sweep-golden; after a deliberate format change rewrite them with
``SWEEPBENCH_REGEN_GOLDEN=1 python -m pytest tests/test_sweep_writers.py`` and review the diff.
"""
from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from plots.sweep_plot import sweep_figure
from sweepbench.bench.loop import Measurement
from sweepbench.bench.rows import EngineFacts, Roofline, ratio_record, row_record
from sweepbench.compare import GateOptions, compare_files
from sweepbench.engines.base import MemoryUse
from sweepbench.model_stats import ModelStats
from sweepbench.results.runs import load_runs
from sweepbench.results.writers import CsvSink, JsonlSink, MarkdownSink, MarkdownTable

GOLDEN = Path(__file__).parent / "data" / "sweep-golden"
STATS = ModelStats(n_layer=2, n_head=4, head_dim=64, n_embd_kv=128, total_params=3_806_720,
                   active_params=1_447_424, expert_params=3_145_728, body_matmul_params=1_179_648,
                   head_params=131_072, weight_bytes_per_token=1_415_440, expert_bytes_per_token=835_584,
                   head_bytes=139_264)
ROOF = Roofline(STATS, "f16", "f16")
SYSTEM = {"type": "system", "schema": 1, "tool": "sweepbench", "version": "0.1.0", "engine": "ours",
          "engines": ["ours"], "host": {"cpu": "test-cpu", "gpu": None}, "options": {"n_ctx": 64, "n_ubatch": 16},
          "model": {"name": "golden", "arch": "qwen3moe", "header_sha256": "ab" * 32}}
END = {"type": "end", "status": "complete", "message": "", "rows": 4, "rows_planned": 4}


def facts(name: str) -> EngineFacts:
    return EngineFacts(name, 64, 2048, 16, 1, 0, 2, 2)


def measurement(engine: str, n_kv: int, scale: float = 1.0, memory: bool = False) -> Measurement:
    """Three repetitions with known seconds: TG slows down with depth, PP too."""
    t_pp = tuple(scale * (0.040 + n_kv * 1e-4) * f for f in (1.0, 1.05, 0.97))
    t_tg = tuple(scale * (0.080 + n_kv * 2e-4) * f for f in (1.02, 1.0, 1.1))
    mem = MemoryUse(rss_hwm_bytes=(200 + n_kv) * 2**20) if memory else None
    return Measurement(engine, n_kv // 16, n_kv, 16, 4, t_pp, t_tg, mem)


def records(vs: bool = False, memory: bool = False) -> list[tuple[list[dict], dict | None]]:
    out = []
    for n_kv in (0, 16, 32, 48):
        rows = [row_record(measurement("ours", n_kv, memory=memory), facts("ours"), ROOF, memory)]
        if vs:
            rows.append(row_record(measurement("ik", n_kv, 1.25, memory), facts("ik"), ROOF, memory))
        out.append((rows, ratio_record(rows[0], rows[1]) if vs else None))
    return out


def render(sink_class, *args, vs=False, memory=False, **kwargs) -> str:
    out = io.StringIO()
    sink = sink_class(out.write, *args, **kwargs)
    system = {**SYSTEM, "engines": ["ours", "ik"] if vs else ["ours"]}
    sink.start(system)
    for rows, ratio in records(vs, memory):
        sink.rows(rows, ratio)
    sink.end(END)
    return out.getvalue()


PARAMS = facts("ours").params()
CASES = {  # golden file -> how it is written
    "plain.md": lambda: render(MarkdownSink, PARAMS),
    "memory-vs.md": lambda: render(MarkdownSink, PARAMS, True, "ik", vs=True, memory=True),
    "plain.jsonl": lambda: render(JsonlSink),
    "vs.jsonl": lambda: render(JsonlSink, vs=True),
    "plain.csv": lambda: render(CsvSink),
    "memory-vs.csv": lambda: render(CsvSink, True, True, vs=True, memory=True),
}


def golden(name: str) -> str:
    text = CASES[name]()
    path = GOLDEN / name
    if os.environ.get("SWEEPBENCH_REGEN_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return text


@pytest.mark.parametrize("name", sorted(CASES))
def test_writers_match_the_golden_files(name):
    assert golden(name) == (GOLDEN / name).read_text()


IK_HEADER = "|    PP |     TG |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |"
IK_RULE = "|-------|--------|--------|----------|----------|----------|----------|"


def test_markdown_is_llama_sweep_bench_byte_for_byte():
    lines = golden("plain.md").split("\n")
    assert lines[:5] == ["", "main: n_kv_max = 64, n_batch = 2048, n_ubatch = 16, flash_attn = 1, "
                             "n_gpu_layers = 0, n_threads = 2, n_threads_batch = 2", "", IK_HEADER, IK_RULE]
    row = records()[0][0][0]
    expected = "|%6d | %6d | %6d | %8.3f | %8.2f | %8.3f | %8.2f |" % (
        16, 4, 0, row["t_pp"], row["speed_pp"], row["t_tg"], row["speed_tg"])  # ik's printf format
    assert lines[5] == expected and len(lines[5]) == len(IK_HEADER)
    memory = MarkdownTable(memory=True).header().split("\n")
    assert memory[0] == IK_HEADER + "    RSS HWM | VRAM delta |"
    assert memory[1] == IK_RULE + "------------|------------|"


def ik_plot_script_read(text: str) -> pd.DataFrame:
    """What examples/sweep-bench/sweep-bench-plot.py does with a table file (ik_llama_cpp_spec.md §1.7)."""
    table = "\n".join(line for line in text.splitlines() if line.startswith("|"))
    df = pd.read_csv(io.StringIO(table), sep=r"\s*\|\s*", engine="python", header=0, skiprows=[1])
    df = df.iloc[:, 1:-1]  # the empty first and last columns around the outer pipes
    return df.rename(columns={"N_KV": "n_kv", "S_PP t/s": "speed_pp", "S_TG t/s": "speed_tg"})


@pytest.mark.parametrize("name", ["plain.md", "memory-vs.md"])
def test_ik_plot_script_reads_our_tables(name):
    df = ik_plot_script_read(golden(name))
    ours = [rows[0] for rows, _ in records(vs="vs" in name, memory="memory" in name)]
    assert list(df["n_kv"]) == [r["n_kv"] for r in ours]
    assert list(df["speed_pp"]) == [round(r["speed_pp"], 2) for r in ours]
    assert list(df["speed_tg"]) == [round(r["speed_tg"], 2) for r in ours]
    assert df.groupby("n_kv").mean(numeric_only=True).shape[0] == 4  # the script's grouping step


def test_our_parser_reads_our_tables_back(tmp_path):
    path = tmp_path / "run.md"
    path.write_text(golden("memory-vs.md"))
    (run,) = load_runs([path])
    ours = [rows for rows, _ in records(vs=True, memory=True)]
    assert [r.n_kv for r in run.rows] == [0, 16, 32, 48] and run.status == "complete"
    assert run.header["options"]["n_ctx"] == 64 and run.header["options"]["n_threads"] == 2
    for row, (mine, peer) in zip(run.rows, ours):
        assert row.speed_tg == round(mine["speed_tg"], 2) and row.t_pp == round(mine["t_pp"], 3)
        assert row.extra["rss_hwm_mib"] == round(mine["rss_hwm_mib"], 1) and row.extra["vram_delta_mib"] is None
        assert row.extra["s_pp_ik"] == round(peer["speed_pp"], 2)
        assert row.extra["pp_ratio"] == round(mine["speed_pp"] / peer["speed_pp"], 3)


def test_jsonl_rows_carry_iks_keys_samples_medians_and_roofline():
    lines = [json.loads(x) for x in golden("plain.jsonl").splitlines()]
    assert [x["type"] for x in lines] == ["system", "row", "row", "row", "row", "end"]
    row = lines[2]
    ik_keys = ["n_kv_max", "n_batch", "n_ubatch", "flash_attn", "n_gpu_layers", "n_threads", "n_threads_batch",
               "pp", "tg", "n_kv", "t_pp", "speed_pp", "t_tg", "speed_tg"]
    assert list(row)[2:16] == ik_keys  # after "type" and "engine", in ik's order
    m = measurement("ours", 16)
    assert row["samples_t_pp"] == pytest.approx(list(m.t_pp)) and row["reps"] == 3
    assert row["t_pp"] == pytest.approx(sorted(m.t_pp)[1]) and row["speed_pp"] == pytest.approx(16 / row["t_pp"])
    assert row["samples_speed_tg"] == pytest.approx([4 / t for t in m.t_tg])
    assert row["speed_tg_min"] == pytest.approx(4 / max(m.t_tg)) and row["speed_tg_max"] == pytest.approx(4 / min(m.t_tg))
    # roofline: TG reads the weights plus the K/V of 16 + (4-1)/2 + 1 positions per token (f16: 2 x 2 x 2 x 128 B)
    kv_per_token = 2 * 128 * (2 + 2)
    assert row["tg_bytes_per_token"] == pytest.approx(1_415_440 + kv_per_token * (16 + 1.5 + 1))
    assert row["tg_gbps"] == pytest.approx(row["tg_bytes_per_token"] * row["speed_tg"] / 1e9)
    attended = 16 * 16 + 16 * 17 // 2
    flops = 2.0 * (1_179_648 * 16 + 131_072) + 4 * 4 * 64 * attended * 2
    assert row["pp_flops"] == pytest.approx(flops) and row["pp_gflops"] == pytest.approx(flops / row["t_pp"] / 1e9)


def test_jsonl_round_trip_through_load_runs_plot_and_compare(tmp_path):
    path = tmp_path / "vs.jsonl"
    path.write_text(golden("vs.jsonl"))
    runs = load_runs([path])
    assert [r.engine for r in runs] == ["ours", "ik"] and all(r.status == "complete" for r in runs)
    assert runs[0].rows[1].samples("pp") == pytest.approx(tuple(16 / t for t in measurement("ours", 16).t_pp))
    assert runs[0].model["header_sha256"] == "ab" * 32
    for metric in ("pp", "tg"):
        assert len(sweep_figure(runs, metric).axes[0].containers) == 2
    (c_ours, c_ik) = compare_files(path, path, GateOptions())
    assert c_ours.comparable and all(r.ratio == pytest.approx(1.0) for r in c_ours.results)
    ratios = [r for r in map(json.loads, path.read_text().splitlines()) if r["type"] == "ratio"]
    assert len(ratios) == 4 and all(r["ratio_tg"] == pytest.approx(1.25) for r in ratios)


def test_csv_reads_back_with_pandas():
    df = pd.read_csv(io.StringIO(golden("memory-vs.csv")))
    assert list(df["engine"]) == ["ours", "ik"] * 4 and list(df["n_kv"]) == [0, 0, 16, 16, 32, 32, 48, 48]
    assert df.loc[0, "ratio_tg"] == pytest.approx(1.25) and pd.isna(df.loc[1, "ratio_tg"])
    assert df["vram_delta_mib"].isna().all() and df.loc[2, "rss_hwm_mib"] == pytest.approx(216.0)
    assert re.fullmatch(r"engine,n_kv_max,.*,speed_tg,rss_hwm_mib,vram_delta_mib,window,.*,ratio_pp,ratio_tg",
                        golden("memory-vs.csv").splitlines()[0])


def test_jsonl_writes_figures_that_are_not_finite_as_null():
    from sweepbench.results.writers import jsonl_line

    line = jsonl_line({"type": "row", "speed_tg": float("inf"), "samples_speed_tg": [float("nan"), 2.0],
                       "nested": {"x": float("-inf")}})
    assert json.loads(line) == {"type": "row", "speed_tg": None, "samples_speed_tg": [None, 2.0],
                                "nested": {"x": None}}
