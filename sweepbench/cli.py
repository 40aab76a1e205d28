"""The ``sweepbench`` command line: a Typer app whose subcommands live in ``sweepbench.commands.*``.

This file only wires commands together and turns user errors into one line on stderr plus a non-zero exit.
No computation happens here or in the command modules: they parse options and call library functions.
"""
from __future__ import annotations

import sys
from importlib import import_module

import typer

try:  # typer >= 0.2x carries its own copy of click; older ones use click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exceptions

from sweepbench import __version__
from sweepbench.errors import SweepbenchError

app = typer.Typer(
    name="sweepbench",
    help="Benchmark MoE GGUF inference across KV-cache depth (llama-sweep-bench style), compare and plot runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each module defines ``register(app)``; order = order in --help.
COMMAND_MODULES = [
    "sweepbench.commands.sweep_bench",
    "sweepbench.commands.synth",
    "sweepbench.commands.info",
    "sweepbench.commands.logits",
    "sweepbench.commands.verify",
    "sweepbench.commands.convert",
    "sweepbench.commands.plot",
    "sweepbench.commands.compare",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sweepbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


for _name in COMMAND_MODULES:
    import_module(_name).register(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point. Commands turn user errors into one line themselves (``commands.user_errors``);
    Click's own usage errors (an unknown option or command, a missing value) become one line here too, instead of
    a usage block."""
    try:
        code = app(args=argv, prog_name="sweepbench", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError:  # bare `sweepbench`: typer has printed the help already
        sys.exit(0)
    except click_exceptions.UsageError as e:
        command = e.ctx.command_path if e.ctx is not None else "sweepbench"
        print(f"sweepbench: error: {e.format_message()} (see '{command} -h')", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("sweepbench: interrupted", file=sys.stderr)
        sys.exit(130)
    except SweepbenchError as e:  # raised outside a command (e.g. while registering)
        print(f"sweepbench: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
