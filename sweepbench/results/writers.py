"""Result writers: llama-sweep-bench's markdown table (byte for byte), our JSONL and CSV, each fed row by row.

Markdown (shared/reference/ik_llama_cpp_spec.md §1.5): the ``main: n_kv_max = ...`` line between empty lines,
then ik's header, separator and ``printf`` row formats, so ik's sweep-bench-plot.py and anything that reads ik's
tables read ours. ``--memory`` appends ik's ``RSS HWM`` / ``VRAM delta`` columns (MiB, ``%.1f`` or ``n/a``);
``--vs`` appends the peer's S_PP and S_TG and the ratios ours / theirs.

JSONL: the records as they are (system, then per row one record per engine and, with ``--vs``, a ratio record,
then an end record), one per line, flushed at once so an interrupted run keeps every finished row.
CSV: one line per engine and row with the scalar fields (the raw samples are in the JSONL only).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Callable, Protocol

from sweepbench.results.parsers import IK_PARAM_KEYS  # the reader's list: writer and reader agree
from sweepbench.errors import SweepbenchError, UsageError

Write = Callable[[str], None]

HEADER_LINE = ("main: n_kv_max = {n_kv_max}, n_batch = {n_batch}, n_ubatch = {n_ubatch}, flash_attn = {flash_attn}, "
               "n_gpu_layers = {n_gpu_layers}, n_threads = {n_threads}, n_threads_batch = {n_threads_batch}")
BASE_TITLES = ("PP", "TG", "N_KV", "T_PP s", "S_PP t/s", "T_TG s", "S_TG t/s")
BASE_WIDTHS = (6, 6, 6, 8, 8, 8, 8)
MEMORY_TITLES = ("RSS HWM", "VRAM delta")
MEMORY_KEYS = ("rss_hwm_mib", "vram_delta_mib")
CSV_FIELDS = ("engine", *IK_PARAM_KEYS, "pp", "tg", "n_kv", "t_pp", "speed_pp", "t_tg", "speed_tg", "window", "reps",
              "speed_pp_min", "speed_pp_max", "speed_tg_min", "speed_tg_max",
              "pp_flops", "pp_gflops", "tg_bytes_per_token", "tg_gbps")
OUTPUT_FORMATS = ("md", "jsonl", "csv")


def header_line(params: dict) -> str:
    """sweep-bench's parameter line with the empty lines around it."""
    return "\n" + HEADER_LINE.format(**params) + "\n\n"


class MarkdownTable:
    def __init__(self, memory: bool = False, peer: str | None = None):
        self.memory, self.peer = memory, peer
        self.extra_titles = (list(MEMORY_TITLES) if memory else []) + (
            [f"S_PP {peer}", f"S_TG {peer}", "PP ratio", "TG ratio"] if peer else [])
        self.extra_widths = ([10, 10] if memory else []) + [max(8, len(t)) for t in self.extra_titles[2 * memory:]]

    def header(self) -> str:
        titles = "|%6s | %6s | %6s | %8s | %8s | %8s | %8s |" % BASE_TITLES
        rule = "|%6s-|-%6s-|-%6s-|-%8s-|-%8s-|-%8s-|-%8s-|" % tuple("-" * w for w in BASE_WIDTHS)
        for title, width in zip(self.extra_titles, self.extra_widths):
            titles += " %*s |" % (width, title)
            rule += "-%s-|" % ("-" * width)
        return titles + "\n" + rule + "\n"

    def line(self, row: dict, peer_row: dict | None = None, ratio: dict | None = None) -> str:
        text = "|%6d | %6d | %6d | %8.3f | %8.2f | %8.3f | %8.2f |" % (
            row["pp"], row["tg"], row["n_kv"], row["t_pp"], row["speed_pp"], row["t_tg"], row["speed_tg"])
        cells: list[str] = []
        if self.memory:
            cells += ["n/a" if row.get(k) is None else "%.1f" % row[k] for k in MEMORY_KEYS]
        if self.peer:
            cells += ["%.2f" % peer_row["speed_pp"], "%.2f" % peer_row["speed_tg"],
                      "%.3f" % ratio["ratio_pp"], "%.3f" % ratio["ratio_tg"]]
        return text + "".join(" %*s |" % (w, c) for w, c in zip(self.extra_widths, cells)) + "\n"


class CsvTable:
    def __init__(self, memory: bool = False, vs: bool = False):
        self.fields = list(CSV_FIELDS)
        if memory:
            self.fields[self.fields.index("speed_tg") + 1:1] = list(MEMORY_KEYS)
        if vs:
            self.fields += ["ratio_pp", "ratio_tg"]

    def _csv(self, values: list) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow(values)
        return out.getvalue()

    def header(self) -> str:
        return self._csv(self.fields)

    def line(self, row: dict, ratio: dict | None = None) -> str:
        values = {**row, **({"ratio_pp": ratio["ratio_pp"], "ratio_tg": ratio["ratio_tg"]} if ratio else {})}
        return self._csv(["" if values.get(f) is None else values[f] for f in self.fields])


def _finite(value):
    """JSON has no NaN or infinity: such a figure was not measured, so it is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def jsonl_line(record: dict) -> str:
    return json.dumps(_finite(record), allow_nan=False) + "\n"


# ---- sinks: where one run's records go, as they happen ------------------------------------------------------------

class Sink(Protocol):
    def start(self, system: dict) -> None: ...

    def rows(self, rows: list[dict], ratio: dict | None) -> None:
        """One measured window: a row record per engine (primary first) and, with --vs, the ratio record."""

    def end(self, end: dict) -> None: ...


class MarkdownSink:
    def __init__(self, write: Write, params: dict, memory: bool = False, peer: str | None = None):
        self.write, self.params, self.table = write, params, MarkdownTable(memory, peer)

    def start(self, system: dict) -> None:
        self.write(header_line(self.params) + self.table.header())

    def rows(self, rows: list[dict], ratio: dict | None) -> None:
        self.write(self.table.line(rows[0], rows[1] if len(rows) > 1 else None, ratio))

    def end(self, end: dict) -> None:
        pass  # the table is complete as it stands; how the run ended goes to stderr


class JsonlSink:
    def __init__(self, write: Write):
        self.write = write

    def start(self, system: dict) -> None:
        self.write(jsonl_line(system))

    def rows(self, rows: list[dict], ratio: dict | None) -> None:
        self.write("".join(jsonl_line(r) for r in [*rows, *([ratio] if ratio else [])]))

    def end(self, end: dict) -> None:
        self.write(jsonl_line(end))


class CsvSink:
    def __init__(self, write: Write, memory: bool = False, vs: bool = False):
        self.write, self.table = write, CsvTable(memory, vs)

    def start(self, system: dict) -> None:
        self.write(self.table.header())

    def rows(self, rows: list[dict], ratio: dict | None) -> None:
        self.write("".join(self.table.line(r, ratio if i == 0 else None) for i, r in enumerate(rows)))

    def end(self, end: dict) -> None:
        pass


class JsonlFile(JsonlSink):
    """``-o FILE``: created at ``start`` (nothing is left behind by a sweep that never started), flushed per write."""

    def __init__(self, path: Path):
        self.path, self._file = Path(path), None
        super().__init__(self._write)

    @staticmethod
    def check(path: Path) -> None:
        """Fail before loading anything if the file could not be written."""
        path = Path(path)
        if path.is_dir():
            raise UsageError(f"-o {path}: is a directory")
        if not path.parent.is_dir():
            raise UsageError(f"-o {path}: directory {path.parent} does not exist")
        if not os.access(path if path.exists() else path.parent, os.W_OK):
            raise UsageError(f"-o {path}: not writable")

    def start(self, system: dict) -> None:
        try:
            self._file = open(self.path, "w", encoding="utf-8")
        except OSError as e:
            raise SweepbenchError(f"-o {self.path}: cannot write ({e.strerror or e})") from None
        super().start(system)

    def _write(self, text: str) -> None:
        if self._file is not None:
            try:
                self._file.write(text)
                self._file.flush()
            except OSError as e:  # e.g. the disk filled up: the sweep ends as an error, rows so far stand
                raise SweepbenchError(f"-o {self.path}: cannot write ({e.strerror or e})") from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def stdout_sink(fmt: str, write: Write, params: dict, memory: bool, peer: str | None) -> Sink:
    if fmt == "md":
        return MarkdownSink(write, params, memory, peer)
    if fmt == "jsonl":
        return JsonlSink(write)
    if fmt == "csv":
        return CsvSink(write, memory, peer is not None)
    raise UsageError(f"--output-format {fmt}: expected one of {', '.join(OUTPUT_FORMATS)}")
