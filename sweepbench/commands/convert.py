"""``sweepbench convert INPUT... -o runs.jsonl`` (option parsing only)."""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from sweepbench.commands import user_errors
from sweepbench.results.convert import convert_files

HELP = """Normalise llama-sweep-bench tables and logs (bare, quoted with '> ', several per file), ik_llama.cpp JSONL,
llama-bench markdown/JSON and sweepbench JSONL into sweepbench JSONL: per run a header record, its rows, an end record.
"""


def register(app: typer.Typer) -> None:
    @app.command("convert", help=HELP)
    @user_errors
    def convert(
        inputs: list[Path] = typer.Argument(..., help="Result files in any supported format."),
        output: Path = typer.Option(..., "--output", "-o", help="JSONL file to write."),
        label: list[str] = typer.Option(None, "--label", "-l", help="Label per input file, or per run (repeat)."),
    ) -> None:
        runs = convert_files(inputs, output, label or None)
        for run in runs:
            note = "" if run.status == "complete" else f" ({run.status}: {run.message})"
            print(f"{run.label}: {len(run.rows)} rows{note}", file=sys.stderr)
        print(f"wrote {len(runs)} runs to {output}", file=sys.stderr)
