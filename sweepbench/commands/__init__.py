"""CLI subcommands. Each module defines ``register(app)`` and holds option parsing only.

``user_errors`` wraps a command so that a ``SweepbenchError`` becomes one line on stderr and a non-zero exit
(also under ``typer.testing.CliRunner``), never a traceback; so does running out of host or GPU memory.
"""
from __future__ import annotations

import functools
import sys

import typer

from sweepbench.errors import OUT_OF_GPU_MEMORY, SweepbenchError, UsageError, is_gpu_out_of_memory


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
        except Exception as e:
            if not is_gpu_out_of_memory(e):  # a CUDA allocation refused while loading or warming up
                raise
            print(f"sweepbench: error: {OUT_OF_GPU_MEMORY}", file=sys.stderr)
            raise typer.Exit(1) from None

    return wrapper


def parse_token_ids(text: str, flag: str = "--tokens") -> list[int]:
    """``1,2,3`` -> [1, 2, 3]; anything else is a usage error naming the flag."""
    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise UsageError(f"{flag} {text}: expected comma-separated token ids, e.g. 1,2,3") from None
    if not ids:
        raise UsageError(f"{flag} {text!r}: no token ids given")
    return ids
