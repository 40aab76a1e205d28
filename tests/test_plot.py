"""S_PP / S_TG figures (plots.sweep_plot) and the `plot` command, rendered headless."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from plots.sweep_plot import _row_major, series, sweep_figure, write_plots
from sweepbench.commands import plot as plot_command
from sweepbench.errors import UsageError
from sweepbench.results.runs import Row, Run, load_runs

LOGS = Path(__file__).parent / "data" / "sweep-logs"
STANDARD = LOGS / "ik-pr838-ling-mini-2.0-q4_k_m-standard-routing.md"
GROUPED = LOGS / "ik-pr838-ling-mini-2.0-q4_k_m-grouped-routing.md"


def two_runs() -> list[Run]:
    return load_runs([STANDARD, GROUPED], ["standard", "grouped"])


def test_figure_has_a_line_per_run_with_every_point():
    runs = two_runs()
    fig = sweep_figure(runs, "tg")
    (ax,) = fig.axes
    bars = ax.containers
    assert len(bars) == 2
    for container, run in zip(bars, runs):
        line = container.lines[0]
        np.testing.assert_array_equal(line.get_xdata(), [r.n_kv for r in run.rows])
        np.testing.assert_allclose(line.get_ydata(), [r.speed_tg for r in run.rows])
        assert line.get_marker() is not None and len(line.get_xdata()) == 16
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["standard", "grouped"]
    assert ax.get_ylabel() == "S_TG (tokens/s)" and "tokens of context" in ax.get_xlabel()
    assert "Token generation" in ax.get_title()
    assert len(ax.get_xticks()) <= 16


def test_baseline_adds_a_ratio_panel():
    runs = two_runs()
    fig = sweep_figure(runs, "pp", baseline="standard")
    top, ratio = fig.axes
    assert ratio.get_ylabel() == "ratio to baseline"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["standard (baseline)", "grouped"]
    (grouped_ratio,) = [ln for ln in ratio.get_lines() if len(ln.get_xdata()) > 2]  # the y=1 line has 2 points
    expected = [g.speed_pp / s.speed_pp for g, s in zip(runs[1].rows, runs[0].rows)]
    np.testing.assert_allclose(grouped_ratio.get_ydata(), expected)
    with pytest.raises(UsageError, match="--baseline 'nope'"):
        sweep_figure(runs, "pp", baseline="nope")


def test_repeated_runs_give_error_bars_and_title_from_model():
    header = {"model": {"name": "Tiny-MoE"}, "engine": "numpy"}
    runs = [Run("rep", (Row(n_kv=0, pp=64, tg=16, speed_pp=s, speed_tg=10.0),
                        Row(n_kv=64, pp=64, tg=16, speed_pp=s / 2, speed_tg=9.0)), header)
            for s in (90.0, 100.0, 110.0)]
    s = series(Run("rep", runs[0].rows), "pp")
    assert list(s.error) == [0.0, 0.0]  # one sample: no bar
    (single,) = sweep_figure([runs[0]], "pp").axes[0].containers
    assert not single.has_yerr
    fig = sweep_figure(runs, "pp", log_y=True)
    (ax,) = fig.axes
    (container,) = ax.containers
    np.testing.assert_allclose(container.lines[0].get_ydata(), [100.0, 50.0])  # medians of the 3 repeats
    bar_segments = container.lines[2][0].get_segments()  # one vertical segment per point: value -/+ std
    np.testing.assert_allclose([seg[1][1] - seg[0][1] for seg in bar_segments], [20.0, 10.0])
    assert ax.get_yscale() == "log" and "Tiny-MoE" in ax.get_title() and "numpy" in ax.get_title()


def test_six_runs_keep_a_readable_legend():
    runs = load_runs([LOGS / "ik-discussion357-qwen3-30b-a3b-comparisons.md"])[:6]
    fig = sweep_figure(runs, "pp", baseline=runs[0].label)
    legend = fig.legends[0]
    # one file's tables share a long label prefix: shown once as the legend title; entries keep the table index and
    # the <summary> caption the export gives the table
    assert legend.get_title().get_text() == "ik-discussion357-qwen3-30b-a3b-comparisons"
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[0] == "#1 · llama.cpp CPU-only performance data without FA (baseline)"
    assert texts[4] == "#5 · ik_llama.cpp hybrid GPU+CPU performance data" and texts[5] == "#6"
    colors = {tuple(c.lines[0].get_color()) for c in fig.axes[0].containers}
    markers = {c.lines[0].get_marker() for c in fig.axes[0].containers}
    assert len(colors) == 6 and len(markers) == 6
    fig.savefig(io.BytesIO(), format="png")  # lay out: the legend sits inside the figure, below the axes
    box, figure_box = legend.get_window_extent(), fig.bbox
    assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1 and figure_box.y0 <= box.y0
    assert all(box.y1 <= ax.get_window_extent().y0 for ax in fig.axes)
    ratio = fig.axes[1]
    assert ratio.get_yscale() == "log"  # ratios from 0.3x to 30x: a linear axis would flatten the ones near 1


def test_legend_reads_left_to_right():
    assert _row_major(6, 3) == [0, 3, 1, 4, 2, 5] and _row_major(5, 3) == [0, 3, 1, 4, 2]
    runs = [Run(f"r{i}", (Row(n_kv=0, speed_tg=1.0 + i), Row(n_kv=64, speed_tg=1.0))) for i in range(6)]
    fig = sweep_figure(runs, "tg")
    fig.savefig(io.BytesIO(), format="png")
    where = {t.get_text(): t.get_window_extent() for t in fig.legends[0].get_texts()}
    first_row, second_row = [where[f"r{i}"] for i in (0, 1, 2)], [where[f"r{i}"] for i in (3, 4, 5)]
    assert len({round(b.y0) for b in first_row}) == 1 and first_row[0].y0 > second_row[0].y0  # r0 r1 r2 on top
    assert first_row[0].x0 < first_row[1].x0 < first_row[2].x0


@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG"), ("svg", b"<?xml")])
def test_write_plots_files(tmp_path, fmt, magic):
    paths = write_plots(two_runs(), tmp_path, fmt, baseline="grouped")
    assert [p.name for p in paths] == [f"performance_comparison_pp.{fmt}", f"performance_comparison_tg.{fmt}"]
    for path in paths:
        assert path.read_bytes().startswith(magic) and path.stat().st_size > 10_000


@pytest.fixture
def cli():
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # keeps `plot` a subcommand in this one-command app
        pass

    plot_command.register(app)
    return lambda *args: CliRunner().invoke(app, ["plot", *map(str, args)])


def test_cli_plot_with_table(tmp_path, cli):
    result = cli(STANDARD, GROUPED, "-l", "standard", "-l", "grouped", "--baseline", "standard", "-o", tmp_path,
                 "--table")
    assert result.exit_code == 0
    assert (tmp_path / "performance_comparison_tg.png").exists()
    table = [line for line in result.stdout.splitlines() if line.startswith("| grouped")]
    assert len(table) == 3  # first, middle and last N_KV
    assert table[0].split("|")[2].strip() == "0" and table[-1].split("|")[2].strip() == "30720"
    ratio_tg = float(table[0].split("|")[6])
    assert ratio_tg == pytest.approx(376.95 / 396.98, abs=1e-3)


@pytest.mark.parametrize("args, exit_code", [(("--format", "jpg"), 2), (("--baseline", "nope"), 2),
                                             (("-l", "a", "-l", "b", "-l", "c"), 2)])
def test_cli_plot_usage_errors(tmp_path, cli, args, exit_code):
    result = cli(STANDARD, GROUPED, "-o", tmp_path, *args)
    assert result.exit_code == exit_code and result.stderr.startswith("sweepbench: error:")
    assert result.stderr.count("\n") == 1


def test_cli_plot_bad_inputs_one_line(tmp_path, cli):
    empty, binary, not_a_dir = tmp_path / "empty.md", tmp_path / "noise.bin", tmp_path / "file.txt"
    empty.write_bytes(b"")
    binary.write_bytes(bytes(range(256)) * 16)
    not_a_dir.write_text("x")
    for args in ([tmp_path / "missing.md"], [empty], [binary], [tmp_path], [STANDARD, "-o", not_a_dir]):
        result = cli(*args, *([] if "-o" in args else ["-o", tmp_path / "out"]))
        assert result.exit_code != 0 and result.stderr.startswith("sweepbench: error:"), args
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_cli_plot_refuses_a_figure_name_for_its_output_directory(tmp_path, cli):
    result = cli(STANDARD, "-o", tmp_path / "speed.png")
    assert result.exit_code == 2 and "names the directory for performance_comparison_pp.png" in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "speed.png").exists()
    (tmp_path / "figs.png").mkdir()  # an existing directory of that name is still a directory
    assert cli(STANDARD, "-o", tmp_path / "figs.png").exit_code == 0
    assert (tmp_path / "figs.png" / "performance_comparison_tg.png").exists()


def test_error_bars_from_repetitions_inside_a_row():
    rows = (Row(n_kv=0, speed_tg=100.0, samples_speed_tg=(90.0, 100.0, 110.0)),
            Row(n_kv=64, speed_tg=80.0, samples_speed_tg=(78.0, 80.0, 82.0)))
    (container,) = sweep_figure([Run("reps", rows)], "tg").axes[0].containers
    segments = container.lines[2][0].get_segments()
    np.testing.assert_allclose([seg[1][1] - seg[0][1] for seg in segments], [20.0, 4.0])  # +/- one sample stdev
