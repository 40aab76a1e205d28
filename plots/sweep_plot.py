"""S_PP and S_TG versus N_KV, one line per run, the figures ik_llama.cpp's sweep-bench-plot.py draws, from Runs.

Differences from ik's script, on purpose: runs are labelled (not file names), points are medians of repetitions with
sample-standard-deviation error bars (repetitions inside a row or runs sharing a label), each run also gets its own
marker (readable in grey print and for colour-blind readers), an optional panel shows each run's ratio to a baseline
run, and the title names the model/engine when all runs share them.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, no GUI backend): headless by construction.
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter

from sweepbench.errors import UsageError
from sweepbench.results.runs import Run, merge_repeats

METRIC_TEXT = {  # metric -> (title, y label, file name as ik's script writes it)
    "pp": ("Prompt processing", "S_PP (tokens/s)", "performance_comparison_pp"),
    "tg": ("Token generation", "S_TG (tokens/s)", "performance_comparison_tg"),
}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
MAX_TICKS = 16
LEGEND_CHARS = 110  # characters a legend row may hold across the 10-inch figure at small font
MIN_SHARED_PREFIX = 12  # ik's script halves the N_KV ticks until at most 16 remain
FORMATS = ("png", "svg")
RATIO_LOG_ABOVE = 4  # a ratio panel spanning more than this factor gets a log axis


@dataclass(frozen=True)
class Series:
    """One run's curve for one metric; N = number of N_KV points."""

    label: str
    n_kv: np.ndarray  # [N] tokens of context before the window
    value: np.ndarray  # [N] tokens/s (median over repetitions)
    error: np.ndarray  # [N] sample standard deviation over repetitions (0 when a single sample)
    note: str = ""  # what the source says the run is (a <summary> caption in a GitHub export)


def series(run: Run, metric: str) -> Series:
    points = [(r.n_kv, r.speed(metric), r.samples(metric)) for r in run.rows if r.speed(metric) is not None]
    n_kv = np.array([p[0] for p in points], dtype=np.int64)
    value = np.array([p[1] for p in points], dtype=np.float64)
    error = np.array([statistics.stdev(p[2]) if len(p[2]) > 1 else 0.0 for p in points], dtype=np.float64)
    return Series(run.label, n_kv, value, error, str(run.header.get("description") or ""))


def sweep_figure(runs: list[Run], metric: str, baseline: str | None = None, log_y: bool = False) -> Figure:
    """The S_PP (metric "pp") or S_TG ("tg") figure; with ``baseline`` a ratio panel below the curves."""
    runs = merge_repeats(runs)
    curves = [s for s in (series(r, metric) for r in runs) if len(s.n_kv)]
    if not curves:
        raise UsageError(f"no run has {METRIC_TEXT[metric][1].split()[0]} values to plot")
    base = _baseline_series(curves, baseline)
    fig = Figure(figsize=(10, 6.5 if base is None else 8), layout="constrained")
    if base is None:
        axes = [fig.add_subplot()]
    else:
        axes = list(fig.subplots(2, 1, sharex=True, height_ratios=(3, 1)))
    ax = axes[0]
    colors = _colors(len(curves))
    legend_title, names = _legend_names([s.label for s in curves])
    for i, s in enumerate(curves):
        name = names[i] + (f" · {s.note}" if s.note else "") + (" (baseline)" if s is base else "")
        names[i] = name
        yerr = s.error if s.error.any() else None  # no bars (and no bar glyph in the legend) without repetitions
        ax.errorbar(s.n_kv, s.value, yerr=yerr, label=name, color=colors[i], marker=MARKERS[i % len(MARKERS)],
                    markersize=5, linewidth=1.5, capsize=3)
    title, y_label, _ = METRIC_TEXT[metric]
    ax.set_ylabel(y_label)
    if log_y:
        ax.set_yscale("log")
        for axis_ticks in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis_ticks(FuncFormatter(_plain))  # "20", not "2 x 10^1"
    else:
        ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.4)
    ax.set_title(" · ".join([f"{title} speed vs. context depth", *_shared_facts(runs)]))
    if base is not None:
        _ratio_panel(axes[1], curves, base, colors)
    _n_kv_axis(axes[-1], np.unique(np.concatenate([s.n_kv for s in curves])))
    ncol = max(1, min(3, len(curves), LEGEND_CHARS // max(len(n) for n in names)))
    handles, texts = ax.get_legend_handles_labels()
    order = _row_major(len(handles), ncol)
    fig.legend([handles[i] for i in order], [texts[i] for i in order], loc="outside lower center", ncol=ncol,
               fontsize="small", frameon=False, title=legend_title, title_fontsize="small")
    return fig


def _row_major(n: int, ncol: int) -> list[int]:
    """Matplotlib fills legend columns top to bottom; this order makes the entries read left to right, run 1 first."""
    return [i for column in range(ncol) for i in range(column, n, ncol)]


def _legend_names(labels: list[str]) -> tuple[str | None, list[str]]:
    """Labels sharing a long prefix (e.g. one file's tables "log#1", "log#2") show it once, as the legend title."""
    prefix = os.path.commonprefix(labels) if len(labels) > 1 else ""
    cut = max(prefix.rfind(c) for c in "#-_ /:(") if prefix else -1
    if cut < MIN_SHARED_PREFIX:
        return None, labels
    return prefix[:cut].rstrip(" -_/:("), [label[cut:].lstrip(" -_/:") for label in labels]


def _baseline_series(curves: list[Series], baseline: str | None) -> Series | None:
    if baseline is None:
        return None
    for s in curves:
        if s.label == baseline:
            return s
    raise UsageError(f"--baseline {baseline!r}: no run has this label (labels: {', '.join(s.label for s in curves)})")


def _ratio_panel(ax, curves: list[Series], base: Series, colors) -> None:
    ax.axhline(1.0, color="black", linewidth=1)
    ratios = []
    for i, s in enumerate(curves):
        if s is base:
            continue
        shared, in_s, in_base = np.intersect1d(s.n_kv, base.n_kv, return_indices=True)
        ratio = s.value[in_s] / base.value[in_base]  # [shared N_KV]
        ratios.append(ratio)
        ax.plot(shared, ratio, color=colors[i], marker=MARKERS[i % len(MARKERS)], markersize=4, linewidth=1.2)
    ax.set_ylabel("ratio to baseline")
    ax.grid(True, alpha=0.4)
    spread = np.concatenate([*ratios, [1.0]])
    if spread.min() > 0 and spread.max() / spread.min() > RATIO_LOG_ABOVE:  # 0.9x and 30x on one readable axis
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}×"))


def _n_kv_axis(ax, n_kv: np.ndarray) -> None:
    ticks = n_kv
    while len(ticks) > MAX_TICKS:
        ticks = ticks[::2]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(_tokens))
    ax.set_xlabel("N_KV (tokens of context before the window; 1k = 1024)")


def _plain(value: float, _pos=None) -> str:
    return f"{value:g}"


def _tokens(value: float, _pos=None) -> str:
    return f"{value / 1024:g}k" if value >= 1024 else f"{value:g}"


def _colors(n: int) -> list:
    """Qualitative colours (tab10) while they last; evenly spaced viridis beyond."""
    import matplotlib

    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    return [matplotlib.colormaps["viridis"](x) for x in np.linspace(0, 0.9, n)]


def _shared_facts(runs: list[Run]) -> list[str]:
    """Model and engine for the title, when every run agrees on them."""
    facts = []
    models = {r.model.get("name") or Path(r.model.get("path", "")).name or None for r in runs}
    engines = {r.engine for r in runs}
    if len(models) == 1 and None not in models:
        facts.append(models.pop())
    if len(engines) == 1 and None not in engines:
        facts.append(engines.pop())
    return facts


def write_plots(runs: list[Run], out_dir: Path, fmt: str = "png", baseline: str | None = None,
                log_y: bool = False) -> list[Path]:
    """Both figures into ``out_dir`` under ik's file names; returns the paths written."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    written = []
    for metric, (_, _, name) in METRIC_TEXT.items():
        if not any(r.speed(metric) is not None for run in runs for r in run.rows):
            continue  # e.g. llama-bench input with pp tests only
        figure = sweep_figure(runs, metric, baseline, log_y)
        path = out_dir / f"{name}.{fmt}"
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            figure.savefig(path, dpi=120)
        except OSError as e:
            raise UsageError(f"-o {out_dir}: cannot write {path.name} ({e.strerror or e})") from None
        written.append(path)
    if not written:
        raise UsageError("no run has S_PP or S_TG values to plot")
    return written
