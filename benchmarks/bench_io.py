"""What the benchmark scripts share: reading a sweep's JSONL, and the generated blocks of benchmarks/NOTES.md
(a benchmark script owns the text between its two markers)."""
from __future__ import annotations

import json
from pathlib import Path


def read_sweep(jsonl: Path) -> tuple[dict, list[dict]]:
    """(the system record, the row records in file order) of a ``sweepbench sweep-bench -o`` JSONL file."""
    system, rows = {}, []
    for line in jsonl.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("type") == "system":
            system = rec
        elif rec.get("type") == "row":
            rows.append(rec)
    return system, rows


def replace_block(notes: Path, begin: str, end: str, block: str, before: str | None = None) -> None:
    """Put ``block`` between the markers (replacing what was there), or on a first run add the markers before the
    heading ``before`` (or at the end of the file)."""
    text = notes.read_text()
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + begin + "\n" + block + "\n" + end + rest.split(end, 1)[1]
    elif before and before in text:
        head, tail = text.split(before, 1)
        text = head.rstrip() + f"\n\n{begin}\n{block}\n{end}\n\n" + before + tail
    else:
        text = text.rstrip() + f"\n\n{begin}\n{block}\n{end}\n"
    notes.write_text(text)
