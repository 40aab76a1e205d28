"""``sweepbench plot RUN...``: S_PP and S_TG versus N_KV figures (option parsing only)."""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from sweepbench.commands import user_errors
from sweepbench.errors import UsageError
from sweepbench.results.runs import load_runs
from sweepbench.results.summary import summary_markdown

IMAGE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")  # an -o ending so is a figure's name, not a directory

HELP = """Plot S_PP and S_TG versus N_KV, one line per run (runs sharing a label are repetitions: error bars).

Reads sweepbench JSONL and everything `convert` reads. Writes performance_comparison_pp.<fmt> and
performance_comparison_tg.<fmt> (the names ik_llama.cpp's sweep-bench-plot.py uses) into --output-dir.
"""


def register(app: typer.Typer) -> None:
    @app.command("plot", help=HELP)
    @user_errors
    def plot(
        runs: list[Path] = typer.Argument(..., help="Result files in any supported format."),
        label: list[str] = typer.Option(None, "--label", "-l", help="Label per input file, or per run (repeat)."),
        baseline: str = typer.Option(None, "--baseline", help="Label of the run to add a ratio panel against."),
        output_dir: Path = typer.Option(Path("."), "--output-dir", "-o", help="Directory for the figures."),
        fmt: str = typer.Option("png", "--format", help="png or svg."),
        log_y: bool = typer.Option(False, "--log-y", help="Logarithmic tokens/s axis."),
        table: bool = typer.Option(False, "--table", help="Also print a markdown summary on stdout."),
    ) -> None:
        if output_dir.suffix.lower() in IMAGE_SUFFIXES and not output_dir.is_dir():
            raise UsageError(f"-o {output_dir}: names the directory for performance_comparison_pp.{fmt} and "
                             f"performance_comparison_tg.{fmt}, not a figure file")
        from plots.sweep_plot import write_plots  # matplotlib takes 0.3 s to import: only for this command
        loaded = load_runs(runs, label or None)
        for path in write_plots(loaded, output_dir, fmt, baseline, log_y):
            print(f"wrote {path}", file=sys.stderr)
        if table:
            sys.stdout.write(summary_markdown(loaded, baseline))
