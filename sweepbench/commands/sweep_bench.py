"""``sweepbench sweep-bench``: option parsing only; the sweep itself is ``sweepbench.bench.session``.

Numbers are taken as text and converted here, so that a bad value is one line and exit code 2 (Click's own
conversion errors print a usage block). Every llama.cpp spelling is an alias of the long option.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sweepbench.commands import user_errors
from sweepbench.errors import UsageError

def _paragraphs(*paragraphs: str) -> str:
    """Help text: Typer rewraps each paragraph; blank lines separate them."""
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


HELP = _paragraphs(
    """Measure PP and TG speed at growing KV-cache depth, the way ik_llama.cpp's llama-sweep-bench does.""",
    """Windows start at N_KV = 0, ub, 2ub, ... below -c. In each: TG first (-n single-token decodes at N_KV,
    N_KV+1, ..., then the cache is rolled back to N_KV), then PP (one ubatch of -ub tokens at N_KV.., kept for the
    next window). T_PP and T_TG are wall seconds with the device synchronised; S = tokens / seconds.""",
    """Differences from llama-sweep-bench, on purpose: -c defaults to 2048 (not the model's training context) and
    must be a multiple of -ub (ik runs the last PP past the cache and fails); -n may not exceed -ub; -c is not
    padded. Repetitions (-r) apply to EVERY row, each timed on its own; a row shows S = tokens / median seconds,
    the JSONL keeps every sample and their range. Tokens are uniform over the vocabulary from an RNG seeded per
    --seed, window, phase and repetition, so two engines see the same tokens.""",
    """stdout carries data only: the parameter line and ik's markdown table, row by row (or --output-format jsonl
    or csv); progress and notes go to stderr. -o FILE writes our JSONL (a system record, one record per row and
    engine, an end record), flushed per row: an interrupted run keeps every finished row.""",
    """Exit codes: 0 done; 1 error (an engine failed in a row: the earlier rows stand); 2 bad option; 130 Ctrl-C;
    141 stdout closed; 143 SIGTERM.""",
)

EPILOG = _paragraphs(
    "Examples:",
    "sweepbench sweep-bench   (built-in model, default engine, -c 2048 -ub 512 -n 128)",
    "sweepbench sweep-bench -m model.gguf -c 8192 -ub 512 -r 6 -o run.jsonl",
    "sweepbench sweep-bench -m model.gguf -c 4096 --engine reference --vs ik --memory",
)

MODEL, SWEEP, ENGINE, OUTPUT = "Model and engines", "Sweep", "Engine options", "Output"
TRUE, FALSE = ("on", "1", "true", "yes"), ("off", "0", "false", "no")
# command parameter -> EngineOptions field, for "engine X ignores FLAG" notes about flags the user gave
ENGINE_FIELDS = {"threads": "n_threads", "cache_type_k": "type_k", "cache_type_v": "type_v",
                 "flash_attn": "flash_attn", "grouped_routing": "grouped_routing", "repack": "repack",
                 "fused_moe": "fused_moe", "batch": "n_batch", "ubatch": "n_ubatch"}


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected a whole number") from None


def _float(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected a number of seconds") from None


def _flash_attn(text: str) -> str:
    value = text.lower()
    if value in ("on", "off", "auto"):
        return value
    if value in TRUE[1:] or value in FALSE[1:]:
        return "on" if value in TRUE else "off"
    hint = " (an old command line's bare -fa is -fa on, now the default)" if text.startswith("-") else ""
    raise UsageError(f"-fa {text}: expected on, off or auto{hint}")


def register(app: typer.Typer) -> None:
    # extra arguments reach the body, so that `-fa -ub 16` (an old bare -fa) gets our one-line hint, not Click's box
    @app.command("sweep-bench", help=HELP, epilog=EPILOG, context_settings={"allow_extra_args": True})
    @user_errors
    def sweep_bench(
        ctx: typer.Context,
        model: Optional[Path] = typer.Option(
            None, "-m", "--model", rich_help_panel=MODEL, show_default=False,
            help="GGUF model (any part of a split model). Default: the small qwen3moe preset with Q8_0 weights "
                 "(2.3 GB), generated once into $SWEEPBENCH_CACHE, else $XDG_CACHE_HOME/sweepbench, else "
                 "~/.cache/sweepbench."),
        engine: Optional[str] = typer.Option(
            None, "--engine", rich_help_panel=MODEL, show_default=False,
            help="reference (NumPy), ik (ik_llama.cpp CPU wheel), numba-cpu, numba-cuda (where installed). "
                 "Default: numba-cuda if registered and a CUDA GPU is present, else numba-cpu if registered, "
                 "else reference."),
        vs: Optional[str] = typer.Option(
            None, "--vs", rich_help_panel=MODEL, metavar="ENGINE",
            help="Also run ENGINE, window by window on the same tokens, alternating which goes first; adds its "
                 "S_PP/S_TG and the ratios (--engine / ENGINE) to the table and the file."),
        vs_settle: str = typer.Option(
            "0.25", "--vs-settle", metavar="SECONDS", rich_help_panel=MODEL,
            help="With --vs: pause between the two engines' turns, so the thread pool of the one that just ran "
                 "has gone idle (spinning threads slow the other down)."),
        ctx_size: str = typer.Option("2048", "-c", "--ctx-size", metavar="N", rich_help_panel=SWEEP,
                                     help="Context: windows start below it. A multiple of -ub."),
        ubatch: str = typer.Option("512", "-ub", "--ubatch-size", metavar="N", rich_help_panel=SWEEP,
                                   help="Tokens per PP window, and the window step."),
        batch: str = typer.Option("2048", "-b", "--batch-size", metavar="N", rich_help_panel=SWEEP,
                                  help="Logical batch: how prefill is chunked into engine calls."),
        n_predict: Optional[str] = typer.Option(None, "-n", "--n-predict", metavar="N", rich_help_panel=SWEEP,
                                                show_default=False, help="TG tokens per window. Default: -ub / 4."),
        threads: str = typer.Option("0", "-t", "--threads", metavar="N", rich_help_panel=SWEEP,
                                    help="CPU threads; 0 = all cores."),
        repetitions: str = typer.Option("1", "-r", "-nrep", "--repetitions", "--n-repetitions", metavar="N",
                                        rich_help_panel=SWEEP,
                                        help="Repetitions of every row (compare's significance test wants 6+)."),
        stride: str = typer.Option("1", "--sweep-stride", metavar="N", rich_help_panel=SWEEP,
                                   help="Measure every N-th window only (the others still fill the cache)."),
        warmup_batch: bool = typer.Option(False, "-wb", "--warmup-batch", rich_help_panel=SWEEP,
                                          help="Also warm up with one full ubatch."),
        no_warmup: bool = typer.Option(False, "--no-warmup", rich_help_panel=SWEEP,
                                       help="Skip the default warmup (one token routed to every expert)."),
        delay: str = typer.Option("0", "--delay", metavar="SECONDS", rich_help_panel=SWEEP,
                                  help="Cool-down between measured rows (outside every timer)."),
        seed: str = typer.Option("0", "--seed", metavar="N", rich_help_panel=SWEEP,
                                 help="Seed of the token streams."),
        cache_type_k: str = typer.Option("f16", "-ctk", "--cache-type-k", rich_help_panel=ENGINE,
                                         help="K cache type: f16 or q8_0."),
        cache_type_v: str = typer.Option("f16", "-ctv", "--cache-type-v", rich_help_panel=ENGINE,
                                         help="V cache type: f16 or q8_0."),
        flash_attn: str = typer.Option("on", "-fa", "--flash-attn", metavar="on|off|auto", rich_help_panel=ENGINE,
                                       help="Flash attention (ik's default is on)."),
        grouped_routing: bool = typer.Option(False, "-ger", "--grouped-routing", rich_help_panel=ENGINE,
                                             help="Grouped expert routing (bailingmoe2)."),
        repack: Optional[bool] = typer.Option(
            None, "-rtr/--no-repack", "--run-time-repack/--no-run-time-repack", rich_help_panel=ENGINE,
            help="Repack weights at load where the engine can (numba-cpu: R8 rows; ik: row-interleaved). "
                 "Default: on for numba-cpu, off for the other engines (as llama-sweep-bench)."),
        fused_moe: bool = typer.Option(True, "-fmoe/-no-fmoe", "--fused-moe/--no-fused-moe", rich_help_panel=ENGINE,
                                       help="Fused expert up/gate."),
        memory: bool = typer.Option(False, "--memory", "--sweep-memory", rich_help_panel=OUTPUT,
                                    help="Add RSS HWM and VRAM (MiB) to every row; with --vs the RSS is the "
                                         "process's, both engines together."),
        output: Optional[Path] = typer.Option(None, "-o", "--output", metavar="FILE", rich_help_panel=OUTPUT,
                                              help="Write our JSONL to FILE (replaced), flushed row by row."),
        output_format: str = typer.Option("md", "--output-format", metavar="md|jsonl|csv", rich_help_panel=OUTPUT,
                                          help="What stdout carries."),
        label: Optional[str] = typer.Option(None, "--label", rich_help_panel=OUTPUT,
                                            help="Name of this run in plot and compare. Default: the file name."),
        no_fit_check: bool = typer.Option(False, "--no-fit-check", rich_help_panel=OUTPUT,
                                          help="Load even if weights + KV cache exceed the available memory."),
    ) -> None:
        from sweepbench.bench.plan import SweepPlan
        from sweepbench.bench.session import SweepRequest, run

        flash_attn = _flash_attn(flash_attn)
        if ctx.args:
            raise UsageError(f"unexpected argument {ctx.args[0]!r}: sweep-bench takes options only "
                             f"(the model is -m MODEL)")
        plan = SweepPlan(
            n_ctx=_int(ctx_size, "-c"), n_ubatch=_int(ubatch, "-ub"), n_batch=_int(batch, "-b"),
            n_predict=None if n_predict is None else _int(n_predict, "-n"),
            repetitions=_int(repetitions, "-r"), stride=_int(stride, "--sweep-stride"), seed=_int(seed, "--seed"),
            warmup=not no_warmup, warmup_batch=warmup_batch, delay=_float(delay, "--delay"),
            settle=_float(vs_settle, "--vs-settle"), memory=memory)
        n_threads = _int(threads, "-t")
        if n_threads < 0:
            raise UsageError(f"-t {n_threads}: must be 0 (all cores) or more")
        explicit = frozenset(f for p, f in ENGINE_FIELDS.items()
                             if getattr(ctx.get_parameter_source(p), "name", "") == "COMMANDLINE")
        request = SweepRequest(
            plan=plan, model=model, engine=engine, vs=vs, n_threads=n_threads, type_k=cache_type_k.lower(),
            type_v=cache_type_v.lower(), flash_attn=flash_attn, grouped_routing=grouped_routing,
            repack=repack, fused_moe=fused_moe, output=output, output_format=output_format.lower(), label=label,
            fit_check=not no_fit_check, explicit=explicit)
        code = run(request)
        if code:
            raise typer.Exit(code)
