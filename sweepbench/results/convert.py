"""``sweepbench convert``: any supported input -> our JSONL (header record, rows, end record per run)."""
from __future__ import annotations

import json
from pathlib import Path

from sweepbench.errors import SweepbenchError
from sweepbench.results.runs import Run, load_runs


def write_jsonl(runs: list[Run], output: Path) -> None:
    try:
        with open(output, "w", encoding="utf-8") as f:
            for run in runs:
                for record in run.to_records():
                    f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise SweepbenchError(f"{output}: cannot write ({e.strerror or e})") from None


def convert_files(inputs: list[Path], output: Path, labels: list[str] | None = None) -> list[Run]:
    """Read every input, write all their runs to ``output``; returns the runs for the caller's report."""
    runs = load_runs(inputs, labels)
    write_jsonl(runs, output)
    return runs
