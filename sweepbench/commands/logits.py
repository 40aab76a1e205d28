"""``sweepbench logits``: float32 logits of every position of a token sequence, saved as a .npy file."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sweepbench.commands import parse_token_ids, user_errors
from sweepbench.errors import UsageError


def register(app: typer.Typer) -> None:
    @app.command("logits")
    @user_errors
    def logits(
        model: Path = typer.Option(..., "-m", "--model", help="GGUF model file."),
        output: Path = typer.Option(
            ..., "-o", "--output", help="Where to write the \\[n_tokens, n_vocab] float32 .npy."
        ),
        tokens: Optional[str] = typer.Option(None, "--tokens", help="Comma-separated token ids, e.g. 1,2,3."),
        random: Optional[int] = typer.Option(None, "--random", help="Use N random token ids instead of --tokens."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random token ids."),
        grouped_routing: bool = typer.Option(False, "--grouped-routing", "-ger", help="Grouped expert routing (bailingmoe2)."),
        engine: str = typer.Option("reference", "--engine", help="Engine that computes the logits."),
        cache_type_k: str = typer.Option("f16", "-ctk", "--cache-type-k", help="KV-cache K type: f16 or q8_0."),
        cache_type_v: str = typer.Option("f16", "-ctv", "--cache-type-v", help="KV-cache V type: f16 or q8_0."),
        threads: int = typer.Option(0, "-t", "--threads", help="Threads.", show_default="all cores"),
    ) -> None:
        """Run the tokens through the model in one prefill and save the logits of every position."""
        from sweepbench.logits import compute_logits, save_logits
        from sweepbench.models.tensors import open_model
        from sweepbench.verify import random_tokens

        if (tokens is None) == (random is None):
            raise UsageError("give exactly one of --tokens or --random N")
        if random is not None and random < 1:
            raise UsageError(f"--random {random}: need at least 1 token")
        if output.is_dir() or not output.parent.is_dir():
            raise UsageError(f"-o {output}: not a file in an existing directory")
        ids = parse_token_ids(tokens) if tokens is not None else random_tokens(random, open_model(model)[1].n_vocab, seed)
        values = compute_logits(model, ids, engine, grouped_routing=grouped_routing, type_k=cache_type_k,
                                type_v=cache_type_v, n_threads=threads)
        save_logits(output, values)
        typer.echo(f"wrote {output}: logits [{values.shape[0]}, {values.shape[1]}] float32 ({engine} engine)")
