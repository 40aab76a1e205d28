"""``sweepbench compare``: is the CANDIDATE sweep slower than the BASELINE sweep?

Per row (matched on N_KV, PP and TG) and metric (S_PP, S_TG) the effect is the ratio of medians candidate/baseline
(throughput: below 1 is slower). asv's double gate decides a row: it *regresses* when the ratio is beyond the
tolerance AND a two-sided Mann-Whitney U test says the samples differ (p < alpha). A threshold alone flags noise, a
test alone flags tiny real changes. With fewer than ``min_samples`` on a side the test has no power (6 vs 6 is the
smallest size whose best two-sided p, 2/C(12,6) = 0.002, is convincing), so the tolerance alone decides and the row
is marked low-n. The curve verdict per metric is what a reader of the plot sees: the geometric mean of the row
ratios beyond tolerance, or ``consecutive`` regressed rows in a row (one noisy N_KV point alone never fails CI).
The geomean passes the same double gate: where every row has enough samples, a stratified U test over all rows
(``stats.stratified_u_test``) must also say different, so noise that happens to average out beyond the tolerance
does not fail; with low-n rows the geomean alone decides.

Exit codes: 0 no regression, 1 regression, 2 usage error, 3 not comparable (model, engine, system or PP/TG differ).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

from sweepbench.errors import SweepbenchError, UsageError
from sweepbench.results.runs import METRICS, Run, load_runs, merge_repeats
from sweepbench.stats import mann_whitney_u, stratified_u_test

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_NOT_COMPARABLE = 0, 1, 2, 3
FAIL_ON = ("any", "curve", "none")
MODEL_IDENTITY = ("header_sha256", "name", "arch", "ftype", "quant_mix", "n_params")
HOST_IDENTITY = ("cpu", "gpu")


@dataclass(frozen=True)
class GateOptions:
    tol_pp: float = 0.05
    tol_tg: float = 0.03
    alpha: float = 0.01
    min_samples: int = 6
    consecutive: int = 2
    fail_on: str = "curve"
    force: bool = False

    def tolerance(self, metric: str) -> float:
        return self.tol_pp if metric == "pp" else self.tol_tg


@dataclass(frozen=True)
class MetricResult:
    """One row, one metric."""

    metric: str
    n_kv: int
    base: tuple[float, ...]  # tokens/s samples
    cand: tuple[float, ...]
    ratio: float  # median(cand) / median(base)
    p_value: float | None  # None: too few samples for the test (low-n)
    verdict: str  # "regressed", "improved", "noise" (beyond tolerance, not significant) or "same"


@dataclass(frozen=True)
class CurveResult:
    metric: str
    geomean: float
    p_value: float | None  # stratified U test over the rows; None when a row has too few samples (low-n)
    longest_streak: int  # most consecutive regressed rows
    n_rows: int
    regressed: bool
    improved: bool


@dataclass(frozen=True)
class Comparison:
    baseline: Run
    candidate: Run
    options: GateOptions
    results: tuple[MetricResult, ...]
    curves: tuple[CurveResult, ...]
    mismatches: tuple[str, ...]  # why the runs are not comparable (ignored with --force)
    notes: tuple[str, ...]  # option differences and unmatched rows: reported, never fatal

    @property
    def comparable(self) -> bool:
        return bool(self.results) and (self.options.force or not self.mismatches)

    def regressed(self) -> bool:
        if self.options.fail_on == "none":
            return False
        curve = any(c.regressed for c in self.curves)
        rows = any(r.verdict == "regressed" for r in self.results)
        return curve or (self.options.fail_on == "any" and rows)


def parse_tolerance(text: str, flag: str) -> float:
    """'5%' or '0.05' -> 0.05."""
    try:
        value = float(text[:-1]) / 100 if text.strip().endswith("%") else float(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected a percentage like 5% or a fraction like 0.05") from None
    if not 0 <= value < 1:
        raise UsageError(f"{flag} {text!r}: must be between 0% and 100%")
    return value


def compare_files(baseline: Path, candidate: Path, options: GateOptions) -> list[Comparison]:
    """Compare every engine present in both files (one engine per file is the usual case)."""
    if options.fail_on not in FAIL_ON:
        raise UsageError(f"--fail-on {options.fail_on!r}: expected one of {', '.join(FAIL_ON)}")
    if options.consecutive < 1:
        raise UsageError("--consecutive must be at least 1")
    if not 0 < options.alpha < 1:
        raise UsageError(f"--alpha {options.alpha:g}: must be between 0 and 1, e.g. 0.01")
    base, cand = _side(baseline), _side(candidate)
    if len(base) == 1 and len(cand) == 1:
        return [compare_runs(next(iter(base.values())), next(iter(cand.values())), options)]
    common = [e for e in base if e in cand]
    if not common:
        raise SweepbenchError(f"no engine in both files (baseline: {list(base)}, candidate: {list(cand)})",
                              exit_code=EXIT_NOT_COMPARABLE)
    return [compare_runs(base[e], cand[e], options) for e in common]


def _side(path: Path) -> dict[str | None, Run]:
    """One file = one side, one run per engine. Runs sharing a label are repetitions and are pooled (as in plot);
    differently labelled runs (a discussion export's tables "file#1", "file#2", ...) are not guessed to be."""
    try:
        runs = load_runs([path])
    except UsageError:
        raise
    except SweepbenchError as e:  # unreadable input is a usage error for the gate, not a regression (exit 1)
        raise UsageError(str(e)) from None
    by_engine: dict[str | None, list[Run]] = {}
    for run in runs:
        by_engine.setdefault(run.engine, []).append(run)
    for engine, group in by_engine.items():
        labels = list(dict.fromkeys(r.label for r in group))
        if len(labels) > 1:
            shown = ", ".join(labels[:3]) + (", ..." if len(labels) > 3 else "")
            raise UsageError(f"{path}: holds {len(labels)} differently labelled runs"
                             f"{f' of engine {engine}' if engine else ''} ({shown}); "
                             f"compare needs one per side. If they are repetitions, give them one label: "
                             f"sweepbench convert {path} --label NAME -o runs.jsonl")
        label = path.name if engine is None else f"{path.name}:{engine}"
        by_engine[engine] = group = [replace(r, label=label) for r in group]
        for other in group[1:]:
            if problems := mismatches(group[0], other):
                raise UsageError(f"{path}: holds runs of different configurations ({problems[0]}); "
                                 f"compare needs one configuration per engine and file")
    return {engine: merge_repeats(group)[0] for engine, group in by_engine.items()}


def mismatches(base: Run, cand: Run) -> list[str]:
    """Reasons the two runs measure different things; a fact missing on either side is not held against them."""
    reasons = []
    same_file = "header_sha256" in base.model and "header_sha256" in cand.model
    for facet, a, b, keys in (("model", base.model, cand.model, ("header_sha256",) if same_file else MODEL_IDENTITY),
                              ("system", base.header.get("host") or {}, cand.header.get("host") or {}, HOST_IDENTITY)):
        reasons += [f"{facet} {k} differs: {a[k]!r} vs {b[k]!r}" for k in keys if k in a and k in b and a[k] != b[k]]
    if base.engine and cand.engine and base.engine != cand.engine:
        reasons.append(f"engine differs: {base.engine} vs {cand.engine}")
    if base.rows and cand.rows and base.sizes() != cand.sizes():
        reasons.append(f"PP/TG differ: {sorted(base.sizes(), key=str)} vs {sorted(cand.sizes(), key=str)}")
    return reasons


def compare_runs(base: Run, cand: Run, options: GateOptions) -> Comparison:
    problems = mismatches(base, cand)
    match_sizes = not (options.force and any(p.startswith("PP/TG") for p in problems))
    key = (lambda r: r.key) if match_sizes else (lambda r: r.n_kv)
    cand_rows = {key(r): r for r in cand.rows}
    results, unmatched = [], []
    for row in base.rows:
        other = cand_rows.pop(key(row), None)
        if other is None:
            unmatched.append(f"N_KV {row.n_kv} only in the baseline")
            continue
        for metric in METRICS:
            base_samples, cand_samples = row.samples(metric), other.samples(metric)
            if not base_samples or not cand_samples:
                continue
            if statistics.median(base_samples) <= 0 or statistics.median(cand_samples) <= 0:  # "0.00" in a table
                unmatched.append(f"N_KV {row.n_kv}: S_{metric.upper()} of 0 t/s, not compared")
                continue
            results.append(judge(metric, row.n_kv, base_samples, cand_samples, options))
    unmatched += [f"N_KV {r.n_kv} only in the candidate" for r in cand_rows.values()]
    curves = tuple(curve(metric, [r for r in results if r.metric == metric], options)
                   for metric in METRICS if any(r.metric == metric for r in results))
    return Comparison(base, cand, options, tuple(results), curves, tuple(problems),
                      tuple(_option_notes(base, cand) + unmatched))


def judge(metric: str, n_kv: int, base: tuple[float, ...], cand: tuple[float, ...],
          options: GateOptions) -> MetricResult:
    """asv's double gate on one row: beyond tolerance AND significantly different (or low-n: tolerance alone)."""
    ratio = statistics.median(cand) / statistics.median(base)
    p_value = None
    significant = True
    if min(len(base), len(cand)) >= options.min_samples:
        p_value = mann_whitney_u(base, cand).p_value
        significant = p_value < options.alpha
    tol = options.tolerance(metric)
    if ratio < 1 - tol:
        verdict = "regressed" if significant else "noise"
    elif ratio > 1 + tol:
        verdict = "improved" if significant else "noise"
    else:
        verdict = "same"
    return MetricResult(metric, n_kv, base, cand, ratio, p_value, verdict)


def curve(metric: str, results: list[MetricResult], options: GateOptions) -> CurveResult:
    """Geometric mean of the row ratios (ordered by N_KV), its significance, the longest streak of regressed rows."""
    results = sorted(results, key=lambda r: r.n_kv)
    geomean = math.exp(statistics.fmean(math.log(r.ratio) for r in results))
    longest = streak = 0
    for r in results:
        streak = streak + 1 if r.verdict == "regressed" else 0
        longest = max(longest, streak)
    p_value = None
    if all(r.p_value is not None for r in results):
        p_value = stratified_u_test([(r.base, r.cand) for r in results]).p_value
    significant = p_value is None or p_value < options.alpha
    tol = options.tolerance(metric)
    regressed = (geomean < 1 - tol and significant) or longest >= options.consecutive
    improved = not regressed and geomean > 1 + tol and significant
    return CurveResult(metric, geomean, p_value, longest, len(results), regressed, improved)


def _option_notes(base: Run, cand: Run) -> list[str]:
    a, b = base.header.get("options") or {}, cand.header.get("options") or {}
    return [f"option {k} differs: {a[k]!r} vs {b[k]!r}" for k in a if k in b and a[k] != b[k]]


def exit_code(comparisons: list[Comparison]) -> int:
    if not all(c.comparable for c in comparisons):
        return EXIT_NOT_COMPARABLE
    return EXIT_REGRESSION if any(c.regressed() for c in comparisons) else EXIT_OK
