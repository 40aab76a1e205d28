"""``sweepbench compare BASELINE CANDIDATE``: the CI performance-regression gate (option parsing only)."""
from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from sweepbench import compare as gate
from sweepbench import compare_report
from sweepbench.commands import user_errors
from sweepbench.errors import UsageError

CI_LOG_WIDTH = 160

HELP = """Compare two sweeps row by row (N_KV, PP, TG) and decide whether CANDIDATE is slower than BASELINE.

A row regresses when the ratio of medians is beyond the tolerance AND a Mann-Whitney U test (both sides >= 6 samples)
says the samples differ; with fewer samples the tolerance alone decides (marked low-n). The curve regresses when the
geometric mean of the row ratios is beyond tolerance (and, where every row has >= 6 samples, a stratified U test over
all rows says different) or --consecutive rows in a row regress.

Exit codes: 0 no regression, 1 regression, 2 usage error or unreadable input, 3 not comparable (different model,
engine, system or PP/TG; --force compares anyway).
"""


def register(app: typer.Typer) -> None:
    @app.command("compare", help=HELP)
    @user_errors
    def compare(
        baseline: Path = typer.Argument(..., help="Baseline result (sweepbench JSONL or any input `convert` reads)."),
        candidate: Path = typer.Argument(..., help="Candidate result, same formats."),
        tol_pp: str = typer.Option("5%", "--tol-pp", help="Tolerated S_PP slowdown (5% or 0.05)."),
        tol_tg: str = typer.Option("3%", "--tol-tg", help="Tolerated S_TG slowdown (3% or 0.03)."),
        fail_on: str = typer.Option("curve", "--fail-on", help="Fail on: any (row or curve), curve, none."),
        consecutive: int = typer.Option(2, "--consecutive", "-k", help="Regressed rows in a row that fail the curve."),
        alpha: float = typer.Option(0.01, "--alpha", help="Significance level of the Mann-Whitney U test."),
        force: bool = typer.Option(False, "--force", help="Compare even if model/engine/system/PP/TG differ."),
        summary: Path = typer.Option(None, "--summary", help="Append the markdown here (e.g. $GITHUB_STEP_SUMMARY) "
                                                             "instead of printing it on stdout."),
    ) -> None:
        options = gate.GateOptions(
            tol_pp=gate.parse_tolerance(tol_pp, "--tol-pp"), tol_tg=gate.parse_tolerance(tol_tg, "--tol-tg"),
            alpha=alpha, consecutive=consecutive, fail_on=fail_on, force=force)
        if summary is not None:
            append_summary(summary, "")  # an unwritable --summary fails before the sweep files are read
        comparisons = gate.compare_files(baseline, candidate, options)
        console = Console(stderr=True)
        if not console.is_terminal:
            console.width = CI_LOG_WIDTH  # CI logs are wide; rich assumes 80 columns when not on a terminal
        for c in comparisons:
            if c.comparable:
                console.print(compare_report.rich_table(c))
            else:
                console.print(f"[bold]not comparable:[/] {'; '.join(c.mismatches) or 'no matching rows'}")
        text = compare_report.markdown(comparisons)
        if summary is None:
            sys.stdout.write(text)
        else:
            append_summary(summary, text)
        raise typer.Exit(gate.exit_code(comparisons))


def append_summary(path: Path, text: str) -> None:
    """Append, as $GITHUB_STEP_SUMMARY expects (earlier steps may have written to it)."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise UsageError(f"--summary {path}: cannot write ({e.strerror or e})") from None
