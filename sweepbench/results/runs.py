"""The Run/Row model that convert, plot and compare share, and ``load_runs``, which reads any supported input.

A Run is one sweep: a header (what is known of model, engine, host and options; the system record of our JSONL) and
one Row per N_KV window. Throughputs are tokens/s; a Row keeps its per-repetition samples when the input had them.
Runs that share a label are repetitions of one configuration: ``merge_repeats`` pools their samples, which is how
concatenated llama-sweep-bench tables get error bars and enough samples for a significance test.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from sweepbench.errors import UsageError
from sweepbench.results.parsers import parse_file
from sweepbench.results.records import ParsedRun

METRICS = ("pp", "tg")  # prompt processing, token generation
ROW_FIELDS = ("pp", "tg", "n_kv", "t_pp", "speed_pp", "t_tg", "speed_tg")


@dataclass(frozen=True)
class Row:
    """One window: ``pp`` tokens prefilled / ``tg`` tokens generated with ``n_kv`` tokens already in the KV cache."""

    n_kv: int
    pp: int | None = None
    tg: int | None = None
    t_pp: float | None = None
    speed_pp: float | None = None
    t_tg: float | None = None
    speed_tg: float | None = None
    samples_speed_pp: tuple[float, ...] = ()
    samples_speed_tg: tuple[float, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)  # every other key, written back as is

    @property
    def key(self) -> tuple:
        """What a row is matched on between runs."""
        return (self.n_kv, self.pp, self.tg)

    def speed(self, metric: str) -> float | None:
        return getattr(self, f"speed_{metric}")

    def samples(self, metric: str) -> tuple[float, ...]:
        """Per-repetition tokens/s; a row that only has its summary value counts as one sample."""
        samples = getattr(self, f"samples_speed_{metric}")
        if samples:
            return samples
        value = self.speed(metric)
        return () if value is None else (value,)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Row:
        known = {k: record.get(k) for k in ROW_FIELDS}
        known["n_kv"] = int(known["n_kv"])
        samples = {f"samples_speed_{m}": tuple(float(s) for s in record.get(f"samples_speed_{m}") or ())
                   for m in METRICS}
        extra = {k: v for k, v in record.items() if k not in (*ROW_FIELDS, *samples, "type")}
        return cls(**known, **samples, extra=extra)

    def to_record(self) -> dict:
        record = {"type": "row", **self.extra, **{k: getattr(self, k) for k in ROW_FIELDS}}
        for m in METRICS:
            if getattr(self, f"samples_speed_{m}"):
                record[f"samples_speed_{m}"] = list(getattr(self, f"samples_speed_{m}"))
        return record


@dataclass(frozen=True)
class Run:
    label: str
    rows: tuple[Row, ...]
    header: Mapping[str, Any] = field(default_factory=dict, compare=False)  # system record without "type"
    status: str = "complete"  # "complete", "interrupted" or "error", as in our end record
    message: str = ""

    @property
    def engine(self) -> str | None:
        return self.header.get("engine") or next((r.extra["engine"] for r in self.rows if "engine" in r.extra), None)

    @property
    def model(self) -> Mapping[str, Any]:
        return self.header.get("model") or {}

    @property
    def source(self) -> str:
        return str(self.header.get("source", ""))

    def sizes(self) -> set[tuple]:
        """The (PP, TG) window sizes of the rows."""
        return {(r.pp, r.tg) for r in self.rows}

    def to_records(self) -> list[dict]:
        """Our JSONL: header, rows, end record."""
        header = {"type": "system", **self.header, "label": self.label}
        end = {"type": "end", "status": self.status, "message": self.message}
        return [header, *(r.to_record() for r in self.rows), end]


def load_runs(paths: Iterable[Path], labels: list[str] | None = None) -> list[Run]:
    """Every run in ``paths``, labelled.

    Labels: by default the run's own label (our JSONL) or the file name, plus ``#i`` when a file holds several runs.
    ``labels`` gives one label per file (all runs of that file then share it: repetitions) or one per run.
    """
    paths = [Path(p) for p in paths]
    files = [parse_file(p) for p in paths]
    # (index of the parsed run in its file, run of one engine, " (engine)" for --vs runs)
    parsed = [[(i, *run) for i, pr in enumerate(prs) for run in _split_engines(pr)] for prs in files]
    n_runs = sum(len(runs) for runs in parsed)
    if labels and len(labels) not in (len(paths), n_runs):
        raise UsageError(f"--label given {len(labels)} times for {len(paths)} files holding {n_runs} runs; "
                         f"give one label per file or one per run")
    result: list[Run] = []
    for file_index, (path, runs) in enumerate(zip(paths, parsed)):
        several = len(files[file_index]) > 1
        for i, pr, engine_suffix in runs:
            if labels and len(labels) == len(paths):
                label = labels[file_index] + engine_suffix
            elif labels:
                label = labels[len(result)]
            else:
                label = pr.header.get("label") or path.stem + (f"#{i + 1}" if several else "")
                label += engine_suffix
            rows = tuple(sorted((Row.from_record(r) for r in pr.rows), key=_row_order))
            header = {"source": str(path), **pr.header}  # our own JSONL names no source: the file is the source
            result.append(Run(label, rows, header, pr.status, pr.message))
    return result


def _split_engines(pr: ParsedRun) -> list[tuple[ParsedRun, str]]:
    """A ``--vs`` run holds rows of several engines: one Run per engine, the engine named in its label."""
    engines = list(dict.fromkeys(r["engine"] for r in pr.rows if r.get("engine")))
    if len(engines) <= 1:
        return [(pr, "")]
    return [(ParsedRun({**pr.header, "engine": e}, [r for r in pr.rows if r.get("engine") == e],
                       pr.status, pr.message), f" ({e})") for e in engines]


def merge_repeats(runs: list[Run]) -> list[Run]:
    """One Run per label: rows with the same (N_KV, PP, TG) pool their samples; the value is their median."""
    by_label: dict[str, list[Run]] = {}
    for run in runs:
        by_label.setdefault(run.label, []).append(run)
    return [group[0] if len(group) == 1 else _merge(group) for group in by_label.values()]


def _merge(group: list[Run]) -> Run:
    by_key: dict[tuple, list[Row]] = {}
    for run in group:
        for row in run.rows:
            by_key.setdefault(row.key, []).append(row)
    rows = []
    for key in sorted(by_key, key=lambda k: _row_order(by_key[k][0])):
        same = by_key[key]
        pooled = {m: tuple(s for r in same for s in r.samples(m)) for m in METRICS}
        speeds = {m: statistics.median(pooled[m]) if pooled[m] else None for m in METRICS}
        rows.append(replace(
            same[0], speed_pp=speeds["pp"], speed_tg=speeds["tg"],
            t_pp=_seconds(same[0].pp, speeds["pp"]), t_tg=_seconds(same[0].tg, speeds["tg"]),
            samples_speed_pp=pooled["pp"] if len(pooled["pp"]) > 1 else (),
            samples_speed_tg=pooled["tg"] if len(pooled["tg"]) > 1 else ()))
    statuses = [r.status for r in group if r.status != "complete"]
    header = {**group[0].header, "repeats": len(group)}
    return Run(group[0].label, tuple(rows), header, statuses[0] if statuses else "complete")


def _row_order(row: Row) -> tuple:
    return (row.n_kv, row.pp or 0, row.tg or 0)


def _seconds(tokens: int | None, speed: float | None) -> float | None:
    return tokens / speed if tokens and speed else None
