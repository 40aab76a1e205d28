"""How ``compare`` shows its verdict: GitHub markdown (stdout or $GITHUB_STEP_SUMMARY) and a rich table (stderr).

Marks follow asv: a red/green dot for a significant regression/improvement, ``~`` for beyond tolerance but not
significant; each row shows the test's p-value, or ``low-n`` where too few samples made the tolerance decide alone.
"""
from __future__ import annotations

import statistics

from rich.table import Table

from sweepbench.compare import Comparison, MetricResult
from sweepbench.results.runs import METRICS

METRIC_TITLE = {"pp": "S_PP", "tg": "S_TG"}
MARK = {"regressed": "🔴", "improved": "🟢", "noise": "~", "same": ""}
RICH_STYLE = {"regressed": "bold red", "improved": "green", "noise": "yellow", "same": ""}


def headline(comparisons: list[Comparison]) -> str:
    if not all(c.comparable for c in comparisons):
        return "⚠️ not comparable"
    regressed = [c for c in comparisons if c.regressed()]
    return "❌ performance regression" if regressed else "✅ no regression"


def markdown(comparisons: list[Comparison]) -> str:
    parts = [f"### sweepbench compare: {headline(comparisons)}", ""]
    for c in comparisons:
        parts += _markdown_one(c)
    return "\n".join(parts) + "\n"


def _markdown_one(c: Comparison) -> list[str]:
    o = c.options
    lines = [f"**{c.baseline.label}** → **{c.candidate.label}** · tolerance S_PP {o.tol_pp:.0%}, "
             f"S_TG {o.tol_tg:.0%} · Mann-Whitney U p < {o.alpha:g} when both sides have ≥ {o.min_samples} samples"
             f" · fail on: {o.fail_on}", ""]
    if c.mismatches:
        state = "compared anyway (--force)" if o.force else "not compared"
        lines += [f"> **Not comparable, {state}:** " + "; ".join(c.mismatches), ""]
    if not c.results:
        lines += ["> **Not comparable:** no row has the same N_KV, PP and TG on both sides", ""]
    if not c.comparable:
        return lines
    metrics = [m for m in METRICS if any(r.metric == m for r in c.results)]
    head = "| N_KV |" + "".join(f" {METRIC_TITLE[m]} base | {METRIC_TITLE[m]} cand | ratio | verdict |"
                                for m in metrics)
    lines += [head, "|---:|" + "---:|---:|---:|:-:|" * len(metrics)]
    for n_kv, by_metric in _by_row(c).items():
        cells = "".join(_md_cells(by_metric.get(m)) for m in metrics)
        lines.append(f"| {n_kv} |{cells}")
    curve_cells = ""
    for m in metrics:
        cv = next(cv for cv in c.curves if cv.metric == m)
        mark = "🔴" if cv.regressed else ("🟢" if cv.improved else "")
        curve_cells += f" | | **{cv.geomean:.3f}** | {_with_p(mark, cv.p_value)} |"
    lines += [f"| **curve** (geomean) |{curve_cells}", ""]
    for cv in c.curves:
        test = "low-n: geomean alone decides" if cv.p_value is None else f"stratified U test p = {cv.p_value:.2g}"
        lines.append(f"- {METRIC_TITLE[cv.metric]} curve: geomean ratio {cv.geomean:.3f} over {cv.n_rows} rows "
                     f"({test}), longest streak of regressed rows {cv.longest_streak} (fails at {o.consecutive}) → "
                     + ("**regressed**" if cv.regressed else "improved" if cv.improved else "ok"))
    lines += ["", "Marks: 🔴 regressed · 🟢 improved · ~ beyond tolerance, not significant · "
              "low-n: fewer samples than the test needs, the tolerance alone decides", ""]
    lines += ["<details><summary>runs compared</summary>", ""]
    for role, run in (("baseline", c.baseline), ("candidate", c.candidate)):
        model = run.model.get("name") or run.model.get("path") or "?"
        lines.append(f"- {role}: `{run.label}` · engine {run.engine or '?'} · model {model} · "
                     f"{len(run.rows)} rows · source {run.source or '?'} · status {run.status}")
    lines += [f"- {note}" for note in c.notes]
    lines += ["", "</details>", ""]
    return lines


def _by_row(c: Comparison) -> dict[int, dict[str, MetricResult]]:
    rows: dict[int, dict[str, MetricResult]] = {}
    for r in c.results:
        rows.setdefault(r.n_kv, {})[r.metric] = r
    return dict(sorted(rows.items()))


def _md_cells(r: MetricResult | None) -> str:
    if r is None:
        return " | | | |"
    return f" {_median_sd(r.base)} | {_median_sd(r.cand)} | {r.ratio:.3f} | {_with_p(MARK[r.verdict], r.p_value)} |"


def _with_p(mark: str, p_value: float | None) -> str:
    return f"{mark} {'low-n' if p_value is None else f'p={p_value:.2g}'}".strip()


def _median_sd(samples: tuple[float, ...]) -> str:
    text = f"{statistics.median(samples):.2f}"
    return text + (f" ±{statistics.stdev(samples):.2f}" if len(samples) > 1 else "")


def rich_table(c: Comparison) -> Table:
    table = Table(title=f"{c.baseline.label} → {c.candidate.label}", title_justify="left")
    metrics = [m for m in METRICS if any(r.metric == m for r in c.results)]
    table.add_column("N_KV", justify="right", no_wrap=True)
    for m in metrics:
        for title in ("base", "cand", "ratio", "p"):
            table.add_column(f"{METRIC_TITLE[m]} {title}", justify="right", no_wrap=True)
    for n_kv, by_metric in _by_row(c).items():
        cells = [str(n_kv)]
        for m in metrics:
            r = by_metric.get(m)
            if r is None:
                cells += [""] * 4
                continue
            style = RICH_STYLE[r.verdict]
            ratio = f"[{style}]{r.ratio:.3f}[/]" if style else f"{r.ratio:.3f}"
            p_value = "low-n" if r.p_value is None else f"{r.p_value:.3g}"
            cells += [_median_sd(r.base), _median_sd(r.cand), ratio, p_value]
        table.add_row(*cells)
    for cv in c.curves:
        verdict = "[bold red]regressed[/]" if cv.regressed else "[green]improved[/]" if cv.improved else "ok"
        test = "low-n" if cv.p_value is None else f"p {cv.p_value:.2g}"
        table.caption = (table.caption + "\n" if table.caption else "") + (
            f"{METRIC_TITLE[cv.metric]} curve: geomean {cv.geomean:.3f} ({test}), longest regressed streak "
            f"{cv.longest_streak} → {verdict}")
    return table
