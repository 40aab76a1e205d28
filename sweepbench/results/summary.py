"""``plot --table``: a markdown summary per run, S_PP and S_TG at the first, middle and last N_KV."""
from __future__ import annotations

from sweepbench.errors import UsageError
from sweepbench.results.runs import Run, merge_repeats


def summary_markdown(runs: list[Run], baseline: str | None = None) -> str:
    runs = merge_repeats(runs)
    base = None
    if baseline is not None:
        base = next((r for r in runs if r.label == baseline), None)
        if base is None:
            raise UsageError(f"--baseline {baseline!r}: no run has this label")
    head = "| run | N_KV | S_PP t/s | S_TG t/s |" + (" S_PP / base | S_TG / base |" if base else "")
    lines = [head, "|---|---:|---:|---:|" + ("---:|---:|" if base else "")]
    base_rows = {r.n_kv: r for r in base.rows} if base else {}
    for run in runs:
        for row in _first_middle_last(run):
            cells = [run.label, str(row.n_kv), _num(row.speed_pp), _num(row.speed_tg)]
            if base:
                ref = base_rows.get(row.n_kv)
                cells += [_ratio(row.speed_pp, ref and ref.speed_pp), _ratio(row.speed_tg, ref and ref.speed_tg)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _first_middle_last(run: Run) -> list:
    rows = run.rows
    picks = sorted({0, len(rows) // 2, len(rows) - 1}) if rows else []
    return [rows[i] for i in picks]


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _ratio(value: float | None, ref: float | None) -> str:
    return f"{value / ref:.3f}" if value and ref else ""
