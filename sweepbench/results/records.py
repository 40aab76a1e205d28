"""What every parser produces: one run as records of our JSONL schema (see the brief's RESULT FILE FORMAT)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sweepbench import __version__


@dataclass
class ParsedRun:
    """One run: ``header`` = the system record without "type", ``rows`` = row records, and how the run ended."""

    header: dict
    rows: list[dict] = field(default_factory=list)
    status: str = "complete"
    message: str = ""


def foreign_header(path: Path, source_format: str, line: int) -> dict:
    """The start of a header for a run we did not write: where it came from, nothing guessed."""
    return {"schema": 1, "tool": "sweepbench", "version": __version__, "source": str(path),
            "source_format": source_format, "source_line": line, "model": {}, "options": {}}
