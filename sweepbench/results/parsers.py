"""Readers for every result format people publish, each turned into records of our JSONL schema (``records.py``).

Supported, in any mix and any number per file:
* sweepbench JSONL (``{"type": "system" | "row" | "ratio" | "end", ...}``), possibly several runs per file;
* ik_llama.cpp ``llama-sweep-bench --output-format jsonl`` lines (no ``type`` key), bare or inside a console log;
* llama-sweep-bench markdown tables: bare, inside whole console logs (the ``main: n_kv_max = ...`` line and the
  model-loading messages before a table describe it), quoted with ``> `` in GitHub exports, several per file;
* llama-bench markdown tables and JSON / JSONL (``pp512``, ``tg128``, ``pp512 @ d4096``, ik's ``tg64@pp512``).

A parser never guesses silently: a table row it cannot read raises one line naming the file and line number.
This module knows nothing about Run objects (``runs.py`` builds them), so ``convert`` can write the records as-is.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from sweepbench.errors import SweepbenchError
from sweepbench.results import llama_bench
from sweepbench.results.records import ParsedRun, checked_header, checked_row, foreign_header

# ik's JSONL row keys that describe the run rather than the window; they also go into the header's options.
IK_PARAM_KEYS = ("n_kv_max", "n_batch", "n_ubatch", "flash_attn", "n_gpu_layers", "n_threads", "n_threads_batch")
IK_TO_OPTION = {"n_kv_max": "n_ctx"}

# Markdown column titles (lower case, single spaces) -> record keys; sweep-bench §1.5 plus --sweep-memory columns.
SWEEP_COLUMNS = {
    "pp": "pp", "tg": "tg", "n_kv": "n_kv",
    "t_pp s": "t_pp", "s_pp t/s": "speed_pp", "t_tg s": "t_tg", "s_tg t/s": "speed_tg",
    "rss hwm": "rss_hwm_mib", "vram delta": "vram_delta_mib",  # ik's JSONL keys
}
INT_KEYS = {"pp", "tg", "n_kv"}
NO_VALUE = ("n/a", "-", "")  # cells of values that were not measured

QUOTE_PREFIX = re.compile(r"^\s*(?:>\s?)+")  # "> " of GitHub quotes, possibly nested
PARAMS_LINE = re.compile(r"main:\s+n_kv_max\s*=")
KEY_EQ_INT = re.compile(r"(\w+)\s*=\s*(-?\d+)")
FENCE = re.compile(r"^(```|~~~)")

# Model-loading messages (ik's llm_load_print_meta / mainline's print_info) -> (section, key, converter).
LOG_FACTS = [
    (re.compile(r"loaded meta data with .* from (\S+\.gguf)"), "model", "path", str),
    (re.compile(r"(?:llm_load_print_meta|print_info):\s+general\.name\s+=\s+(.+)"), "model", "name", str),
    (re.compile(r"(?:llm_load_print_meta|print_info):\s+arch\s+=\s+(\S+)"), "model", "arch", str),
    (re.compile(r"(?:model ftype|file type)\s+=\s+(.+)"), "model", "ftype", str),
    (re.compile(r"model params\s+=\s+([\d.]+) B"), "model", "n_params", lambda s: int(float(s) * 1e9)),
    (re.compile(r"(?:model|file) size\s+=\s+([\d.]+) GiB"), "model", "size_bytes", lambda s: int(float(s) * 2**30)),
    (re.compile(r"K \((\w+)\):.*V \((\w+)\):"), "options", ("type_k", "type_v"), str),
    (re.compile(r"llama_new_context_with_model:\s+fused_moe\s+=\s+(\d+)"), "options", "fmoe", int),
    (re.compile(r"llama_new_context_with_model:\s+grouped er\s+=\s+(\d+)"), "options", "grouped_routing", int),
    (re.compile(r"llama_new_context_with_model:\s+mla_attn\s+=\s+(\d+)"), "options", "mla", int),
    (re.compile(r"^build:\s+(\d+ \(\w+\))"), "engine_info", "build", str),
]
# Messages only ik_llama.cpp prints (mainline prints "llama_context:"/"print_info:" instead).
IK_ONLY = re.compile(r"llama_new_context_with_model:\s+(fused_moe|mla_attn|attn_max_b)|={6,} Repacked")
MAINLINE_ONLY = re.compile(r"^(print_info|llama_context):")
SUMMARY = re.compile(r"<summary>(.*?)</summary>")
CAPTION_REACH = 6  # a <summary> names the table only if it is at most this many lines above it


def parse_file(path: Path) -> list[ParsedRun]:
    """All runs in ``path``: sweep runs in file order, then llama-bench runs. Bad input: SweepbenchError, one line."""
    path = Path(path)
    try:
        text = _decode(path.read_bytes())
    except OSError as e:
        raise SweepbenchError(f"{path}: cannot read ({e.strerror or e})") from None
    if text.lstrip().startswith("["):
        runs = llama_bench.runs_from_json(path, _load_json(path, text))
    else:
        runs = _Scanner(path).scan(text.splitlines())
    if not runs:
        raise SweepbenchError(
            f"{path}: no llama-sweep-bench table, sweepbench/ik JSONL rows or llama-bench results found")
    return runs


def _decode(data: bytes) -> str:
    """UTF-8 (mojibake kept as it is), or UTF-16 with a BOM: what Windows PowerShell's `>` writes."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


def _load_json(path: Path, text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SweepbenchError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


class _Scanner:
    """Line-by-line state machine over a text file: log facts accumulate until a table or JSONL run consumes them."""

    def __init__(self, path: Path):
        self.path = path
        self.runs: list[ParsedRun] = []
        self.bench_tests: list[llama_bench.BenchTest] = []
        self.facts: dict = {}  # model/options/engine learned from log lines since the last run
        self.params: dict = {}  # the last `main: n_kv_max = ...` line
        self.caption: tuple[int, str] | None = None
        self.table: _Table | None = None
        self.jsonl_run: ParsedRun | None = None  # the run that type-less (ik) or sweepbench JSONL lines go to
        self.jsonl_mode = False

    def scan(self, lines: list[str]) -> list[ParsedRun]:
        first = next((ln.strip() for ln in lines if ln.strip()), "")
        self.jsonl_mode = first.startswith("{")
        for lineno, raw in enumerate(lines, 1):
            line = QUOTE_PREFIX.sub("", raw).strip()
            if self.table is not None:
                if self.table.takes(line):
                    self.table.add(line, lineno)
                    continue
                if not self.table.pause(line):  # a paused sweep table resumes if its rows go on after the lines
                    self._close_table()
            if line.startswith("{"):
                self._json_line(line, lineno, is_last=lineno == len(lines))
            elif line.startswith("|"):
                self._maybe_open_table(line, lineno)
            elif line:
                self._log_line(line, lineno)
        if self.table is not None:
            self._close_table()
        self.runs += llama_bench.runs_from_tests(self.path, self.bench_tests)
        return self.runs

    # ---- log lines -------------------------------------------------------------------------------------------
    def _log_line(self, line: str, lineno: int) -> None:
        if self.jsonl_mode:
            raise SweepbenchError(f"{self.path}:{lineno}: not a JSON record: {line[:60]!r}")
        if PARAMS_LINE.match(line):
            self.params = {k: int(v) for k, v in KEY_EQ_INT.findall(line)}
            return
        if m := SUMMARY.search(line):
            self.caption = (lineno, m.group(1).strip())
        if IK_ONLY.search(line):
            self.facts["engine"] = "ik_llama.cpp"
        elif MAINLINE_ONLY.match(line) and "engine" not in self.facts:
            self.facts["engine"] = "llama.cpp"
        for pattern, section, key, convert in LOG_FACTS:
            if m := pattern.search(line):
                keys = key if isinstance(key, tuple) else (key,)
                for k, value in zip(keys, m.groups()):
                    self.facts.setdefault(section, {})[k] = convert(value.strip())

    def _take_context(self, source_format: str, lineno: int) -> tuple[dict, dict]:
        """Header and row defaults for a run starting at ``lineno``; the facts are consumed (one log, one run)."""
        header = foreign_header(self.path, source_format, lineno)
        header["model"].update(self.facts.get("model", {}))
        header["options"].update(self.facts.get("options", {}))
        header["options"].update({IK_TO_OPTION.get(k, k): v for k, v in self.params.items()})
        if "engine" in self.facts:
            header["engine"] = self.facts["engine"]
        if "engine_info" in self.facts:
            header["engine_info"] = self.facts["engine_info"]
        if self.caption and lineno - self.caption[0] <= CAPTION_REACH:
            header["description"] = self.caption[1]
        row_defaults = {k: v for k, v in self.params.items() if k in IK_PARAM_KEYS}
        self.facts, self.params, self.caption = {}, {}, None
        return header, row_defaults

    # ---- markdown tables -------------------------------------------------------------------------------------
    def _maybe_open_table(self, line: str, lineno: int) -> None:
        kind = _table_kind(line)
        titles = _titles(line)
        if kind == "sweep-bench":
            fmt = "sweep-bench-log" if (self.params or self.facts) else "sweep-bench-md"
            header, defaults = self._take_context(fmt, lineno)
            self.table = _SweepTable(self.path, lineno, titles, ParsedRun(header), defaults)
        elif kind == "llama-bench":
            self.table = _BenchTable(self.path, lineno, titles, self.bench_tests)

    def _close_table(self) -> None:
        table, self.table = self.table, None
        if isinstance(table, _SweepTable):
            table.finish()
            self.runs.append(table.run)

    # ---- JSON lines ------------------------------------------------------------------------------------------
    def _json_line(self, line: str, lineno: int, is_last: bool) -> None:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if self.jsonl_mode and is_last and self.jsonl_run is not None:  # killed while writing the last line
                self.jsonl_run.status, self.jsonl_run.message = "interrupted", f"truncated record at line {lineno}"
                return
            if self.jsonl_mode or '"n_kv"' in line:
                raise SweepbenchError(f"{self.path}:{lineno}: unparseable JSON record: {line[:60]!r}") from None
            return  # braces in prose or code snippets of a log
        if not isinstance(record, dict):
            if self.jsonl_mode:
                raise SweepbenchError(f"{self.path}:{lineno}: JSON record is not an object: {line[:60]!r}")
            return
        kind = record.get("type")
        if kind == "system":
            self.jsonl_run = ParsedRun(checked_header(record, f"{self.path}:{lineno}"))
            self.runs.append(self.jsonl_run)
        elif kind == "row":
            self._jsonl_target(lineno, "sweepbench-jsonl").rows.append(checked_row(record, f"{self.path}:{lineno}"))
        elif kind == "end" and self.jsonl_run is not None:
            self.jsonl_run.status = record.get("status", "complete")
            self.jsonl_run.message = record.get("message") or ""
            self.jsonl_run = None
        elif kind is None and "n_kv" in record and ("speed_pp" in record or "speed_tg" in record):
            self._ik_row(record, lineno)
        elif kind is None and llama_bench.is_bench_record(record):
            self.bench_tests += llama_bench.tests_from_record(record, f"{self.path}:{lineno}", lineno)
        elif kind is None and self.jsonl_mode:
            raise SweepbenchError(f"{self.path}:{lineno}: unknown JSON record (keys {sorted(record)[:5]})")

    def _jsonl_target(self, lineno: int, source_format: str) -> ParsedRun:
        if self.jsonl_run is None:  # rows without a header record (e.g. a file cut at the top)
            self.jsonl_run = ParsedRun(self._take_context(source_format, lineno)[0])
            self.runs.append(self.jsonl_run)
        return self.jsonl_run

    def _ik_row(self, record: dict, lineno: int) -> None:
        """ik JSONL: a run is consecutive lines with the same parameters and growing N_KV."""
        record = checked_row(record, f"{self.path}:{lineno}")
        run = self.jsonl_run
        params = {k: record.get(k) for k in IK_PARAM_KEYS}
        if run is not None and run.header.get("source_format") == "ik-jsonl" and run.rows:
            last = run.rows[-1]
            if {k: last.get(k) for k in IK_PARAM_KEYS} != params or record["n_kv"] <= last["n_kv"]:
                run = None
        elif run is not None and run.header.get("source_format") != "ik-jsonl":
            run = None
        if run is None:
            self.jsonl_run = None
            run = self._jsonl_target(lineno, "ik-jsonl")
            run.header["options"].update({IK_TO_OPTION.get(k, k): v for k, v in params.items() if v is not None})
        run.rows.append({"type": "row", **record})


def _titles(line: str) -> list[str]:
    return [" ".join(c.lower().split()) for c in _cells(line)]


def _table_kind(line: str) -> str | None:
    """Which table a markdown header line starts, if it is one."""
    titles = _titles(line)
    if "n_kv" in titles and ("s_pp t/s" in titles or "s_tg t/s" in titles):
        return "sweep-bench"
    if "test" in titles and "t/s" in titles:
        return "llama-bench"
    return None


def _cells(line: str) -> list[str]:
    """Cells of a markdown table line; outer pipes optional."""
    cells = [c.strip() for c in line.strip().split("|")]
    if cells and cells[0] == "":
        cells = cells[1:]
    if cells and cells[-1] == "":
        cells = cells[:-1]
    return cells


def _is_number_cell(cell: str) -> bool:
    return cell.lower() in NO_VALUE or bool(re.fullmatch(r"-?\d+(\.\d*)?(e[-+]?\d+)?|-?inf|nan", cell.lower()))


def _is_separator(line: str) -> bool:
    return bool(re.fullmatch(r"\|?(\s*:?-+:?\s*\|)*\s*:?-+:?\s*\|?", line))


class _Table:
    def __init__(self, path: Path, lineno: int, titles: list[str]):
        self.path, self.start, self.titles = path, lineno, titles
        self.n_lines = 0
        self.after: list[str] = []  # lines since the last row that were not rows (the table is paused)

    def takes(self, line: str) -> bool:
        """Whether ``line`` is this table's next row (a header line starts a new table: `cat a.md b.md`)."""
        if not line.startswith("|") or _table_kind(line) is not None:
            return False
        if self.after and not self.resumes(line):
            return False
        self.after = []
        return True

    def pause(self, line: str) -> bool:
        """A line that is not a row: keep the table open over it? (only sweep tables, see ``_SweepTable``)."""
        self.after.append(line)
        return False

    def resumes(self, line: str) -> bool:
        return False

    def add(self, line: str, lineno: int) -> None:
        self.n_lines += 1
        if self.n_lines == 1 and _is_separator(line):
            return
        cells = _cells(line)
        if len(cells) != len(self.titles):
            raise SweepbenchError(
                f"{self.path}:{lineno}: table row has {len(cells)} cells, the header at line {self.start} has "
                f"{len(self.titles)}: {line[:60]!r}")
        self.add_cells(cells, line, lineno)

    def add_cells(self, cells: list[str], line: str, lineno: int) -> None:
        raise NotImplementedError


class _SweepTable(_Table):
    """llama-sweep-bench's table. Engines print warnings between rows (CUDA graph notices, repacking messages), so
    the table stays paused over up to MAX_PAUSE other lines and resumes when a row with growing N_KV follows."""

    MAX_PAUSE = 8

    def __init__(self, path, lineno, titles, run: ParsedRun, row_defaults: dict):
        super().__init__(path, lineno, titles)
        self.run, self.row_defaults = run, row_defaults
        self.keys = [SWEEP_COLUMNS.get(t, t.replace(" ", "_")) for t in titles]

    def pause(self, line: str) -> bool:
        self.after.append(line)
        return not line.startswith("|") and bool(self.run.rows) and len(self.after) <= self.MAX_PAUSE

    def resumes(self, line: str) -> bool:
        cells = _cells(line)
        if len(cells) != len(self.titles) or not all(_is_number_cell(c) for c in cells):
            return False
        n_kv = cells[self.keys.index("n_kv")]
        return n_kv.isdigit() and int(n_kv) > self.run.rows[-1]["n_kv"]

    def add_cells(self, cells, line, lineno):
        row = {"type": "row", **self.row_defaults}
        for key, cell in zip(self.keys, cells):
            try:
                row[key] = None if cell.lower() in NO_VALUE else (int if key in INT_KEYS else float)(cell)
            except ValueError:
                raise SweepbenchError(
                    f"{self.path}:{lineno}: unparseable sweep-bench row ({key} = {cell!r}): {line[:60]!r}") from None
        self.run.rows.append(checked_row(row, f"{self.path}:{lineno}"))

    def finish(self) -> None:
        """Mark runs that stopped early: fewer rows than n_kv_max allows, usually followed by the crash message."""
        rows, run = self.run.rows, self.run
        n_kv_max = run.header["options"].get("n_ctx")
        reason = next((ln for ln in self.after if ln and not ln.startswith("|")), "")
        reason = "" if FENCE.match(reason) else reason
        stopped_early = not rows or (n_kv_max is not None and rows[-1]["n_kv"] + (rows[-1].get("pp") or 0) < n_kv_max)
        if stopped_early:
            run.status = "interrupted"
            run.message = f"table ends after {len(rows)} rows" + (f": {reason}" if reason else "")


class _BenchTable(_Table):
    def __init__(self, path, lineno, titles, sink: list):
        super().__init__(path, lineno, titles)
        self.sink = sink

    def add_cells(self, cells, line, lineno):
        try:
            self.sink += llama_bench.tests_from_cells(dict(zip(self.titles, cells)), lineno)
        except ValueError as e:
            raise SweepbenchError(f"{self.path}:{lineno}: unparseable llama-bench row ({e}): {line[:60]!r}") from None
