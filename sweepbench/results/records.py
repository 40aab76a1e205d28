"""The sweepbench JSONL schema (what ``sweep-bench -o`` writes and ``convert`` produces) and its row checks.

One JSON object per line; a file holds one or more runs, each of them:

1. ``{"type": "system", ...}`` -- opens a run. Keys the readers use (every other key is kept and written back):
   ``schema`` (1), ``label`` (optional: names the run in plots and tables; default: the file name),
   ``engine`` (str, e.g. "reference", "numba-cpu", "ik"), ``model`` {``header_sha256``, ``name``, ``arch``,
   ``ftype``, ``quant_mix``, ``n_params``, ``path``, ...}, ``host`` {``cpu``, ``gpu``, ...}, ``options``
   {``n_ctx``, ``n_ubatch``, ``repetitions``, ...}. ``compare`` refuses two runs whose engine, any of those model
   keys, host ``cpu``/``gpu`` or (PP, TG) sizes differ (a key missing on either side is not held against them);
   ``options`` that differ are listed, never fatal.
2. ``{"type": "row", ...}`` -- one per N_KV window, in any order:
   ``n_kv`` (int >= 0, required), ``pp``, ``tg`` (int tokens per window), ``t_pp``, ``t_tg`` (seconds, the
   median over repetitions), ``speed_pp``, ``speed_tg`` (tokens/s: pp / t_pp, tg / t_tg), ``samples_speed_pp``,
   ``samples_speed_tg`` (optional lists of tokens/s, one per repetition: compare's Mann-Whitney test and the
   plots' error bars use them; without them the row counts as one sample), ``engine`` (optional: ``--vs`` files
   interleave the rows of two engines and are read as one run per engine). Numbers may be null (not measured).
   Other keys (ik's ``n_kv_max`` ..., ``samples_t_*``, ``rss_hwm_mib``, ``vram_delta_mib``, roofline figures)
   are kept as they are.
3. ``{"type": "end", "status": "complete" | "interrupted" | "error", "message": str}`` -- optional; a run without
   one (killed, or still being written) is read as it stands, and a last line cut in the middle marks it
   interrupted. Records of other types (e.g. ``--vs``'s ``ratio``) are skipped.

Rows before any system record (a file cut at the top, ik's JSONL) make a run of their own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from sweepbench import __version__
from sweepbench.errors import SweepbenchError

INT_FIELDS = ("n_kv", "pp", "tg")
FLOAT_FIELDS = ("t_pp", "speed_pp", "t_tg", "speed_tg")
SAMPLE_FIELDS = ("samples_speed_pp", "samples_speed_tg")


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


def checked_header(record: dict, where: str) -> dict:
    """A system record as a run header (without "type"); the sections readers look into must be objects."""
    for key in ("model", "host", "options"):
        if not isinstance(record.get(key, {}), dict):
            raise SweepbenchError(f"{where}: system record has {key} = {record[key]!r}, expected an object")
    for key in ("label", "engine"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise SweepbenchError(f"{where}: system record has {key} = {record[key]!r}, expected a string")
    return {k: v for k, v in record.items() if k != "type"}


def checked_row(record: dict, where: str) -> dict:
    """``record`` with its numbers checked (``where`` = "file:line" for the one-line error).

    Non-finite throughputs (a printf of inf when a phase took 0.000 s) become null: not measured, not an error.
    """
    row = dict(record)
    if row.get("engine") is not None and not isinstance(row["engine"], str):
        raise SweepbenchError(f"{where}: row has engine = {row['engine']!r}, expected a string")
    for key in INT_FIELDS:
        value = row.get(key)
        if value is None and key != "n_kv":
            continue
        if not _is_number(value) or not math.isfinite(value) or value < 0 or value != int(value):
            raise SweepbenchError(f"{where}: row has {key} = {value!r}, expected a whole number >= 0")
        row[key] = int(value)
    for key in FLOAT_FIELDS:
        row[key] = _number(row.get(key), key, where)
    for key in SAMPLE_FIELDS:
        samples = row.get(key)
        if samples is None:
            continue
        if not isinstance(samples, list):
            raise SweepbenchError(f"{where}: row has {key} = {samples!r}, expected a list of tokens/s")
        row[key] = [s for s in (_number(s, key, where) for s in samples) if s is not None]
    return row


def _number(value, key: str, where: str) -> float | None:
    if value is None:
        return None
    if not _is_number(value) or value < 0:  # NaN passes here and becomes null below
        raise SweepbenchError(f"{where}: row has {key} = {value!r}, expected a number >= 0")
    return float(value) if math.isfinite(value) else None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
