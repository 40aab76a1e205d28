"""``sweepbench verify``: do our engine's logits match ik_llama.cpp's? Prints our figures beside ik's self-noise,
the tier's thresholds and PASS/FAIL; exit 0 on pass, 1 on fail."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from sweepbench.commands import parse_token_ids, user_errors
from sweepbench.errors import UsageError

_METRICS = (("top1_agreement", "top-1", "{:.1%}"), ("max_abs_diff", "max |Δ|", "{:.3g}"),
            ("max_rel", "max rel", "{:.3%}"), ("mean_kl", "mean KL", "{:.3g}"), ("max_kl", "max KL", "{:.3g}"))


def _render(result, console: Console) -> None:
    """One row per comparison (ours, then ik against itself), then the tier's thresholds and verdicts."""
    title = (f"{result.engine} vs ik_llama.cpp, {Path(result.model).name}: {result.prompt_len}-token prompt + "
             f"{result.n_tokens - result.prompt_len} decode steps")
    table = Table(title=title, title_justify="left", caption=_CAPTION, caption_justify="left")
    table.add_column("logits compared")
    for _, label, _ in _METRICS:
        table.add_column(label, justify="right")
    row = lambda figures: [fmt.format(figures[key]) for key, _, fmt in _METRICS]  # noqa: E731
    table.add_row(f"{result.engine} vs ik", *row(result.ours), style="bold")
    for name, figures in result.ik_noise.items():
        table.add_row(f"ik vs ik, {name}", *row(figures), style="dim")
    checks = {c["metric"]: c for c in result.checks}
    limits, verdicts = [], []
    for key, _, fmt in _METRICS:
        c = checks.get(key)
        limits.append(f"{c['op']} {fmt.format(c['limit'])}" if c else "")
        verdicts.append(("[green]PASS[/]" if c["passed"] else "[red]FAIL[/]") if c else "")
    table.add_section()
    table.add_row(f"threshold ({result.tier.name})", *limits)
    table.add_row(f"{result.engine}", *verdicts)
    console.print(table)
    verdict = "[green]PASS[/]" if result.passed else "[red]FAIL[/]"
    console.print(f"{verdict}: {result.engine} matches ik_llama.cpp within the {result.tier.name} tier"
                  if result.passed else f"{verdict}: {result.engine} differs from ik_llama.cpp beyond the "
                  f"{result.tier.name} tier")


_CAPTION = ("max rel = max |Δlogit| / max |ik logit| per position; KL(ik ‖ ours) of the softmax, float64. "
            "ik vs ik rows show ik's own noise on the same tokens.")


def register(app: typer.Typer) -> None:
    @app.command("verify")
    @user_errors
    def verify(
        model: Path = typer.Option(..., "-m", "--model", help="GGUF model file."),
        tokens: Optional[str] = typer.Option(None, "--tokens", help="Comma-separated token ids, e.g. 1,2,3."),
        random: int = typer.Option(24, "--random", help="Number of random token ids (used when --tokens is not given)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random token ids."),
        prompt_len: Optional[int] = typer.Option(
            None, "--prompt-len", help="Tokens in the prefill; the rest are decoded one by one.",
            show_default="2/3 of the tokens"
        ),
        grouped_routing: bool = typer.Option(False, "--grouped-routing", "-ger", help="Grouped expert routing (bailingmoe2)."),
        engine: str = typer.Option("reference", "--engine", help="Engine to check against ik_llama.cpp."),
        cache_type_k: str = typer.Option("f16", "-ctk", "--cache-type-k", help="KV-cache K type: f16 or q8_0."),
        cache_type_v: str = typer.Option("f16", "-ctv", "--cache-type-v", help="KV-cache V type: f16 or q8_0."),
        threads: int = typer.Option(0, "-t", "--threads", help="Threads for both engines.",
                                   show_default="all cores"),
        noise: bool = typer.Option(True, "--noise/--no-noise", help="Also measure ik's self-noise (3 more ik runs)."),
        json_path: Optional[Path] = typer.Option(None, "--json", help="Also write every figure (per position) here."),
    ) -> None:
        """Compare an engine's logits with ik_llama.cpp's on the same tokens (prefill, then decode steps)."""
        from sweepbench.models.tensors import open_model
        from sweepbench.verify import random_tokens, run_verify

        if random < 2:
            raise UsageError(f"--random {random}: need at least 2 tokens")
        if tokens is not None:
            ids = parse_token_ids(tokens)
        else:
            ids = random_tokens(random, open_model(model)[1].n_vocab, seed)
        result = run_verify(
            model, ids, engine, prompt_len=prompt_len, grouped_routing=grouped_routing, type_k=cache_type_k,
            type_v=cache_type_v, n_threads=threads, noise=noise,
        )
        _render(result, Console())
        if json_path is not None:
            json_path.write_text(json.dumps(result.to_dict(), indent=1, default=str) + "\n")
        if not result.passed:
            raise typer.Exit(1)
