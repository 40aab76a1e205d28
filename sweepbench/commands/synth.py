"""``sweepbench synth``: write a synthetic GGUF model (real names, shapes and quant types; random weights)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from sweepbench.commands import user_errors
from sweepbench.presets import PRESETS


def register(app: typer.Typer) -> None:
    @app.command("synth")
    @user_errors
    def synth(
        preset: str = typer.Argument(..., help=f"Model shape: {', '.join(PRESETS)}."),
        output: Path = typer.Option(..., "-o", "--output", help="GGUF file to write (replaced if it exists)."),
        arch: Optional[str] = typer.Option(
            None, "--arch", help="qwen3moe or bailingmoe2 (presets tiny and small have both; default qwen3moe)."
        ),
        expert_type: Optional[str] = typer.Option(
            None, "--expert-type", help="Quant type of routed experts.",
            show_default="Q4_K for full-size presets, else Q8_0"
        ),
        dense_type: Optional[str] = typer.Option(
            None, "--dense-type", help="Quant type of attention, embeddings, head, dense and shared FFN.",
            show_default="Q8_0"
        ),
        seed: int = typer.Option(0, "--seed", help="Weights depend only on preset, types and seed."),
        threads: Optional[int] = typer.Option(None, "--threads", "-t", help="Generator threads.",
                                               show_default="all cores"),
        split: int = typer.Option(1, "--split", help="Write N parts NAME-0000i-of-0000N.gguf, as llama-gguf-split does."),
    ) -> None:
        """Write a synthetic MoE model with the tensors, metadata and quant types of a real one."""
        from sweepbench.synth import write_synthetic_model

        console = Console(stderr=True)
        with Progress(
            "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), console=console, transient=True,
        ) as bar:
            task = bar.add_task(f"writing {output.name}", total=None)
            result = write_synthetic_model(
                output, preset, arch, expert_type, dense_type, seed=seed, threads=threads,
                on_start=lambda total: bar.update(task, total=total),
                progress=lambda n: bar.advance(task, n), n_splits=split,
            )
        speed = result.n_bytes / 1e6 / max(result.seconds, 1e-9)
        typer.echo(
            f"wrote {result.path}{f' (+{split - 1} more parts)' if split > 1 else ''} "
            f"({result.n_bytes / 1e6:,.1f} MB, {result.n_tensors} tensors) "
            f"in {result.seconds:.1f} s ({speed:,.0f} MB/s)"
        )
