"""The regression gate (sweepbench.compare + the `compare` command) on synthetic sweepbench JSONL files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from sweepbench.commands import compare as compare_command
from sweepbench.commands import convert as convert_command
from sweepbench.compare import GateOptions, compare_files, exit_code, parse_tolerance
from sweepbench.compare_report import markdown
from sweepbench.errors import UsageError

N_KV = (0, 64, 128, 192)


def sweep_file(path: Path, *, seed: int, n_samples: int = 8, noise: float = 0.005, pp_scale=1.0, tg_scale=1.0,
               model: str = "builtin-tiny", pp: int = 64, engine: str = "numpy", cpu: str = "test-cpu") -> Path:
    """A sweepbench JSONL run: throughput falling with N_KV, multiplicative Gaussian noise per repetition."""
    rng = np.random.default_rng(seed)
    system = {"type": "system", "schema": 1, "tool": "sweepbench", "label": path.stem, "engine": engine,
              "host": {"cpu": cpu, "cores": 2}, "model": {"name": model, "arch": "qwen3moe"},
              "options": {"n_ctx": 256, "n_ubatch": pp, "repetitions": n_samples}}
    rows = []
    for i, n_kv in enumerate(N_KV):
        row = {"type": "row", "engine": engine, "pp": pp, "tg": 16, "n_kv": n_kv}
        for metric, true_speed, scale in (("pp", 1000.0 / (1 + n_kv / 512), pp_scale),
                                          ("tg", 100.0 / (1 + n_kv / 1024), tg_scale)):
            scale = scale[i] if isinstance(scale, tuple) else scale
            speeds = true_speed * scale * (1 + noise * rng.standard_normal(n_samples))  # [n_samples]
            t_median = float(np.median(row[metric] / speeds))  # speed = tokens / median time, as sweep-bench writes
            row.update({f"t_{metric}": t_median, f"speed_{metric}": row[metric] / t_median,
                        f"samples_speed_{metric}": speeds.tolist()})
        rows.append(row)
    lines = [system, *rows, {"type": "end", "status": "complete", "message": ""}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def gate(base: Path, cand: Path, **options) -> tuple[int, list]:
    comparisons = compare_files(base, cand, GateOptions(**options))
    return exit_code(comparisons), comparisons


def verdicts(comparisons, metric: str) -> list[str]:
    return [r.verdict for c in comparisons for r in c.results if r.metric == metric]


def test_identical_inputs_do_not_regress(tmp_path):
    base = sweep_file(tmp_path / "base.jsonl", seed=1)
    code, (c,) = gate(base, base)
    assert code == 0
    assert set(verdicts([c], "pp")) == {"same"} and set(verdicts([c], "tg")) == {"same"}
    assert all(cv.geomean == pytest.approx(1.0) and not cv.regressed for cv in c.curves)
    assert all(r.p_value == pytest.approx(1.0, abs=0.01) for r in c.results)


def test_ten_percent_drop_with_eight_samples_regresses(tmp_path):
    base = sweep_file(tmp_path / "base.jsonl", seed=1)
    cand = sweep_file(tmp_path / "cand.jsonl", seed=2, tg_scale=0.90)
    code, (c,) = gate(base, cand)
    assert code == 1
    tg = [r for r in c.results if r.metric == "tg"]
    assert all(r.verdict == "regressed" and r.p_value < 0.01 and r.ratio == pytest.approx(0.9, abs=0.01) for r in tg)
    assert set(verdicts([c], "pp")) == {"same"}
    (tg_curve,) = [cv for cv in c.curves if cv.metric == "tg"]
    assert tg_curve.regressed and tg_curve.longest_streak == len(N_KV) and tg_curve.p_value < 1e-6


def test_noise_within_tolerance_passes(tmp_path):
    base = sweep_file(tmp_path / "base.jsonl", seed=1, noise=0.01)
    cand = sweep_file(tmp_path / "cand.jsonl", seed=5, noise=0.01, pp_scale=0.98, tg_scale=0.99)
    code, (c,) = gate(base, cand, fail_on="any")
    assert code == 0
    assert "regressed" not in verdicts([c], "pp") + verdicts([c], "tg")


def test_beyond_tolerance_but_not_significant_is_noise(tmp_path):
    # asv's double gate: a 6% drop drowned in 20% noise is not a regression, row by row nor for the whole curve,
    # although these samples put the medians' geomean 10% down (the geomean alone would fail the job).
    base = sweep_file(tmp_path / "base.jsonl", seed=21, noise=0.20)
    cand = sweep_file(tmp_path / "cand.jsonl", seed=22, noise=0.20, pp_scale=0.94)
    code, (c,) = gate(base, cand, fail_on="any")
    noisy = [r for r in c.results if r.metric == "pp" and r.ratio < 0.95]
    assert noisy and all(r.verdict == "noise" and r.p_value >= 0.01 for r in noisy)
    (pp_curve,) = [cv for cv in c.curves if cv.metric == "pp"]
    assert pp_curve.geomean < 0.95 and pp_curve.p_value >= 0.01 and not pp_curve.regressed
    assert code == 0


def test_low_n_rows_use_the_tolerance_alone(tmp_path):
    base = sweep_file(tmp_path / "base.jsonl", seed=1, n_samples=3)
    cand = sweep_file(tmp_path / "cand.jsonl", seed=2, n_samples=3, pp_scale=0.9)
    code, (c,) = gate(base, cand)
    assert code == 1
    pp = [r for r in c.results if r.metric == "pp"]
    assert all(r.p_value is None and r.verdict == "regressed" for r in pp)


def test_one_bad_row_fails_only_with_fail_on_any(tmp_path):
    base = sweep_file(tmp_path / "base.jsonl", seed=1)
    cand = sweep_file(tmp_path / "cand.jsonl", seed=2, tg_scale=(1.0, 0.9, 1.0, 1.0))
    assert gate(base, cand)[0] == 0  # curve: one row is not a streak and the geomean stays within 3%
    assert gate(base, cand, fail_on="any")[0] == 1
    assert gate(base, cand, fail_on="curve", consecutive=1)[0] == 1
    two = sweep_file(tmp_path / "two.jsonl", seed=2, tg_scale=(1.0, 0.9, 0.9, 1.0))
    assert gate(base, two)[0] == 1  # two consecutive regressed rows
    assert gate(base, two, fail_on="none")[0] == 0


def test_not_comparable_unless_forced(tmp_path):
    base = sweep_file(tmp_path / "base.jsonl", seed=1)
    other_model = sweep_file(tmp_path / "other.jsonl", seed=2, model="another-model")
    code, (c,) = gate(base, other_model)
    assert code == 3 and any("model name" in m for m in c.mismatches)
    assert gate(base, other_model, force=True)[0] == 0
    other_pp = sweep_file(tmp_path / "pp.jsonl", seed=2, pp=128)
    assert gate(base, other_pp)[0] == 3
    for name, kwargs, why in (("engine", {"engine": "numba-cpu"}, "engine differs"),
                              ("cpu", {"cpu": "another-cpu"}, "system cpu differs")):
        other = sweep_file(tmp_path / f"{name}.jsonl", seed=2, **kwargs)
        code, (c,) = gate(base, other)
        assert code == 3 and any(why in m for m in c.mismatches), c.mismatches
        assert gate(base, other, force=True)[0] == 0
    code, (forced,) = gate(base, other_pp, force=True)  # --force matches rows on N_KV alone
    assert code == 0 and len(forced.results) == 2 * len(N_KV)


def test_parse_tolerance():
    assert parse_tolerance("5%", "--tol-pp") == pytest.approx(0.05)
    assert parse_tolerance("0.03", "--tol-tg") == pytest.approx(0.03)
    for bad in ("five", "abc", "150%", "-1%", "-5%", "5", ""):
        with pytest.raises(UsageError):
            parse_tolerance(bad, "--tol-pp")


@pytest.fixture
def cli():
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # keeps `compare` a subcommand in this one-command app
        pass

    compare_command.register(app)
    return lambda *args: CliRunner().invoke(app, ["compare", *map(str, args)])


def test_cli_exit_codes_and_markdown(tmp_path, cli):
    base = sweep_file(tmp_path / "base.jsonl", seed=1)
    slow = sweep_file(tmp_path / "slow.jsonl", seed=2, pp_scale=0.85)
    ok = cli(base, base)
    assert ok.exit_code == 0 and "no regression" in ok.stdout and "| N_KV |" in ok.stdout
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    bad = cli(base, slow, "--summary", summary)
    assert bad.exit_code == 1 and bad.stdout == ""
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "performance regression" in text and "🔴" in text
    assert "S_PP" in bad.stderr  # the rich table goes to stderr
    assert "p=" in text and "low-n" not in text.split("Marks:")[0]  # 8 samples a side: every row was tested
    other = sweep_file(tmp_path / "other.jsonl", seed=2, model="another-model")
    assert cli(base, other).exit_code == 3
    assert cli(base, other, "--force").exit_code == 0


@pytest.mark.parametrize("args", [("--tol-pp", "lots"), ("--tol-tg", "abc"), ("--tol-pp", "-5%"), ("--tol-tg=-5%",),
                                  ("--fail-on", "sometimes"), ("--consecutive", "0"), ("--alpha", "2"),
                                  ("--alpha", "0"), ("--summary", "/nonexistent-dir/summary.md")])
def test_cli_usage_errors_exit_2(tmp_path, cli, args):
    base = sweep_file(tmp_path / "base.jsonl", seed=1)
    result = cli(base, base, *args)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_cli_unreadable_input_exits_2(tmp_path, cli):
    base = sweep_file(tmp_path / "base.jsonl", seed=1)
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("nothing to see\n")
    assert cli(base, tmp_path / "missing.jsonl").exit_code == 2
    result = cli(base, garbage)
    assert result.exit_code == 2 and "garbage.txt" in result.stderr
    empty, binary = tmp_path / "empty.jsonl", tmp_path / "binary.bin"
    empty.write_bytes(b"")
    binary.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    for bad in (empty, binary, tmp_path):  # tmp_path: a directory
        result = cli(base, bad)
        assert result.exit_code == 2 and result.stderr.count("\n") == 1 and str(bad) in result.stderr


def md_tables(path: Path, scale: float, n_tables: int = 6) -> Path:
    """``cat run1.md ... run6.md``: llama-sweep-bench tables of one configuration, 2% noise between runs."""
    rng = np.random.default_rng(int(scale * 1000))
    lines = []
    for _ in range(n_tables):
        lines += ["|    PP |     TG |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |",
                  "|-------|--------|--------|----------|----------|----------|----------|"]
        for n_kv in (0, 512, 1024):
            s_pp, s_tg = scale * 1000 * (1 + 0.02 * rng.standard_normal(2)) / (1 + n_kv / 4096)
            lines.append(f"|   512 |    128 | {n_kv:6d} | {512 / s_pp:8.3f} | {s_pp:8.2f} | {128 / s_tg:8.3f} | "
                         f"{s_tg:8.2f} |")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_several_tables_are_one_side_only_when_labelled_as_repetitions(tmp_path, cli):
    base, cand = md_tables(tmp_path / "base.md", 1.0), md_tables(tmp_path / "cand.md", 0.9)
    refused = cli(base, cand)  # base#1 ... base#6: not guessed to be repetitions
    assert refused.exit_code == 2 and "6 differently labelled runs" in refused.stderr and "--label" in refused.stderr
    discussion = Path(__file__).parent / "data" / "sweep-logs" / "ik-discussion357-qwen3-30b-a3b-comparisons.md"
    assert cli(discussion, cand).exit_code == 2
    for source, label in ((base, "b"), (cand, "c")):  # one label per file: its tables are repetitions
        args = ["convert", str(source), "--label", label, "-o", str(tmp_path / f"{label}.jsonl")]
        assert CliRunner().invoke(convert_app(), args).exit_code == 0
    code, (c,) = gate(tmp_path / "b.jsonl", tmp_path / "c.jsonl")
    assert code == 1 and all(len(r.base) == 6 and r.p_value is not None for r in c.results)
    assert {r.verdict for r in c.results} == {"regressed"}


def convert_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # keeps `convert` a subcommand in this one-command app
        pass

    convert_command.register(app)
    return app


def test_published_tables_compare_low_n():
    logs = Path(__file__).parent / "data" / "sweep-logs"
    standard = logs / "ik-pr838-ling-mini-2.0-q4_k_m-standard-routing.md"
    grouped = logs / "ik-pr838-ling-mini-2.0-q4_k_m-grouped-routing.md"
    code, (c,) = gate(standard, grouped)
    # Grouped routing is 1-3% slower on PP (tolerance 5%) and 3-5% slower on TG (tolerance 3%).
    assert all(r.p_value is None for r in c.results) and all(cv.p_value is None for cv in c.curves)
    assert set(verdicts([c], "pp")) == {"same"}
    (tg,) = [cv for cv in c.curves if cv.metric == "tg"]
    assert tg.geomean == pytest.approx(0.965, abs=0.005) and tg.regressed and code == 1
    rows = [line for line in markdown([c]).splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 16 and all(line.count("low-n") == 2 for line in rows)  # S_PP and S_TG marked


def test_no_rows_in_common_is_not_comparable(tmp_path, cli):
    base = sweep_file(tmp_path / "base.jsonl", seed=1)
    crashed = Path(__file__).parent / "data" / "sweep-logs" / "ik-pr861-crash-after-header.log"  # 0 rows
    result = cli(base, crashed, "--force")
    assert result.exit_code == 3 and "no row has the same N_KV" in result.stdout
