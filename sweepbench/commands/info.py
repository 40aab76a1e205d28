"""``sweepbench info``: what a GGUF model is (architecture, shapes, types, sizes) and what one token costs."""
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from sweepbench.commands import user_errors

_HYPERPARAMS = (
    "n_layer", "n_embd", "n_head", "n_head_kv", "head_dim", "n_rot", "n_vocab", "n_ctx_train", "rope_base",
    "n_expert", "n_expert_used", "n_ff_exp", "n_dense_lead", "n_ff", "n_expert_shared", "n_ff_shexp",
    "n_expert_groups", "n_group_used", "gating", "w_scale",
)


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:,.0f} B"


def _count(n: int) -> str:
    return f"{n / 1e9:.3f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"


def _render(info: dict, console: Console) -> None:
    hp = info["hyperparameters"]
    model = Table(title=f"{info['path']}", show_header=False, title_justify="left")
    model.add_column(style="bold")
    model.add_column()
    model.add_row("architecture", info["arch"])
    model.add_row("name", str(info["name"]))
    model.add_row("file size", f"{_size(info['file_size_bytes'])} ({info['file_size_bytes']:,} bytes, "
                  f"{len(info['files'])} file{'s' if len(info['files']) > 1 else ''})")
    for key in _HYPERPARAMS:
        if hp[key] or key in ("n_dense_lead",):
            model.add_row(key, str(hp[key]))
    model.add_row("params total", _count(info["params_total"]))
    model.add_row("params active / token", _count(info["params_active"]))
    model.add_row("weights read / token", f"{_size(info['weight_bytes_per_token'])} "
                  f"(experts {_size(info['expert_bytes_per_token'])}, head {_size(info['head_bytes_per_token'])})")
    for kv_type, n in info["kv_bytes_per_token"].items():
        model.add_row(f"KV cache / token ({kv_type})", f"{n / 1024:,.1f} KiB")
    console.print(model)

    types = Table(title=f"{info['n_tensors']} tensors", title_justify="left")
    types.add_column("type")
    types.add_column("tensors", justify="right")
    types.add_column("bytes", justify="right")
    types.add_column("share", justify="right")
    total = sum(t["bytes"] for t in info["tensor_types"].values())
    for name, t in info["tensor_types"].items():
        types.add_row(name, str(t["count"]), _size(t["bytes"]), f"{100 * t['bytes'] / total:.1f}%")
    console.print(types)


def register(app: typer.Typer) -> None:
    @app.command("info")
    @user_errors
    def info(
        model: Path = typer.Argument(..., help="GGUF model (any part of a split model)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    ) -> None:
        """Show a model's architecture, hyper-parameters, tensor types, parameter counts and per-token costs."""
        from sweepbench.model_stats import model_info

        data = model_info(model)
        if as_json:
            typer.echo(json.dumps(data, indent=2))
        else:
            _render(data, Console(width=max(100, Console().width)))
