"""CLI subcommands. Each module defines ``register(app)`` and holds option parsing only.

``user_errors`` wraps a command so that a ``SweepbenchError`` becomes one line on stderr and a non-zero exit
(also under ``typer.testing.CliRunner``), never a traceback.
"""
from __future__ import annotations

import functools
import sys

import typer

from sweepbench.errors import SweepbenchError


def user_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SweepbenchError as e:
            print(f"sweepbench: error: {e}", file=sys.stderr)
            raise typer.Exit(e.exit_code) from None
        except MemoryError:
            print("sweepbench: error: out of memory", file=sys.stderr)
            raise typer.Exit(1) from None

    return wrapper
