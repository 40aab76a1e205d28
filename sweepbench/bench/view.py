"""What a sweep shows on stderr while it runs; stdout carries data only.

On a terminal: a rich live view (progress with ETA and, when stdout is redirected, the growing table with each
row's spread and roofline figures). When stdout is the same terminal the table is already there, so the view
shows the progress only and steps aside while a data line is written, which keeps the two from overwriting each
other. Anywhere else (CI logs, pipes): one plain line per row.
"""
from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table


def _spread(row: dict, metric: str) -> str:
    """Half the range of the repetitions' speeds, relative to the median: '±1.2%' (empty for one repetition)."""
    if row["reps"] < 2:
        return ""
    half = (row[f"speed_{metric}_max"] - row[f"speed_{metric}_min"]) / 2
    return f"±{100 * half / row[f'speed_{metric}']:.1f}%"


class SweepView:
    def __init__(self, console: Console, n_rows: int, engines: list[str], stdout: TextIO | None = None):
        self.console, self.engines, self.n_rows = console, engines, n_rows
        self.stdout = stdout or sys.stdout
        self.interactive = console.is_terminal and not console.is_dumb_terminal
        self.stdout_is_terminal = _isatty(self.stdout)
        self.live: Live | None = None
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)
        self.task = self.progress.add_task("starting", total=max(1, n_rows * len(engines)))
        self.table = self._new_table()

    def _new_table(self) -> Table:
        table = Table(title="sweep: median of the repetitions, ± half their range", title_justify="left")
        for title in ("N_KV", *(["engine"] if len(self.engines) > 1 else []), "S_PP t/s", "±", "PP GFLOP/s",
                      "S_TG t/s", "±", "TG GB/s", *(["PP ratio", "TG ratio"] if len(self.engines) > 1 else [])):
            table.add_column(title, justify="left" if title == "engine" else "right")
        return table

    # ---- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.interactive and self.live is None:
            body = self.progress if self.stdout_is_terminal else Group(self.table, self.progress)
            self.live = Live(body, console=self.console, transient=True, refresh_per_second=4,
                             redirect_stdout=False, redirect_stderr=False)
            self.live.start()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
            if not self.stdout_is_terminal and self.table.row_count:
                self.console.print(self.table)  # the live view was transient: leave the table on the terminal

    # ---- output ------------------------------------------------------------------------------------------------
    def note(self, text: str) -> None:
        self.console.print(f"sweepbench: {text}", highlight=False, markup=False, soft_wrap=True)

    def data(self, text: str) -> None:
        """A piece of the result on stdout, flushed now."""
        paused = self.live is not None and self.stdout_is_terminal
        if paused:
            self.live.stop()
        self.stdout.write(text)
        self.stdout.flush()
        if paused:
            self.live.start()

    def phase(self, engine: str, window, phase: str) -> None:
        if self.live is not None:
            self.progress.update(self.task, description=f"N_KV {window.n_kv} · {engine} · {phase}")

    def row(self, number: int, rows: list[dict], ratio: dict | None) -> None:
        self.progress.advance(self.task, len(rows))
        if self.live is None:
            for r in rows:
                pp, tg = (f" {_spread(r, m)}" if r["reps"] > 1 else "" for m in ("pp", "tg"))
                self.note(f"row {number + 1}/{self.n_rows} N_KV {r['n_kv']} {r['engine']}: "
                          f"S_PP {r['speed_pp']:.2f} t/s{pp} {r['pp_gflops']:.1f} GFLOP/s | "
                          f"S_TG {r['speed_tg']:.2f} t/s{tg} {r['tg_gbps']:.2f} GB/s")
            if ratio:
                self.note(f"row {number + 1}/{self.n_rows} N_KV {ratio['n_kv']} {ratio['engine']} / {ratio['peer']}: "
                          f"PP {ratio['ratio_pp']:.3f}x, TG {ratio['ratio_tg']:.3f}x")
            return
        for i, r in enumerate(rows):
            cells = [str(r["n_kv"]), *([r["engine"]] if len(self.engines) > 1 else []),
                     f"{r['speed_pp']:.2f}", _spread(r, "pp"), f"{r['pp_gflops']:.1f}",
                     f"{r['speed_tg']:.2f}", _spread(r, "tg"), f"{r['tg_gbps']:.2f}"]
            if len(self.engines) > 1:
                cells += [f"{ratio['ratio_pp']:.3f}", f"{ratio['ratio_tg']:.3f}"] if i == 0 and ratio else ["", ""]
            self.table.add_row(*cells)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
