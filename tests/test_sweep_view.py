"""The stderr view (sweepbench.bench.view): plain lines off a terminal, a live table on one."""
from __future__ import annotations

import io

from rich.console import Console

from sweepbench.bench.plan import Window
from sweepbench.bench.view import SweepView


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def row(engine: str, n_kv: int, reps: int = 3) -> dict:
    return {"engine": engine, "n_kv": n_kv, "reps": reps, "speed_pp": 100.0, "speed_pp_min": 95.0,
            "speed_pp_max": 105.0, "pp_gflops": 12.5, "speed_tg": 20.0, "speed_tg_min": 19.0, "speed_tg_max": 20.2,
            "tg_gbps": 16.25}


RATIO = {"n_kv": 0, "engine": "ours", "peer": "ik", "ratio_pp": 1.25, "ratio_tg": 0.8}


def test_plain_lines_when_stderr_is_not_a_terminal():
    err, out = io.StringIO(), io.StringIO()
    view = SweepView(Console(file=err, width=80), 2, ["ours", "ik"], out)
    view.start()
    view.phase("ours", Window(0, 0, True), "TG")
    view.data("| table row |\n")
    view.row(0, [row("ours", 0), row("ik", 0, reps=1)], RATIO)
    view.close()
    lines = err.getvalue().splitlines()  # never wrapped, whatever the width
    assert lines == [
        "sweepbench: row 1/2 N_KV 0 ours: S_PP 100.00 t/s ±5.0% 12.5 GFLOP/s | S_TG 20.00 t/s ±3.0% 16.25 GB/s",
        "sweepbench: row 1/2 N_KV 0 ik: S_PP 100.00 t/s 12.5 GFLOP/s | S_TG 20.00 t/s 16.25 GB/s",
        "sweepbench: row 1/2 N_KV 0 ours / ik: PP 1.250x, TG 0.800x"]
    assert out.getvalue() == "| table row |\n"


def test_live_view_leaves_the_table_on_the_terminal_when_stdout_is_redirected():
    err, out = io.StringIO(), io.StringIO()
    view = SweepView(Console(file=err, width=160, force_terminal=True), 1, ["ours"], out)
    view.start()
    assert view.live is not None
    view.data("| row |\n")
    view.row(0, [row("ours", 512)], None)
    view.close()
    text = err.getvalue()
    assert "median of the repetitions" in text and "512" in text and "±5.0%" in text
    assert out.getvalue() == "| row |\n"  # data never goes through the live display


def test_live_view_steps_aside_for_data_on_the_same_terminal():
    err, out = io.StringIO(), Tty()
    view = SweepView(Console(file=err, width=160, force_terminal=True), 1, ["ours"], out)
    view.start()
    live = view.live
    view.data("| row |\n")
    assert view.live is live and live.is_started  # resumed after the write
    view.row(0, [row("ours", 0)], None)
    view.close()
    assert out.getvalue() == "| row |\n"
    assert "median of the repetitions" not in err.getvalue()  # the table is on stdout already
